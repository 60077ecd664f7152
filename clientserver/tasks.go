package clientserver

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"strconv"

	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/internal/pickle"
	pb "github.com/gray-cluster/gray/proto/rayclientpb"
	"github.com/gray-cluster/gray/rayerr"
	"github.com/gray-cluster/gray/taskhistory"
	"github.com/gray-cluster/gray/taskspec"
)

// Ray's defaults for normal tasks.
const (
	defaultTaskCPUs    = 1.0
	defaultTaskRetries = 3
)

func (s *Server) collectTask(ss *session, reqID int32, t *pb.ClientTask) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	buf := ss.taskChunks[reqID]
	if buf == nil || t.ChunkId == 0 {
		buf = &taskChunkBuf{first: t, total: t.TotalChunks}
		ss.taskChunks[reqID] = buf
	}
	if int(t.ChunkId) != len(buf.chunks) {
		return
	}
	buf.chunks = append(buf.chunks, t.Data)
}

func (s *Server) invalidTicket(e rayerr.Exception) *pb.ClientTaskTicket {
	return &pb.ClientTaskTicket{Valid: false, Error: s.errorPickle(e)}
}

// schedule turns a ClientTask into work and answers with its return ids.
// Calls to an actor whose method table is not known yet are deferred: their
// ticket is sent when the actor is ready (deferred reports true).
func (s *Server) schedule(ss *session, reqID int32, t *pb.ClientTask) (*pb.ClientTaskTicket, bool) {
	data := [][]byte{t.Data}
	if t.TotalChunks > 1 {
		ss.mu.Lock()
		buf := ss.taskChunks[reqID]
		delete(ss.taskChunks, reqID)
		ss.mu.Unlock()
		if buf == nil || len(buf.chunks) != int(t.TotalChunks)-1 {
			return s.invalidTicket(rayerr.ValueError(fmt.Sprintf("task request %d is missing chunks", reqID))), false
		}
		data = append(buf.chunks, t.Data)
	}
	opts, err := taskOptions(t)
	if err != nil {
		return s.invalidTicket(rayerr.ValueError("could not read task options: " + err.Error())), false
	}
	if s.cfg.Billing != nil {
		if err := s.cfg.Billing.Admit(s.jobOf(ss).Hex()); err != nil {
			return s.invalidTicket(rayerr.RuntimeError(err.Error())), false
		}
	}
	switch t.Type {
	case pb.ClientTask_FUNCTION:
		return s.scheduleFunction(ss, t, data, opts), false
	case pb.ClientTask_METHOD:
		return s.callActor(ss, reqID, t, data, opts)
	default:
		return s.scheduleActorTask(ss, t, data, opts), false
	}
}

func (s *Server) scheduleFunction(ss *session, t *pb.ClientTask, data [][]byte, opts options) *pb.ClientTaskTicket {
	fid, err := ids.ObjectFromBytes(t.PayloadId)
	if err != nil {
		return s.invalidTicket(rayerr.ValueError("bad function id: " + err.Error()))
	}
	if !s.store.Contains(fid) {
		return s.invalidTicket(rayerr.ValueError(fmt.Sprintf("function %s (object %s) is not known to the server", t.Name, fid.Hex())))
	}
	deps, pins, actors, env, err := s.prepare(ss, data, opts)
	if err != nil {
		return s.invalidTicket(rayerr.Of(err, rayerr.ValueError))
	}
	pins = append(pins, fid)
	numReturns := opts.numReturns()
	job := s.jobOf(ss)
	resources := opts.resources(defaultTaskCPUs)
	env = withOMPThreads(env, resources)
	s.log.Debug("task", "name", t.Name, "options", opts, "env", env.Key(), "deps", len(deps))
	spec := &taskspec.TaskSpec{
		TaskID:          ids.NewTaskID(ids.NilActorFor(job)),
		JobID:           job,
		Name:            opts.str("name", t.Name),
		FunctionID:      fid,
		Args:            data,
		Deps:            deps,
		Pins:            pins,
		SelfRefs:        s.selfRefs(fid),
		NumReturns:      numReturns,
		Resources:       resources,
		MaxRetries:      opts.int("max_retries", defaultTaskRetries),
		RetryExceptions: opts.truthy("retry_exceptions"),
		Env:             env,
	}
	spec.PlacementGroup, spec.BundleIndex = opts.placement()
	spec.Scheduling = opts.scheduling()
	if t.BaselineOptions != nil {
		spec.Baseline = t.BaselineOptions.PickledOptions
	}
	returns := spec.ReturnIDs()
	for _, id := range returns {
		s.store.Create(id, ss.holder())
		ss.track(id)
	}
	// The arguments, and the actors of handles passed in, are kept from
	// submission until the task is done.
	unpin, dropActors := s.pinArgs(pins), s.holdActors(actors, "task")
	done := func() { unpin(); dropActors() }
	if err := s.cfg.Node.Submit(spec); err != nil {
		for _, id := range returns {
			s.store.Release(id, ss.holder())
			ss.untrack(id)
		}
		done()
		return s.invalidTicket(rayerr.SystemError("could not submit task: " + err.Error()))
	}
	s.cfg.Tasks.Submitted(taskhistory.Record{
		TaskID: spec.TaskID, JobID: job, Type: taskhistory.NormalTask, Name: spec.Name, FuncName: t.Name,
		Resources: resources, PlacementGroup: spec.PlacementGroup,
	})
	s.whenDone(returns, func() { done(); s.recordEnd(spec.TaskID, returns) })
	ticket := &pb.ClientTaskTicket{Valid: true}
	for _, id := range returns {
		ticket.ReturnIds = append(ticket.ReturnIds, append([]byte(nil), id[:]...))
	}
	return ticket
}

// prepare reads what a task or actor creation needs from its arguments and
// options: the refs to resolve first, the objects to keep alive, and its
// runtime env.
func (s *Server) prepare(ss *session, data [][]byte, opts options) (deps, pins []ids.ObjectID, actors []ids.ActorID, env taskspec.RuntimeEnv, err error) {
	if deps, pins, actors, err = s.refsOf(ss, data); err != nil {
		return nil, nil, nil, env, err
	}
	env, err = s.taskEnv(ss, opts)
	return deps, pins, actors, env, err
}

// refsOf scans argument data for the refs to resolve and to keep alive, and
// the actors whose handles it carries.
func (s *Server) refsOf(ss *session, data [][]byte) (deps, pins []ids.ObjectID, actors []ids.ActorID, err error) {
	args, err := scanArgs(data)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("could not read the arguments: %w", err)
	}
	deps, pins, err = s.argRefs(ss, args)
	return deps, pins, actorStubs(args.All), err
}

func scanArgs(data [][]byte) (pickle.TaskArgs, error) {
	if !hasStubMarker(data) {
		return pickle.TaskArgs{}, nil // no references: nothing to resolve or pin
	}
	if len(data) == 1 {
		return pickle.ScanTaskArgsBytes(data[0])
	}
	readers := make([]io.Reader, len(data))
	for i, c := range data {
		readers[i] = bytes.NewReader(c)
	}
	return pickle.ScanTaskArgs(io.MultiReader(readers...))
}

// argRefs returns the top-level object refs (resolved before the task runs)
// and every object the task's arguments refer to.
func (s *Server) argRefs(ss *session, args pickle.TaskArgs) (deps, pins []ids.ObjectID, err error) {
	seen := map[ids.ObjectID]bool{}
	for _, tl := range args.TopLevel {
		if tl.Stub.Type != "Object" {
			continue
		}
		oid, err := ids.ObjectFromBytes(tl.Stub.RefID)
		if err != nil {
			return nil, nil, err
		}
		if !s.store.Contains(oid) || !s.mayUse(ss, oid) {
			return nil, nil, fmt.Errorf("ObjectRef %s passed as an argument is not known to the server (was it released?)", oid.Hex())
		}
		if !seen[oid] {
			seen[oid] = true
			deps = append(deps, oid)
		}
	}
	pinned := map[ids.ObjectID]bool{}
	for _, st := range args.All {
		switch st.Type {
		case "Object", "RemoteFunc", "RemoteActor":
			oid, err := ids.ObjectFromBytes(st.RefID)
			if err != nil {
				return nil, nil, err
			}
			if st.Type == "Object" && !s.mayUse(ss, oid) {
				return nil, nil, fmt.Errorf("ObjectRef %s passed inside an argument is not known to the server (was it released?)", oid.Hex())
			}
			if !pinned[oid] {
				pinned[oid] = true
				pins = append(pins, oid)
			}
		}
	}
	return deps, pins, nil
}

// ompThreads is the variable Ray sets from a task's CPUs in its worker.
const ompThreads = "OMP_NUM_THREADS"

// withOMPThreads sets OMP_NUM_THREADS to the whole CPUs a task or actor
// holds, as Ray's workers do unless the variable is set already. The worker
// runtime defaults it to 1 (Ray's value for fewer than two CPUs), so only
// larger counts change the worker's environment (and so its pool key).
func withOMPThreads(env taskspec.RuntimeEnv, resources map[string]float64) taskspec.RuntimeEnv {
	n := int(math.Floor(resources["CPU"]))
	if _, set := env.EnvVars[ompThreads]; set || n < 2 {
		return env
	}
	if env.EnvVars == nil {
		env.EnvVars = map[string]string{}
	}
	env.EnvVars[ompThreads] = strconv.Itoa(n)
	return env
}

// selfRefs resolves the client-side ids a function pickle refers to itself by.
func (s *Server) selfRefs(fid ids.ObjectID) map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	meta := s.objMeta[fid]
	if meta == nil {
		return nil
	}
	out := map[string]string{}
	for _, cr := range meta.selfRefs {
		if oid, ok := s.clientRefs[cr]; ok {
			out[cr] = oid.Hex()
		}
	}
	return out
}

// taskEnv merges the job's runtime_env with the task's.
func (s *Server) taskEnv(ss *session, opts options) (taskspec.RuntimeEnv, error) {
	ss.mu.Lock()
	base, baseErr := ss.env, ss.envErr
	ss.mu.Unlock()
	if ss.workerID != "" {
		if job, ok := s.cfg.Node.WorkerJob(ss.workerID); ok {
			if owner := s.sessionOfJob(job); owner != nil {
				owner.mu.Lock()
				base, baseErr = owner.env, owner.envErr
				owner.mu.Unlock()
			}
		}
	}
	if baseErr != nil {
		return base, fmt.Errorf("the job's runtime_env: %w", baseErr)
	}
	env := base
	env.EnvVars = map[string]string{}
	for k, v := range base.EnvVars {
		env.EnvVars[k] = v
	}
	re := opts.dict("runtime_env")
	if re == nil {
		return env, nil
	}
	task, err := s.resolveRuntimeEnv(s.kvAccountOf(ss), re)
	if err != nil {
		return env, err
	}
	return mergeEnv(env, task), nil
}

func (s *Server) sessionOfJob(job ids.JobID) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ss := range s.sessions {
		if ss.workerID == "" && ss.job == job && ss.initialized {
			return ss
		}
	}
	return nil
}

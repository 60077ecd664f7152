package clientserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/gray-cluster/gray/gcs"
	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/internal/pickle"
	pb "github.com/gray-cluster/gray/proto/rayclientpb"
	"github.com/gray-cluster/gray/rayerr"
	"github.com/gray-cluster/gray/taskhistory"
	"github.com/gray-cluster/gray/taskspec"
)

// Ray's actor defaults: no CPU held while alive, no restarts.
const defaultActorCPUs = 0.0

// scheduleActorTask handles ACTOR, METHOD and NAMED_ACTOR requests.
func (s *Server) scheduleActorTask(ss *session, t *pb.ClientTask, data [][]byte, opts options) *pb.ClientTaskTicket {
	switch t.Type {
	case pb.ClientTask_ACTOR:
		return s.createActor(ss, t, data, opts)
	case pb.ClientTask_NAMED_ACTOR:
		ns := t.Namespace
		if ns == "" {
			ns = s.namespaceOf(ss)
		}
		info, ok := s.cfg.Actors.Lookup(s.accountOf(ss), ns, t.Name)
		if !ok {
			return s.invalidTicket(rayerr.ValueError(fmt.Sprintf(
				"Failed to look up actor with name '%s'. This could because 1. You are trying to look up a named actor you didn't create. 2. The named actor died. 3. You did not use a namespace matching the namespace of the actor.", t.Name)))
		}
		s.holdActor(info.ID, ss.holder()) // get_actor gives the session a handle
		return &pb.ClientTaskTicket{Valid: true, ReturnIds: [][]byte{append([]byte(nil), info.ID[:]...)}}
	}
	return s.invalidTicket(rayerr.NotImplemented(fmt.Sprintf("task type %v is not supported", t.Type)))
}

// namespaceOf is the namespace a session's requests act in.
func (s *Server) namespaceOf(ss *session) string {
	owner := ss
	if ss.workerID != "" {
		if o := s.sessionOfJob(s.jobOf(ss)); o != nil {
			owner = o
		}
	}
	owner.mu.Lock()
	defer owner.mu.Unlock()
	return owner.namespace
}

func (s *Server) createActor(ss *session, t *pb.ClientTask, data [][]byte, opts options) *pb.ClientTaskTicket {
	cid, err := ids.ObjectFromBytes(t.PayloadId)
	if err != nil || !s.store.Contains(cid) {
		return s.invalidTicket(rayerr.ValueError(fmt.Sprintf("actor class %s is not known to the server", t.Name)))
	}
	deps, pins, actors, env, err := s.prepare(ss, data, opts)
	if err != nil {
		return s.invalidTicket(rayerr.Of(err, rayerr.ValueError))
	}
	pins = append(pins, cid)
	job := s.jobOf(ss)
	ns := opts.str("namespace", s.namespaceOf(ss))
	owner := ss.clientID
	if ss.workerID != "" {
		if o := s.sessionOfJob(job); o != nil {
			owner = o.clientID
		}
	}
	info := gcs.ActorInfo{
		ID: ids.NewActorID(job), JobID: job, ClassName: t.Name, Name: opts.str("name", ""),
		Namespace: ns, Detached: opts.str("lifetime", "") == "detached", Owner: owner, Account: s.accountOf(ss),
	}
	if existing, err := s.cfg.Actors.Register(s.ctx, info); err != nil {
		if errors.Is(err, gcs.ErrNameTaken) && opts.truthy("get_if_exists") {
			s.holdActor(existing.ID, ss.holder())
			return &pb.ClientTaskTicket{Valid: true, ReturnIds: [][]byte{append([]byte(nil), existing.ID[:]...)}}
		}
		if !errors.Is(err, gcs.ErrNameTaken) {
			return s.invalidTicket(rayerr.SystemError("could not record actor: " + err.Error()))
		}
		return s.invalidTicket(rayerr.ValueError(fmt.Sprintf(
			"The name %s (namespace=%s) is already taken. Please use a different name or get the existing actor using ray.get_actor('%s', namespace='%s')", info.Name, ns, info.Name, ns)))
	}
	resources := opts.resources(defaultActorCPUs)
	env = withOMPThreads(env, resources)
	spec := &taskspec.ActorSpec{
		ActorID: info.ID, JobID: job, Name: t.Name, ClassID: cid, Args: data, Deps: deps, Pins: pins,
		SelfRefs: s.selfRefs(cid), Resources: resources,
		MaxConcurrency: opts.int("max_concurrency", 0), MaxRestarts: opts.int("max_restarts", 0),
		MaxTaskRetries: opts.int("max_task_retries", 0), Env: env,
	}
	spec.PlacementGroup, spec.BundleIndex = opts.placement()
	spec.Scheduling = opts.scheduling()
	if groups := opts.dict("concurrency_groups"); len(groups) > 0 {
		spec.ConcurrencyGroups = map[string]int{}
		for g, n := range groups {
			if f, ok := toFloat(n); ok && f >= 1 {
				spec.ConcurrencyGroups[g] = int(f)
			}
		}
	}
	if t.BaselineOptions != nil {
		spec.Baseline = t.BaselineOptions.PickledOptions
	}
	s.holdActor(info.ID, ss.holder())
	unpin := s.pinArgs(pins)
	// Handles passed to the constructor keep their actors alive until it ran.
	dropArgs := s.holdActors(actors, "create")
	s.mu.Lock()
	s.actorMeta[info.ID] = &actorMeta{unpinArgs: func() { unpin(); dropArgs() }}
	s.mu.Unlock()
	if err := s.cfg.Node.CreateActor(spec); err != nil {
		s.creationDone(info.ID)
		s.markDead(info.ID)
		return s.invalidTicket(rayerr.SystemError("could not create actor: " + err.Error()))
	}
	return &pb.ClientTaskTicket{Valid: true, ReturnIds: [][]byte{append([]byte(nil), info.ID[:]...)}}
}

// actorMeta is what the front end learns about an actor once it runs.
type actorMeta struct {
	ready bool
	dead  bool
	// numReturns per method from @ray.method(num_returns=...); 0 = default.
	numReturns map[string]int
	deferred   []deferredCall
	// unpinArgs releases the creation arguments pinned since submission.
	unpinArgs func()
}

// creationDone runs when an actor's creation task has finished (it is
// ready, or dead): its arguments need no pin of ours any more.
func (s *Server) creationDone(id ids.ActorID) {
	s.mu.Lock()
	var unpin func()
	if m := s.actorMeta[id]; m != nil {
		unpin, m.unpinArgs = m.unpinArgs, nil
	}
	s.mu.Unlock()
	if unpin != nil {
		unpin()
	}
}

type deferredCall struct {
	ss    *session
	reqID int32
	t     *pb.ClientTask
	data  [][]byte
	opts  options
	// deps and pins are the call's argument refs, pinned since submission.
	deps, pins []ids.ObjectID
	unpin      func()
}

// callActor submits a method call, or defers it (keeping per-actor order)
// until the actor's method table is known.
func (s *Server) callActor(ss *session, reqID int32, t *pb.ClientTask, data [][]byte, opts options) (*pb.ClientTaskTicket, bool) {
	aid, err := ids.ActorFromBytes(t.PayloadId)
	if err != nil {
		return s.invalidTicket(rayerr.ValueError("bad actor id: " + err.Error())), false
	}
	if e, died := s.resumedActorCall(ss, aid); died {
		return s.invalidTicket(e), false
	}
	if _, ok := s.cfg.Actors.Get(aid); !ok {
		return s.invalidTicket(rayerr.ValueError(fmt.Sprintf("actor %s is not known to the server", aid.Hex()))), false
	}
	if (ss.workerID == "" && !s.actorHeldBy(aid, ss.holder())) || !s.actorAllowed(ss, aid) {
		// The session never got a handle on it (another session's actor).
		return s.invalidTicket(rayerr.Plain("Can't run an actor the server doesn't have a handle for")), false
	}
	// The argument refs are resolved and pinned now, at submission, as the
	// stock server deserializes them: the client may release a temporary
	// ref (a.f.remote(g.remote())) right after this request.
	deps, pins, actors, err := s.refsOf(ss, data)
	if err != nil {
		return s.invalidTicket(rayerr.ValueError(err.Error())), false
	}
	// The call and the handles passed to it keep their actors alive until
	// it is done, as Ray keeps an actor while calls to it are pending.
	pinned, dropActors := s.pinArgs(pins), s.holdActors(append(actors, aid), "call")
	unpin := func() { pinned(); dropActors() }
	s.mu.Lock()
	m := s.actorMeta[aid]
	if m != nil && ((!m.ready && !m.dead) || len(m.deferred) > 0) {
		m.deferred = append(m.deferred, deferredCall{ss: ss, reqID: reqID, t: t, data: data, opts: opts, deps: deps, pins: pins, unpin: unpin})
		s.mu.Unlock()
		return nil, true
	}
	n := 1
	if m != nil && m.numReturns[t.Name] > 0 {
		n = m.numReturns[t.Name]
	}
	s.mu.Unlock()
	if _, ok := opts["num_returns"]; ok {
		n = opts.numReturns()
	}
	return s.submitCall(ss, aid, t, data, deps, pins, unpin, n, opts.str("concurrency_group", "")), false
}

// submitCall submits a method call whose argument objects are pinned until
// unpin, which it calls when the call has finished.
func (s *Server) submitCall(ss *session, aid ids.ActorID, t *pb.ClientTask, data [][]byte, deps, pins []ids.ObjectID, unpin func(), numReturns int, group string) *pb.ClientTaskTicket {
	call := &taskspec.ActorCall{
		TaskID: ids.NewTaskID(aid), ActorID: aid, JobID: s.jobOf(ss), Method: t.Name,
		Args: data, Deps: deps, Pins: pins, NumReturns: numReturns, ConcurrencyGroup: group,
	}
	returns := call.ReturnIDs()
	for _, id := range returns {
		s.store.Create(id, ss.holder())
		ss.track(id)
	}
	if err := s.cfg.Node.SubmitActorTask(call); err != nil {
		for _, id := range returns {
			s.store.Release(id, ss.holder())
			ss.untrack(id)
		}
		unpin()
		return s.invalidTicket(rayerr.ActorError(err.Error()))
	}
	class := t.Name
	if info, ok := s.cfg.Actors.Get(aid); ok {
		class = info.ClassName + "." + t.Name
	}
	s.cfg.Tasks.Submitted(taskhistory.Record{TaskID: call.TaskID, JobID: call.JobID, ActorID: aid, Type: taskhistory.ActorTask, FuncName: class})
	s.whenDone(returns, func() { unpin(); s.recordEnd(call.TaskID, returns) })
	ticket := &pb.ClientTaskTicket{Valid: true}
	for _, id := range returns {
		ticket.ReturnIds = append(ticket.ReturnIds, append([]byte(nil), id[:]...))
	}
	return ticket
}

func (s *Server) holdActor(id ids.ActorID, holder string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.actorHolders[id]
	if h == nil {
		h = map[string]bool{}
		s.actorHolders[id] = h
	}
	h[holder] = true
}

// actorHeldBy reports whether holder holds a handle on the actor.
func (s *Server) actorHeldBy(id ids.ActorID, holder string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.actorHolders[id][holder]
}

// releaseActor drops the session's handle; a non-detached actor with no
// handles left is killed, as in Ray.
func (s *Server) releaseActor(ss *session, id ids.ActorID) bool {
	return s.dropActorHolder(id, ss.holder())
}

// killActor implements ray.kill.
func (s *Server) killActor(ss *session, a *pb.TerminateRequest_ActorTerminate) bool {
	aid, err := ids.ActorFromBytes(a.Id)
	if err != nil || !s.actorAllowed(ss, aid) {
		return false // another account's actor is not this session's to kill
	}
	return s.cfg.Node.KillActor(aid, a.NoRestart) == nil
}

// endSessionActors kills the non-detached actors a finished session owned.
func (s *Server) endSessionActors(ss *session) {
	s.mu.Lock()
	for id, h := range s.actorHolders {
		delete(h, ss.holder())
		if len(h) == 0 {
			delete(s.actorHolders, id)
		}
	}
	s.mu.Unlock()
	if ss.workerID != "" {
		return
	}
	for _, info := range s.cfg.Actors.OwnedBy(ss.clientID) {
		_ = s.cfg.Node.KillActor(info.ID, true)
	}
}

// listNamedActors answers ray.util.list_named_actors.
func (s *Server) listNamedActors(ss *session, all bool) string {
	ns := s.namespaceOf(ss)
	acct := s.accountOf(ss)
	var out []any
	for _, a := range s.cfg.Actors.Named() {
		if a.Account != acct {
			continue // other accounts' actors are not even listed
		}
		if all {
			out = append(out, map[string]string{"name": a.Name, "namespace": a.Namespace})
		} else if a.Namespace == ns {
			out = append(out, a.Name)
		}
	}
	if out == nil {
		out = []any{}
	}
	b, _ := json.Marshal(out)
	return string(b)
}

// ActorReady records an actor's method table (the pickled (num_returns,
// signatures) pair its worker reported), publishes it in the KV for handles
// without class info, and submits the calls that waited for it.
func (s *Server) ActorReady(id ids.ActorID, info []byte) {
	counts := map[string]int{}
	if v, err := pickle.DecodeBytes(info); err == nil {
		if tuple, ok := v.([]any); ok && len(tuple) == 2 {
			if m, ok := asDict(tuple[0]); ok {
				for name, n := range m {
					if f, ok := toFloat(n); ok {
						counts[name] = int(f)
					}
				}
			}
		}
	} else {
		s.log.Warn("unreadable actor method table", "actor", id.Hex(), "err", err)
	}
	// Published in the KV of the actor's account: that is where its
	// account's workers look (kvscope.go).
	ns := []byte(actorInfoNamespace)
	if s.cfg.Auth.Enabled() {
		if a, ok := s.cfg.Actors.Get(id); ok {
			ns = scopeNamespace(a.Account, ns)
		}
	}
	if _, err := s.cfg.KV.Put(s.ctx, ns, []byte(id.Hex()), info, true); err != nil {
		s.log.Warn("cannot publish an actor's method table", "actor", id.Hex(), "err", err)
	}
	s.mu.Lock()
	m := s.actorMeta[id]
	if m == nil {
		m = &actorMeta{}
		s.actorMeta[id] = m
	}
	m.ready = true
	m.numReturns = counts
	s.mu.Unlock()
	s.creationDone(id)
	s.flushDeferred(id)
}

// ActorRestored readies the front end for an actor a restarted head loaded
// from the actor table: its method table is read back from the KV, where
// ActorReady published it when the actor first ran.
func (s *Server) ActorRestored(ctx context.Context, id ids.ActorID) {
	ns := []byte(actorInfoNamespace)
	if s.cfg.Auth.Enabled() {
		if a, ok := s.cfg.Actors.Get(id); ok {
			ns = scopeNamespace(a.Account, ns)
		}
	}
	info, ok, err := s.cfg.KV.Get(ctx, ns, []byte(id.Hex()))
	if err != nil || !ok {
		s.log.Warn("restored actor has no method table in the KV", "actor", id.Hex(), "err", err)
		return
	}
	s.ActorReady(id, info)
}

// ActorDead fails calls still waiting for an actor that will never run.
func (s *Server) ActorDead(id ids.ActorID) {
	s.markDead(id)
	s.mu.Lock()
	if m := s.actorMeta[id]; m != nil {
		m.dead = true
	}
	s.mu.Unlock()
	s.creationDone(id)
	s.flushDeferred(id)
}

// markDead records an actor's death in the actor table.
func (s *Server) markDead(id ids.ActorID) {
	ctx := s.ctx
	if ctx == nil { // not started yet
		ctx = context.Background()
	}
	if err := s.cfg.Actors.MarkDead(ctx, id); err != nil {
		s.log.Warn("actor table", "actor", id.Hex(), "err", err)
	}
}

// actorInfoNamespace is the KV namespace of published actor method tables.
const actorInfoNamespace = "gray_actor_info"

func (s *Server) flushDeferred(id ids.ActorID) {
	for {
		s.mu.Lock()
		m := s.actorMeta[id]
		if m == nil || len(m.deferred) == 0 {
			s.mu.Unlock()
			return
		}
		d := m.deferred[0]
		m.deferred = m.deferred[1:]
		n := 1
		if m.numReturns[d.t.Name] > 0 {
			n = m.numReturns[d.t.Name]
		}
		s.mu.Unlock()
		if _, ok := d.opts["num_returns"]; ok {
			n = d.opts.numReturns()
		}
		ticket := s.submitCall(d.ss, id, d.t, d.data, d.deps, d.pins, d.unpin, n, d.opts.str("concurrency_group", ""))
		d.ss.send(&pb.DataResponse{ReqId: d.reqID, Type: &pb.DataResponse_TaskTicket{TaskTicket: ticket}}, true)
	}
}

// ActorRef records a worker taking or dropping a handle on an actor.
func (s *Server) ActorRef(id ids.ActorID, holder string, retain bool) {
	if retain {
		if _, ok := s.cfg.Actors.Get(id); ok {
			s.holdActor(id, holder)
		}
		return
	}
	s.dropActorHolder(id, holder)
}

// HolderGone drops every actor handle a holder (an exited worker) had.
func (s *Server) HolderGone(holder string) {
	s.mu.Lock()
	var held []ids.ActorID
	for id, h := range s.actorHolders {
		if h[holder] {
			held = append(held, id)
		}
	}
	s.mu.Unlock()
	for _, id := range held {
		s.dropActorHolder(id, holder)
	}
}

// dropActorHolder removes one holder; a non-detached actor nobody holds is
// killed, as in Ray.
func (s *Server) dropActorHolder(id ids.ActorID, holder string) bool {
	s.mu.Lock()
	h := s.actorHolders[id]
	held := h[holder]
	if held {
		delete(h, holder)
	}
	empty := held && len(h) == 0
	if empty {
		delete(s.actorHolders, id)
	}
	s.mu.Unlock()
	if empty {
		if info, ok := s.cfg.Actors.Get(id); ok && !info.Detached {
			_ = s.cfg.Node.KillActor(id, true)
		}
	}
	return held
}

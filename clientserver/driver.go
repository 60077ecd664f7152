package clientserver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/gray-cluster/gray/auth"
	"github.com/gray-cluster/gray/gcs"
	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/internal/pickle"
	pb "github.com/gray-cluster/gray/proto/rayclientpb"
)

// init starts the session's job from the client's pickled JobConfig.
func (s *Server) init(ss *session, r *pb.InitRequest) *pb.InitResponse {
	namespace, runtimeEnv, err := decodeJobConfig(r.JobConfig)
	if err != nil {
		return &pb.InitResponse{Ok: false, Msg: "could not read job_config: " + err.Error()}
	}
	if namespace == "" {
		namespace = uuid.NewString()
	}
	origin, fromJob := s.jobOrigin(ss)
	if fromJob {
		runtimeEnv = withJobEnv(runtimeEnv, origin.RuntimeEnv)
	}
	// A runtime_env gray cannot set up fails the session's tasks with
	// RuntimeEnvSetupError, as Ray fails them, not the connection.
	env, envErr := s.resolveRuntimeEnv(s.kvAccountOf(ss), runtimeEnv)
	fresh := false
	defer func() {
		if fresh {
			s.persistSession(ss) // after the session's lock is released
		}
	}()
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.initialized { // a reconnecting client replays init
		return &pb.InitResponse{Ok: true}
	}
	if ss.workerID == "" {
		job, err := s.cfg.Jobs.Start(s.ctx, ss.clientID, namespace, time.Now())
		if err != nil {
			return &pb.InitResponse{Ok: false, Msg: "could not start a job: " + err.Error()}
		}
		ss.job = job.ID
		if fromJob {
			s.cfg.Jobs.SetSubmission(job.ID, origin.SubmissionID)
		}
		account := ss.account
		if account == "" {
			account = auth.DefaultAccount
		}
		s.setJobAccount(job.ID, account)
		if s.cfg.Billing != nil {
			// The account is the token's, never one the client names.
			if err := s.cfg.Billing.OpenSession(job.ID.Hex(), account); err != nil {
				s.log.Warn("billing: cannot open session escrow", "job", job.ID.Hex(), "account", account, "err", err)
			}
		}
	}
	ss.namespace = namespace
	ss.env, ss.envErr = env, envErr
	ss.runtimeEnv = runtimeEnv
	ss.grace = time.Duration(r.ReconnectGracePeriod) * time.Second
	ss.initialized = true
	fresh = ss.workerID == ""
	return &pb.InitResponse{Ok: true}
}

// decodeJobConfig reads ray_namespace and runtime_env from a JobConfig pickle.
func decodeJobConfig(data []byte) (string, map[string]any, error) {
	if len(data) == 0 {
		return "", nil, nil
	}
	v, err := pickle.Decode(bytes.NewReader(data))
	if err != nil {
		return "", nil, err
	}
	attrs := objectAttrs(v)
	ns, _ := attrs["ray_namespace"].(string)
	re, _ := asDict(attrs["runtime_env"])
	if re == nil {
		re, _ = asDict(attrs["_parsed_runtime_env"])
	}
	return ns, re, nil
}

// objectAttrs returns the attribute dict of a decoded class instance.
func objectAttrs(v any) map[string]any {
	if o, ok := v.(*pickle.Object); ok {
		if len(o.Dict) > 0 {
			return o.Dict
		}
		if m, ok := asDict(o.State); ok {
			return m
		}
	}
	m, _ := asDict(v)
	return m
}

// ClusterInfo answers cluster queries.
func (s *Server) ClusterInfo(ctx context.Context, r *pb.ClusterInfoRequest) (*pb.ClusterInfoResponse, error) {
	resp := &pb.ClusterInfoResponse{Type: r.Type}
	setJSON := func(v any) {
		b, _ := json.Marshal(v)
		resp.ResponseType = &pb.ClusterInfoResponse_Json{Json: string(b)}
	}
	switch r.Type {
	case pb.ClusterInfoType_PING:
		setJSON(map[string]any{})
	case pb.ClusterInfoType_IS_INITIALIZED:
		setJSON(true)
	case pb.ClusterInfoType_DASHBOARD_URL:
		setJSON(map[string]any{"dashboard_url": s.cfg.DashboardURL})
	case pb.ClusterInfoType_TIMELINE:
		setJSON([]any{})
	case pb.ClusterInfoType_NODES:
		setJSON(s.nodes())
	case pb.ClusterInfoType_CLUSTER_RESOURCES:
		resp.ResponseType = &pb.ClusterInfoResponse_ResourceTable_{ResourceTable: &pb.ClusterInfoResponse_ResourceTable{Table: s.resourceTable(s.cfg.Node.Total())}}
	case pb.ClusterInfoType_AVAILABLE_RESOURCES:
		resp.ResponseType = &pb.ClusterInfoResponse_ResourceTable_{ResourceTable: &pb.ClusterInfoResponse_ResourceTable{Table: s.resourceTable(s.cfg.Node.Available())}}
	case pb.ClusterInfoType_RUNTIME_CONTEXT:
		ss, err := s.sessionFor(ctx)
		if err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
		job := s.jobOf(ss)
		owner := ss
		if ss.workerID != "" {
			if o := s.sessionOfJob(job); o != nil {
				owner = o
			}
		}
		owner.mu.Lock()
		ns, re := owner.namespace, owner.runtimeEnv
		owner.mu.Unlock()
		reJSON, _ := json.Marshal(orEmpty(re))
		node := s.cfg.Node.NodeID()
		if ss.workerID != "" {
			if n, ok := s.cfg.Node.WorkerNode(ss.workerID); ok {
				node = n
			}
		}
		resp.ResponseType = &pb.ClusterInfoResponse_RuntimeContext_{RuntimeContext: &pb.ClusterInfoResponse_RuntimeContext{
			JobId: job[:], NodeId: node[:], Namespace: ns, RuntimeEnv: string(reJSON),
			GcsAddress: s.cfg.NodeIP, SessionName: "gray",
		}}
	default:
		return nil, status.Errorf(codes.InvalidArgument, "unknown cluster info type %d", r.Type)
	}
	return resp, nil
}

func orEmpty(m map[string]any) map[string]any {
	if m == nil {
		return map[string]any{}
	}
	return m
}

func (s *Server) resourceTable(res map[string]float64) map[string]float64 {
	out := make(map[string]float64, len(res)+2)
	for k, v := range res {
		out[k] = v
	}
	for _, n := range s.cfg.Node.Nodes() {
		if n.State == gcs.NodeDead {
			continue
		}
		ip := n.IP
		if ip == "" {
			ip = s.cfg.NodeIP
		}
		out["node:"+ip]++
		if n.IsHead {
			out["node:__internal_head__"] = 1
		}
	}
	return out
}

func (s *Server) nodes() []map[string]any {
	var out []map[string]any
	for _, n := range s.cfg.Node.Nodes() {
		ip := n.IP
		if ip == "" {
			ip = s.cfg.NodeIP
		}
		res := map[string]float64{}
		if n.State != gcs.NodeDead {
			for k, v := range n.Total {
				res[k] = v
			}
			res["node:"+ip] = 1
			if n.IsHead {
				res["node:__internal_head__"] = 1
			}
		}
		labels := map[string]string{"ray.io/node-id": n.ID.Hex()}
		for k, v := range n.Labels {
			labels[k] = v
		}
		alive := n.State != gcs.NodeDead
		death := 0
		if !alive {
			death = 1 // UNEXPECTED_TERMINATION
		}
		out = append(out, map[string]any{
			"NodeID":                n.ID.Hex(),
			"Alive":                 alive,
			"alive":                 alive,
			"NodeManagerAddress":    ip,
			"NodeManagerHostname":   n.Hostname,
			"NodeName":              ip,
			"NodeManagerPort":       0,
			"ObjectManagerPort":     0,
			"ObjectStoreSocketName": "",
			"RayletSocketName":      "",
			"MetricsExportPort":     0,
			"DeathReason":           death,
			"DeathReasonMessage":    n.DeathReason,
			"Resources":             res,
			"Labels":                labels,
			"IsHeadNode":            n.IsHead,
			"State":                 string(n.State),
		})
	}
	return out
}

// KVGet reads the internal KV; a missing key leaves value unset.
func (s *Server) KVGet(ctx context.Context, r *pb.KVGetRequest) (*pb.KVGetResponse, error) {
	if err := s.foreignActorInfo(ctx, r.Namespace, r.Key); err != nil {
		return nil, err
	}
	v, ok, err := s.cfg.KV.Get(ctx, s.kvNS(ctx, r.Namespace), r.Key)
	if err != nil {
		return nil, kvError(err)
	}
	if !ok {
		return &pb.KVGetResponse{}, nil
	}
	return &pb.KVGetResponse{Value: v}, nil
}

// KVPut writes the internal KV; retried requests are answered once.
func (s *Server) KVPut(ctx context.Context, r *pb.KVPutRequest) (*pb.KVPutResponse, error) {
	key := dedupeKey(ctx)
	if key != "" {
		s.mu.Lock()
		prev, ok := s.kvDedupe[key]
		s.mu.Unlock()
		if ok {
			return prev, nil
		}
	}
	existed, err := s.cfg.KV.Put(ctx, s.kvNS(ctx, r.Namespace), r.Key, r.Value, r.Overwrite)
	if err != nil {
		return nil, kvError(err)
	}
	resp := &pb.KVPutResponse{AlreadyExists: existed}
	if key != "" {
		s.mu.Lock()
		if len(s.kvDedupe) > 10000 {
			s.kvDedupe = map[string]*pb.KVPutResponse{}
		}
		s.kvDedupe[key] = resp
		s.mu.Unlock()
	}
	return resp, nil
}

func dedupeKey(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	c, t, r := mdValue(md, "client_id"), mdValue(md, "thread_id"), mdValue(md, "req_id")
	if c == "" || t == "" || r == "" {
		return ""
	}
	return c + "/" + t + "/" + r
}

// KVDel deletes a key or a prefix.
func (s *Server) KVDel(ctx context.Context, r *pb.KVDelRequest) (*pb.KVDelResponse, error) {
	n, err := s.cfg.KV.Del(ctx, s.kvNS(ctx, r.Namespace), r.Key, r.DelByPrefix)
	if err != nil {
		return nil, kvError(err)
	}
	return &pb.KVDelResponse{DeletedNum: int32(n)}, nil
}

// KVList lists keys by prefix.
func (s *Server) KVList(ctx context.Context, r *pb.KVListRequest) (*pb.KVListResponse, error) {
	keys, err := s.cfg.KV.Keys(ctx, s.kvNS(ctx, r.Namespace), r.Prefix)
	if err != nil {
		return nil, kvError(err)
	}
	return &pb.KVListResponse{Keys: keys}, nil
}

// KVExists tests a key.
func (s *Server) KVExists(ctx context.Context, r *pb.KVExistsRequest) (*pb.KVExistsResponse, error) {
	ok, err := s.cfg.KV.Exists(ctx, s.kvNS(ctx, r.Namespace), r.Key)
	if err != nil {
		return nil, kvError(err)
	}
	return &pb.KVExistsResponse{Exists: ok}, nil
}

// kvError is the gRPC status of a KV call the store failed: a key or value
// the store refuses is the caller's error (the client raises it at once);
// anything else is the store's, which the client retries as a lost
// connection and raises once its reconnect grace period is over.
func kvError(err error) error {
	if errors.Is(err, gcs.ErrBadKey) || errors.Is(err, gcs.ErrBadOp) {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	return status.Error(codes.Unavailable, err.Error())
}

// PinRuntimeEnvURI keeps an uploaded package; packages live for the pool's life.
func (s *Server) PinRuntimeEnvURI(context.Context, *pb.ClientPinRuntimeEnvURIRequest) (*pb.ClientPinRuntimeEnvURIResponse, error) {
	return &pb.ClientPinRuntimeEnvURIResponse{}, nil
}

// terminate handles ray.cancel and ray.kill.
func (s *Server) terminate(ss *session, r *pb.TerminateRequest) *pb.TerminateResponse {
	switch t := r.TerminateType.(type) {
	case *pb.TerminateRequest_TaskObject:
		oid, err := ids.ObjectFromBytes(t.TaskObject.Id)
		if err != nil || !s.sameAccount(ss, oid) {
			return &pb.TerminateResponse{Ok: false}
		}
		if err := s.cfg.Node.Cancel(oid.Task(), t.TaskObject.Force); err != nil {
			s.log.Debug("cancel", "object", oid.Hex(), "err", err)
		}
		return &pb.TerminateResponse{Ok: true}
	case *pb.TerminateRequest_Actor:
		return &pb.TerminateResponse{Ok: s.killActor(ss, t.Actor)}
	}
	return &pb.TerminateResponse{Ok: false}
}

// Logstream forwards worker output and server log records to the client.
func (s *Server) Logstream(stream pb.RayletLogStreamer_LogstreamServer) error {
	md, _ := metadata.FromIncomingContext(stream.Context())
	clientID := mdValue(md, "client_id")
	var ss *session
	// The log stream may open before the data stream registers the session.
	for i := 0; i < 100 && ss == nil; i++ {
		s.mu.Lock()
		ss = s.sessions[clientID]
		s.mu.Unlock()
		if ss == nil {
			select {
			case <-stream.Context().Done():
				return nil
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	if ss == nil {
		return status.Error(codes.NotFound, fmt.Sprintf("no session for client %s", clientID))
	}
	id, ch := ss.subscribeLogs()
	s.updateLogMin()
	defer func() {
		ss.unsubscribeLogs(id)
		s.updateLogMin()
	}()
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				return
			}
			s.setLogLevel(ss, req.Enabled, req.Loglevel)
		}
	}()
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case d, ok := <-ch:
			if !ok {
				return nil
			}
			if err := stream.Send(d); err != nil {
				return err
			}
		}
	}
}

// PublishWorkerLog sends a worker output line to the sessions of its job.
func (s *Server) PublishWorkerLog(job ids.JobID, line string, stderr bool) {
	d := &pb.LogData{Msg: line, Level: -1, Name: "stdout"}
	if stderr {
		d.Level, d.Name = -2, "stderr"
	}
	s.mu.Lock()
	var targets []*session
	for _, ss := range s.sessions {
		if ss.workerID == "" && ss.job == job {
			targets = append(targets, ss)
		}
	}
	s.mu.Unlock()
	for _, ss := range targets {
		ss.mu.Lock()
		on := ss.logEnabled
		ss.mu.Unlock()
		if on {
			ss.publishLog(d)
		}
	}
}

package nodemanager

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	flatbuffers "github.com/google/flatbuffers/go"
	"google.golang.org/grpc"

	fb "github.com/gray-cluster/gray/native/fbs/rayletfb"
	"github.com/gray-cluster/gray/native/ipcframe"
	commonpb "github.com/gray-cluster/gray/proto/ray/commonpb"
	raypb "github.com/gray-cluster/gray/proto/ray/raypb"
)

// fakeStore is an in-memory ObjectStore: Seal makes an object present.
type fakeStore struct {
	mu      sync.Mutex
	changed chan struct{}
	sealed  map[ObjectID]bool
	pinned  map[ObjectID]int
	deleted map[ObjectID]int
}

func newFakeStore() *fakeStore {
	return &fakeStore{changed: make(chan struct{}), sealed: map[ObjectID]bool{}, pinned: map[ObjectID]int{}, deleted: map[ObjectID]int{}}
}

func (s *fakeStore) Seal(id ObjectID) {
	s.mu.Lock()
	s.sealed[id] = true
	s.bumpLocked()
	s.mu.Unlock()
}

func (s *fakeStore) bumpLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// waitUntil waits for cond over the store's state.
func (s *fakeStore) waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		s.mu.Lock()
		ch := s.changed
		s.mu.Unlock()
		if cond() {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func (s *fakeStore) Contains(id ObjectID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sealed[id]
}

func (s *fakeStore) Pin(id ObjectID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.sealed[id] {
		return false
	}
	s.pinned[id]++
	return true
}

func (s *fakeStore) Unpin(id ObjectID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pinned[id] > 0 {
		s.pinned[id]--
	}
	s.bumpLocked()
}

func (s *fakeStore) Delete(id ObjectID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deleted[id]++
	if s.pinned[id] == 0 {
		delete(s.sealed, id)
	}
	s.bumpLocked()
}

func (s *fakeStore) pins(id ObjectID) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pinned[id]
}

func (s *fakeStore) WaitSealed(ctx context.Context, ids []ObjectID, n int) []ObjectID {
	for {
		s.mu.Lock()
		var got []ObjectID
		for _, id := range ids {
			if s.sealed[id] {
				got = append(got, id)
			}
		}
		ch := s.changed
		s.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-ctx.Done():
			return got
		case <-ch:
		}
	}
}

func (s *fakeStore) Usage() StoreUsage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return StoreUsage{Used: int64(len(s.sealed)) * 8, Capacity: 1 << 20, Objects: int64(len(s.sealed))}
}

// recorder collects calls by name and lets tests wait for them.
type recorder struct {
	mu    sync.Mutex
	calls map[string][]any
	ch    chan struct{}
}

func newRecorder() *recorder { return &recorder{calls: map[string][]any{}, ch: make(chan struct{})} }

func (r *recorder) add(name string, msg any) {
	r.mu.Lock()
	r.calls[name] = append(r.calls[name], msg)
	close(r.ch)
	r.ch = make(chan struct{})
	r.mu.Unlock()
}

func (r *recorder) get(name string) []any {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]any(nil), r.calls[name]...)
}

// waitFor waits until cond holds over the calls named name.
func (r *recorder) waitFor(t *testing.T, name string, cond func([]any) bool) []any {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		r.mu.Lock()
		calls := append([]any(nil), r.calls[name]...)
		ch := r.ch
		r.mu.Unlock()
		if cond(calls) {
			return calls
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("timed out waiting for %s (have %d calls)", name, len(calls))
		}
	}
}

func atLeast(n int) func([]any) bool { return func(c []any) bool { return len(c) >= n } }

// fakeGCS records what the raylet tells the GCS and answers what a real
// worker asks at start-up.
type fakeGCS struct {
	raypb.UnimplementedNodeInfoGcsServiceServer
	raypb.UnimplementedJobInfoGcsServiceServer
	raypb.UnimplementedWorkerInfoGcsServiceServer
	raypb.UnimplementedObservabilityPubSubServiceServer
	raypb.UnimplementedInternalKVGcsServiceServer
	rec       *recorder
	clusterID []byte
	addJobErr *raypb.GcsStatus

	mu    sync.Mutex
	nodes []*raypb.GcsNodeInfo
	kv    map[string][]byte // namespace + "\x00" + key
}

func (g *fakeGCS) kvPut(ns, key string, v []byte) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.kv == nil {
		g.kv = map[string][]byte{}
	}
	g.kv[ns+"\x00"+key] = v
}

func (g *fakeGCS) RegisterNode(ctx context.Context, req *raypb.RegisterNodeRequest) (*raypb.RegisterNodeReply, error) {
	g.mu.Lock()
	g.nodes = append(g.nodes, req.GetNodeInfo())
	g.mu.Unlock()
	g.rec.add("RegisterNode", req)
	return &raypb.RegisterNodeReply{}, nil
}

func (g *fakeGCS) UnregisterNode(ctx context.Context, req *raypb.UnregisterNodeRequest) (*raypb.UnregisterNodeReply, error) {
	g.rec.add("UnregisterNode", req)
	return &raypb.UnregisterNodeReply{}, nil
}

func (g *fakeGCS) GetClusterId(ctx context.Context, req *raypb.GetClusterIdRequest) (*raypb.GetClusterIdReply, error) {
	g.rec.add("GetClusterId", req)
	return &raypb.GetClusterIdReply{ClusterId: g.clusterID}, nil
}

func (g *fakeGCS) GetAllNodeInfo(ctx context.Context, req *raypb.GetAllNodeInfoRequest) (*raypb.GetAllNodeInfoReply, error) {
	g.rec.add("GetAllNodeInfo", req)
	g.mu.Lock()
	defer g.mu.Unlock()
	return &raypb.GetAllNodeInfoReply{NodeInfoList: g.nodes, Total: int64(len(g.nodes))}, nil
}

func (g *fakeGCS) AddJob(ctx context.Context, req *raypb.AddJobRequest) (*raypb.AddJobReply, error) {
	g.rec.add("AddJob", req)
	return &raypb.AddJobReply{Status: g.addJobErr}, nil
}

func (g *fakeGCS) MarkJobFinished(ctx context.Context, req *raypb.MarkJobFinishedRequest) (*raypb.MarkJobFinishedReply, error) {
	g.rec.add("MarkJobFinished", req)
	return &raypb.MarkJobFinishedReply{}, nil
}

func (g *fakeGCS) ReportWorkerFailure(ctx context.Context, req *raypb.ReportWorkerFailureRequest) (*raypb.ReportWorkerFailureReply, error) {
	g.rec.add("ReportWorkerFailure", req)
	return &raypb.ReportWorkerFailureReply{}, nil
}

func (g *fakeGCS) AddWorkerInfo(ctx context.Context, req *raypb.AddWorkerInfoRequest) (*raypb.AddWorkerInfoReply, error) {
	g.rec.add("AddWorkerInfo", req)
	return &raypb.AddWorkerInfoReply{}, nil
}

func (g *fakeGCS) GcsPublish(ctx context.Context, req *raypb.GcsPublishRequest) (*raypb.GcsPublishReply, error) {
	g.rec.add("GcsPublish", req)
	return &raypb.GcsPublishReply{}, nil
}

func (g *fakeGCS) ReportJobError(ctx context.Context, req *raypb.ReportJobErrorRequest) (*raypb.ReportJobErrorReply, error) {
	g.rec.add("ReportJobError", req)
	return &raypb.ReportJobErrorReply{}, nil
}

func (g *fakeGCS) InternalKVGet(ctx context.Context, req *raypb.InternalKVGetRequest) (*raypb.InternalKVGetReply, error) {
	g.rec.add("InternalKVGet", req)
	g.mu.Lock()
	v, ok := g.kv[string(req.GetNamespace())+"\x00"+string(req.GetKey())]
	g.mu.Unlock()
	if ok {
		return &raypb.InternalKVGetReply{Status: &raypb.GcsStatus{}, Value: v}, nil
	}
	return &raypb.InternalKVGetReply{Status: &raypb.GcsStatus{Code: 17, Message: "Failed to find the key"}}, nil
}

func (g *fakeGCS) InternalKVPut(ctx context.Context, req *raypb.InternalKVPutRequest) (*raypb.InternalKVPutReply, error) {
	g.rec.add("InternalKVPut", req)
	return &raypb.InternalKVPutReply{Added: true}, nil
}

func (g *fakeGCS) InternalKVExists(ctx context.Context, req *raypb.InternalKVExistsRequest) (*raypb.InternalKVExistsReply, error) {
	return &raypb.InternalKVExistsReply{}, nil
}

func startFakeGCS(t *testing.T) (*fakeGCS, string) {
	t.Helper()
	g := &fakeGCS{rec: newRecorder(), clusterID: make([]byte, 28)}
	g.clusterID[0] = 7
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	raypb.RegisterNodeInfoGcsServiceServer(s, g)
	raypb.RegisterJobInfoGcsServiceServer(s, g)
	raypb.RegisterWorkerInfoGcsServiceServer(s, g)
	raypb.RegisterObservabilityPubSubServiceServer(s, g)
	raypb.RegisterInternalKVGcsServiceServer(s, g)
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	return g, lis.Addr().String()
}

// fakeCoreWorker serves CoreWorkerService and records what it is told.
type fakeCoreWorker struct {
	raypb.UnimplementedCoreWorkerServiceServer
	rec    *recorder
	onExit func()
}

func (f *fakeCoreWorker) UpdateObjectLocationBatch(ctx context.Context, req *raypb.UpdateObjectLocationBatchRequest) (*raypb.UpdateObjectLocationBatchReply, error) {
	f.rec.add("UpdateObjectLocationBatch", req)
	return &raypb.UpdateObjectLocationBatchReply{}, nil
}

func (f *fakeCoreWorker) ActorCallArgWaitComplete(ctx context.Context, req *raypb.ActorCallArgWaitCompleteRequest) (*raypb.ActorCallArgWaitCompleteReply, error) {
	f.rec.add("ActorCallArgWaitComplete", req)
	return &raypb.ActorCallArgWaitCompleteReply{}, nil
}

func (f *fakeCoreWorker) PlasmaObjectReady(ctx context.Context, req *raypb.PlasmaObjectReadyRequest) (*raypb.PlasmaObjectReadyReply, error) {
	f.rec.add("PlasmaObjectReady", req)
	return &raypb.PlasmaObjectReadyReply{}, nil
}

func (f *fakeCoreWorker) Exit(ctx context.Context, req *raypb.ExitRequest) (*raypb.ExitReply, error) {
	f.rec.add("Exit", req)
	if f.onExit != nil {
		go f.onExit()
	}
	return &raypb.ExitReply{Success: true}, nil
}

func (f *fakeCoreWorker) KillActor(ctx context.Context, req *raypb.KillActorRequest) (*raypb.KillActorReply, error) {
	f.rec.add("KillActor", req)
	if f.onExit != nil {
		go f.onExit()
	}
	return &raypb.KillActorReply{}, nil
}

func (f *fakeCoreWorker) CancelTask(ctx context.Context, req *raypb.CancelTaskRequest) (*raypb.CancelTaskReply, error) {
	f.rec.add("CancelTask", req)
	return &raypb.CancelTaskReply{RequestedTaskRunning: true, AttemptSucceeded: true}, nil
}

// serveCoreWorker serves f on addr (":port" or "127.0.0.1:0").
func serveCoreWorker(addr string, f *fakeCoreWorker) (*grpc.Server, int, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, 0, err
	}
	s := grpc.NewServer()
	raypb.RegisterCoreWorkerServiceServer(s, f)
	go s.Serve(lis)
	return s, lis.Addr().(*net.TCPAddr).Port, nil
}

// sockClient speaks the raylet socket like a core worker.
type sockClient struct {
	conn net.Conn
	rd   *ipcframe.Reader
}

func dialSock(path string) (*sockClient, error) {
	c, err := net.Dial("unix", path)
	if err != nil {
		return nil, err
	}
	return &sockClient{conn: c, rd: ipcframe.NewReader(c, 0)}, nil
}

func (c *sockClient) send(typ int64, body []byte) error { return ipcframe.Write(c.conn, typ, body) }

func (c *sockClient) expect(typ int64) ([]byte, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	f, err := c.rd.Read()
	if err != nil {
		return nil, err
	}
	if f.Type != typ {
		return nil, &unexpectedType{got: f.Type, want: typ}
	}
	return f.Body, nil
}

type unexpectedType struct{ got, want int64 }

func (e *unexpectedType) Error() string { return "unexpected message type" }

// register sends RegisterClientRequest and returns the reply's port.
func (c *sockClient) register(typ int32, workerID []byte, pid int64, jobID []byte, jobConfig []byte) (port int32, nodeID []byte, ok bool, err error) {
	b := flatbuffers.NewBuilder(256)
	wid := b.CreateByteString(workerID)
	jid := b.CreateByteString(jobID)
	ip := b.CreateString("127.0.0.1")
	jc := b.CreateByteString(jobConfig)
	fb.RegisterClientRequestStart(b)
	fb.RegisterClientRequestAddWorkerType(b, typ)
	fb.RegisterClientRequestAddWorkerId(b, wid)
	fb.RegisterClientRequestAddWorkerPid(b, pid)
	fb.RegisterClientRequestAddJobId(b, jid)
	fb.RegisterClientRequestAddIpAddress(b, ip)
	fb.RegisterClientRequestAddSerializedJobConfig(b, jc)
	b.Finish(fb.RegisterClientRequestEnd(b))
	if err := c.send(msgRegisterClientRequest, b.FinishedBytes()); err != nil {
		return 0, nil, false, err
	}
	body, err := c.expect(msgRegisterClientReply)
	if err != nil {
		return 0, nil, false, err
	}
	rep := fb.GetRootAsRegisterClientReply(body, 0)
	return rep.Port(), rep.NodeId(), rep.Success(), nil
}

func (c *sockClient) announce(port int32, entrypoint string) error {
	b := flatbuffers.NewBuilder(64)
	e := b.CreateString(entrypoint)
	fb.AnnounceWorkerPortStart(b)
	fb.AnnounceWorkerPortAddPort(b, port)
	fb.AnnounceWorkerPortAddEntrypoint(b, e)
	b.Finish(fb.AnnounceWorkerPortEnd(b))
	return c.send(msgAnnounceWorkerPort, b.FinishedBytes())
}

func (c *sockClient) disconnect(typ int32, detail string) error {
	b := flatbuffers.NewBuilder(64)
	d := b.CreateString(detail)
	fb.DisconnectClientRequestStart(b)
	fb.DisconnectClientRequestAddDisconnectType(b, typ)
	fb.DisconnectClientRequestAddDisconnectDetail(b, d)
	b.Finish(fb.DisconnectClientRequestEnd(b))
	if err := c.send(msgDisconnectClientRequest, b.FinishedBytes()); err != nil {
		return err
	}
	_, err := c.expect(msgDisconnectClientReply)
	return err
}

func buildIDsMessage(kind int64, ids [][]byte, num int32, timeout int64, taskID []byte) []byte {
	b := flatbuffers.NewBuilder(256)
	vec := stringVector(b, ids)
	var tid flatbuffers.UOffsetT
	if taskID != nil {
		tid = b.CreateByteString(taskID)
	}
	switch kind {
	case msgWaitRequest:
		fb.WaitRequestStart(b)
		fb.WaitRequestAddObjectIds(b, vec)
		fb.WaitRequestAddNumRequiredObjects(b, num)
		fb.WaitRequestAddTimeout(b, timeout)
		b.Finish(fb.WaitRequestEnd(b))
	case msgWaitForActorCallArgs:
		fb.WaitForActorCallArgsRequestStart(b)
		fb.WaitForActorCallArgsRequestAddObjectIds(b, vec)
		fb.WaitForActorCallArgsRequestAddTaskId(b, tid)
		fb.WaitForActorCallArgsRequestAddAttemptNumber(b, num)
		b.Finish(fb.WaitForActorCallArgsRequestEnd(b))
	case msgFreeObjectsInObjectStore:
		fb.FreeObjectsRequestStart(b)
		fb.FreeObjectsRequestAddLocalOnly(b, true)
		fb.FreeObjectsRequestAddObjectIds(b, vec)
		b.Finish(fb.FreeObjectsRequestEnd(b))
	}
	return b.FinishedBytes()
}

func parseWaitReplyBody(body []byte) (found, remaining [][]byte) {
	t := fb.GetRootAsWaitReply(body, 0)
	for i := 0; i < t.FoundLength(); i++ {
		found = append(found, t.Found(i))
	}
	for i := 0; i < t.RemainingLength(); i++ {
		remaining = append(remaining, t.Remaining(i))
	}
	return found, remaining
}

func addrOf(ip string, port int, wid []byte) *commonpb.Address {
	return &commonpb.Address{IpAddress: ip, Port: int32(port), WorkerId: wid}
}

func buildDisconnect(typ int32, detail string) []byte {
	b := flatbuffers.NewBuilder(64)
	d := b.CreateString(detail)
	fb.DisconnectClientRequestStart(b)
	fb.DisconnectClientRequestAddDisconnectType(b, typ)
	fb.DisconnectClientRequestAddDisconnectDetail(b, d)
	b.Finish(fb.DisconnectClientRequestEnd(b))
	return b.FinishedBytes()
}

func buildPushError(job []byte, typ, msg string, ts float64) []byte {
	b := flatbuffers.NewBuilder(128)
	j := b.CreateByteString(job)
	ty := b.CreateString(typ)
	m := b.CreateString(msg)
	fb.PushErrorRequestStart(b)
	fb.PushErrorRequestAddJobId(b, j)
	fb.PushErrorRequestAddType(b, ty)
	fb.PushErrorRequestAddErrorMessage(b, m)
	fb.PushErrorRequestAddTimestamp(b, ts)
	b.Finish(fb.PushErrorRequestEnd(b))
	return b.FinishedBytes()
}

func buildSubscribePlasmaReady(id []byte) []byte {
	b := flatbuffers.NewBuilder(64)
	o := b.CreateByteString(id)
	fb.SubscribePlasmaReadyStart(b)
	fb.SubscribePlasmaReadyAddObjectId(b, o)
	b.Finish(fb.SubscribePlasmaReadyEnd(b))
	return b.FinishedBytes()
}

func (f *fakeCoreWorker) GetCoreWorkerStats(ctx context.Context, req *raypb.GetCoreWorkerStatsRequest) (*raypb.GetCoreWorkerStatsReply, error) {
	f.rec.add("GetCoreWorkerStats", req)
	return &raypb.GetCoreWorkerStatsReply{CoreWorkerStats: &commonpb.CoreWorkerStats{NumPendingTasks: 3,
		ObjectRefs: []*commonpb.ObjectRefInfo{{ObjectId: []byte("o")}}}}, nil
}

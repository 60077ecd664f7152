package nodemanager

import (
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/gray-cluster/gray/internal/testlog"
	fb "github.com/gray-cluster/gray/native/fbs/rayletfb"
	commonpb "github.com/gray-cluster/gray/proto/ray/commonpb"
	raypb "github.com/gray-cluster/gray/proto/ray/raypb"
)

type testNode struct {
	r      *Raylet
	gcs    *fakeGCS
	store  *fakeStore
	nm     raypb.NodeManagerServiceClient
	dir    string
	spawns chan *inprocWorker // in-process workers the raylet "started"
}

// newTestNode starts a raylet against a fake GCS and store. With inproc,
// workers are in-process fakes instead of processes.
func newTestNode(t *testing.T, inproc bool, mutate func(*Config)) *testNode {
	t.Helper()
	g, gaddr := startFakeGCS(t)
	dir, err := os.MkdirTemp("", "nm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	st := newFakeStore()
	nodeID := make([]byte, 28)
	rand.Read(nodeID)
	cfg := Config{
		NodeID: nodeID, NodeIP: "127.0.0.1", GCSAddress: gaddr, ClusterIDHex: "07",
		SessionName: "session_test", TempDir: dir,
		Resources: map[string]float64{"CPU": 2, "memory": 1e9}, Store: st,
		Logger: testlog.New(t), RayDir: "/nonexistent/ray", LogPollInterval: -1,
		KillGrace: 2 * time.Second,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tn := &testNode{r: r, gcs: g, store: st, dir: dir, spawns: make(chan *inprocWorker, 64)}
	if inproc {
		r.spawnHook = func(w *worker) { tn.spawnInproc(t, w) }
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	conn, err := grpc.NewClient(addrString(&commonpb.Address{IpAddress: "127.0.0.1", Port: int32(r.Port())}),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	tn.nm = raypb.NewNodeManagerServiceClient(conn)
	return tn
}

// inprocWorker is a fake pooled worker living in the test process.
type inprocWorker struct {
	id   WorkerID
	sock *sockClient
	cw   *fakeCoreWorker
	srv  *grpc.Server
	port int
}

func (tn *testNode) spawnInproc(t *testing.T, w *worker) {
	sock, err := dialSock(tn.r.cfg.RayletSocket)
	if err != nil {
		t.Errorf("fake worker dial: %v", err)
		return
	}
	port, _, ok, err := sock.register(workerTypeWorker, w.id[:], int64(os.Getpid()), []byte{0xff, 0xff, 0xff, 0xff}, nil)
	if err != nil || !ok {
		t.Errorf("fake worker register: ok=%v err=%v", ok, err)
		return
	}
	iw := &inprocWorker{id: w.id, sock: sock, cw: &fakeCoreWorker{rec: newRecorder()}}
	iw.cw.onExit = func() { iw.sock.conn.Close() }
	srv, p, err := serveCoreWorker("127.0.0.1:"+itoa(int(port)), iw.cw)
	if err != nil {
		t.Errorf("fake worker serve: %v", err)
		return
	}
	iw.srv, iw.port = srv, p
	t.Cleanup(func() { srv.Stop(); sock.conn.Close() })
	if err := sock.announce(port, ""); err != nil {
		t.Errorf("fake worker announce: %v", err)
		return
	}
	tn.spawns <- iw
}

func (tn *testNode) nextSpawn(t *testing.T) *inprocWorker {
	t.Helper()
	select {
	case w := <-tn.spawns:
		return w
	case <-time.After(20 * time.Second):
		t.Fatal("no worker was started")
		return nil
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func jobID(n byte) []byte { return []byte{n, 0, 0, 0} }

// leaseSpec is a normal task lease of job for resources, owned by owner.
func leaseSpec(counter byte, job []byte, owner []byte, res map[string]float64) *commonpb.LeaseSpec {
	id := make([]byte, 32)
	id[0] = counter
	copy(id[4:], owner)
	return &commonpb.LeaseSpec{LeaseId: id, JobId: job, RequiredResources: res,
		CallerAddress: &commonpb.Address{IpAddress: "127.0.0.1", WorkerId: owner}}
}

type leaseCall struct {
	rep *raypb.RequestWorkerLeaseReply
	err error
}

// requestAsync sends RequestWorkerLease and returns a channel with its result.
func (tn *testNode) requestAsync(ctx context.Context, spec *commonpb.LeaseSpec, grantOrReject bool) chan leaseCall {
	ch := make(chan leaseCall, 1)
	go func() {
		rep, err := tn.nm.RequestWorkerLease(ctx, &raypb.RequestWorkerLeaseRequest{LeaseSpec: spec, GrantOrReject: grantOrReject})
		ch <- leaseCall{rep, err}
	}()
	return ch
}

func waitLease(t *testing.T, ch chan leaseCall) *raypb.RequestWorkerLeaseReply {
	t.Helper()
	select {
	case c := <-ch:
		if c.err != nil {
			t.Fatalf("RequestWorkerLease: %v", c.err)
		}
		return c.rep
	case <-time.After(20 * time.Second):
		t.Fatal("lease not answered")
		return nil
	}
}

// waitState waits until cond holds over the raylet's state (checked under
// its lock after every scheduling pass).
func (tn *testNode) waitState(t *testing.T, what string, cond func(r *Raylet) bool) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		tn.r.mu.Lock()
		ok := cond(tn.r)
		ch := tn.r.changed
		tn.r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// notAnswered waits until the lease with that counter is queued and checks
// that its request has no reply.
func (tn *testNode) notAnswered(t *testing.T, ch chan leaseCall, counter byte) {
	t.Helper()
	tn.waitState(t, "the lease to be queued", func(r *Raylet) bool {
		for _, l := range r.queue {
			if l.id[0] == counter {
				return true
			}
		}
		return false
	})
	select {
	case c := <-ch:
		t.Fatalf("lease answered early: %v %v", c.rep, c.err)
	default:
	}
}

func (tn *testNode) available(name string) float64 {
	tn.r.mu.Lock()
	defer tn.r.mu.Unlock()
	return tn.r.res.Available()[name]
}

func sessionLogs(tn *testNode) string { return filepath.Join(tn.r.cfg.SessionDir, "logs") }

// driver registers a driver for job n and announces its port.
func (tn *testNode) driver(t *testing.T, n byte) (*sockClient, []byte, *fakeCoreWorker, int) {
	t.Helper()
	sock, err := dialSock(tn.r.cfg.RayletSocket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sock.conn.Close() })
	wid := append(jobID(n), make([]byte, 24)...)
	for i := 4; i < 28; i++ {
		wid[i] = 0xff
	}
	port, _, ok, err := sock.register(workerTypeDriver, wid, 4242, jobID(n), nil)
	if err != nil || !ok {
		t.Fatalf("driver register: ok=%v err=%v", ok, err)
	}
	cw := &fakeCoreWorker{rec: newRecorder()}
	srv, p, err := serveCoreWorker("127.0.0.1:"+itoa(int(port)), cw)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	if err := sock.announce(port, "python driver.py"); err != nil {
		t.Fatal(err)
	}
	if _, err := sock.expect(msgAnnounceWorkerPortReply); err != nil {
		t.Fatal(err)
	}
	return sock, wid, cw, p
}

func parseAnnounceReply(body []byte) bool {
	return fb.GetRootAsAnnounceWorkerPortReply(body, 0).Success()
}

func dialNM(t *testing.T, port int) raypb.NodeManagerServiceClient {
	t.Helper()
	conn, err := grpc.NewClient("127.0.0.1:"+itoa(port), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return raypb.NewNodeManagerServiceClient(conn)
}

func waitLeaseWithin(t *testing.T, ch chan leaseCall, d time.Duration) *raypb.RequestWorkerLeaseReply {
	t.Helper()
	select {
	case c := <-ch:
		if c.err != nil {
			t.Fatalf("RequestWorkerLease: %v", c.err)
		}
		return c.rep
	case <-time.After(d):
		t.Fatal("lease not answered")
		return nil
	}
}

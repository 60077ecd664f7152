package gcsserver

import (
	"bytes"
	"context"
	"crypto/rand"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/gray-cluster/gray/gcs"
	"github.com/gray-cluster/gray/internal/leakcheck"
	"github.com/gray-cluster/gray/internal/testlog"
	"github.com/gray-cluster/gray/proto/ray/autoscalerpb"
	"github.com/gray-cluster/gray/proto/ray/raypb"
)

func TestMain(m *testing.M) { leakcheck.Main(m, "gcsserver") }

// env is a running server with clients of every service.
type env struct {
	t    *testing.T
	srv  *Server
	kv   *gcs.StoreKV
	addr string
	cid  []byte
	cc   *grpc.ClientConn

	node  raypb.NodeInfoGcsServiceClient
	kvc   raypb.InternalKVGcsServiceClient
	job   raypb.JobInfoGcsServiceClient
	wrk   raypb.WorkerInfoGcsServiceClient
	act   raypb.ActorInfoGcsServiceClient
	pg    raypb.PlacementGroupInfoGcsServiceClient
	ctrl  raypb.ControlPlanePubSubGcsServiceClient
	obs   raypb.ObservabilityPubSubServiceClient
	res   raypb.NodeResourceInfoGcsServiceClient
	task  raypb.TaskInfoGcsServiceClient
	auto  autoscalerpb.AutoscalerStateServiceClient
	renv  raypb.RuntimeEnvGcsServiceClient
	ctx   context.Context // carries the cluster id metadata
	close func()
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func newEnv(t *testing.T, tweak func(*Config)) *env {
	t.Helper()
	cid := randBytes(ClusterIDSize)
	kv := gcs.NewMemKV()
	cfg := Config{KV: kv, ClusterID: cid, Logger: testlog.New(t), ResourcePollPeriod: -1, RetryDelay: 20 * time.Millisecond}
	if tweak != nil {
		tweak(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := srv.NewGRPCServer()
	served := make(chan struct{})
	go func() { defer close(served); _ = g.Serve(lis) }()
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	e := &env{
		t: t, srv: srv, kv: kv, addr: lis.Addr().String(), cid: cid, cc: cc,
		node: raypb.NewNodeInfoGcsServiceClient(cc), kvc: raypb.NewInternalKVGcsServiceClient(cc),
		job: raypb.NewJobInfoGcsServiceClient(cc), wrk: raypb.NewWorkerInfoGcsServiceClient(cc),
		act: raypb.NewActorInfoGcsServiceClient(cc), pg: raypb.NewPlacementGroupInfoGcsServiceClient(cc),
		ctrl: raypb.NewControlPlanePubSubGcsServiceClient(cc), obs: raypb.NewObservabilityPubSubServiceClient(cc),
		res: raypb.NewNodeResourceInfoGcsServiceClient(cc), task: raypb.NewTaskInfoGcsServiceClient(cc),
		auto: autoscalerpb.NewAutoscalerStateServiceClient(cc), renv: raypb.NewRuntimeEnvGcsServiceClient(cc),
	}
	e.ctx = metadata.AppendToOutgoingContext(context.Background(), clusterIDKey, hexID(cid))
	e.close = func() {
		_ = cc.Close()
		srv.Close()
		g.Stop()
		<-served
	}
	t.Cleanup(e.close)
	return e
}

// cctx is a per-call context with a deadline.
func (e *env) cctx() context.Context {
	ctx, cancel := context.WithTimeout(e.ctx, 10*time.Second)
	e.t.Cleanup(cancel)
	return ctx
}

// subscriber is a test-side GCS subscriber on the control plane service.
type testSub struct {
	e         *env
	id        []byte
	pub       []byte
	processed int64
}

func (e *env) subscribe(ch raypb.ChannelType, key []byte) *testSub {
	e.t.Helper()
	s := &testSub{e: e, id: randBytes(28), pub: bytes.Repeat([]byte{0xff}, 28)}
	s.add(ch, key)
	return s
}

func (s *testSub) add(ch raypb.ChannelType, key []byte) {
	s.e.t.Helper()
	_, err := s.e.ctrl.GcsSubscriberCommandBatch(s.e.cctx(), &raypb.GcsSubscriberCommandBatchRequest{
		SubscriberId: s.id,
		Commands:     []*raypb.Command{{ChannelType: ch, KeyId: key, CommandMessageOneOf: &raypb.Command_SubscribeMessage{SubscribeMessage: &raypb.SubMessage{}}}},
	})
	if err != nil {
		s.e.t.Fatal(err)
	}
}

// next polls until a message matching ok arrives (or the deadline passes).
func (s *testSub) next(ok func(*raypb.PubMessage) bool) *raypb.PubMessage {
	s.e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(s.e.ctx, 3*time.Second)
		r, err := s.e.ctrl.GcsSubscriberPoll(ctx, &raypb.GcsSubscriberPollRequest{SubscriberId: s.id, MaxProcessedSequenceId: s.processed, PublisherId: s.pub})
		cancel()
		if err != nil {
			s.e.t.Fatalf("poll: %v", err)
		}
		if !bytes.Equal(r.GetPublisherId(), s.pub) {
			s.pub = r.GetPublisherId()
			s.processed = 0
		}
		for _, m := range r.GetPubMessages() {
			if m.GetSequenceId() <= s.processed {
				continue
			}
			s.processed = m.GetSequenceId()
			if ok == nil || ok(m) {
				return m
			}
		}
	}
	s.e.t.Fatal("no matching pub message before the deadline")
	return nil
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

package gcsserver

import (
	"bytes"
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/gray-cluster/gray/proto/ray/commonpb"
	"github.com/gray-cluster/gray/proto/ray/raypb"
)

func TestClusterIDAndMetadataCheck(t *testing.T) {
	e := newEnv(t, nil)
	r, err := e.node.GetClusterId(context.Background(), &raypb.GetClusterIdRequest{})
	if err != nil || !bytes.Equal(r.GetClusterId(), e.cid) {
		t.Fatalf("GetClusterId = %x, %v; want %x", r.GetClusterId(), err, e.cid)
	}
	// No metadata: accepted (Python clients do not send it).
	if _, err := e.kvc.InternalKVExists(context.Background(), &raypb.InternalKVExistsRequest{Key: []byte("k")}); err != nil {
		t.Fatalf("call without cluster id: %v", err)
	}
	h, err := healthpb.NewHealthClient(e.cc).Check(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health = %v, %v", h, err)
	}
	bad := metadata.AppendToOutgoingContext(context.Background(), clusterIDKey, hexID(randBytes(28)))
	_, err = e.kvc.InternalKVExists(bad, &raypb.InternalKVExistsRequest{Key: []byte("k")})
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("wrong cluster id: err %v, want Unauthenticated", err)
	}
}

func TestKV(t *testing.T) {
	e := newEnv(t, nil)
	ns := []byte("fun")
	put := func(k, v string, over bool) bool {
		r, err := e.kvc.InternalKVPut(e.cctx(), &raypb.InternalKVPutRequest{Namespace: ns, Key: []byte(k), Value: []byte(v), Overwrite: over})
		if err != nil {
			t.Fatal(err)
		}
		return r.GetAdded()
	}
	if !put("a:1", "x", false) {
		t.Fatal("first put not added")
	}
	if put("a:1", "y", false) {
		t.Fatal("second put reported added")
	}
	g, _ := e.kvc.InternalKVGet(e.cctx(), &raypb.InternalKVGetRequest{Namespace: ns, Key: []byte("a:1")})
	if string(g.GetValue()) != "x" || g.GetStatus().GetCode() != 0 {
		t.Fatalf("get after no-overwrite put = %q %v", g.GetValue(), g.GetStatus())
	}
	put("a:1", "y", true)
	put("a:2", "z", true)
	put("b:1", "w", true)
	g, _ = e.kvc.InternalKVGet(e.cctx(), &raypb.InternalKVGetRequest{Namespace: ns, Key: []byte("a:1")})
	if string(g.GetValue()) != "y" {
		t.Fatalf("overwrite lost: %q", g.GetValue())
	}
	miss, _ := e.kvc.InternalKVGet(e.cctx(), &raypb.InternalKVGetRequest{Namespace: []byte("other"), Key: []byte("a:1")})
	if miss.GetStatus().GetCode() != codeNotFound || miss.GetStatus().GetMessage() != "Failed to find the key" {
		t.Fatalf("miss status = %v", miss.GetStatus())
	}
	keys, _ := e.kvc.InternalKVKeys(e.cctx(), &raypb.InternalKVKeysRequest{Namespace: ns, Prefix: []byte("a:")})
	if len(keys.GetResults()) != 2 || string(keys.GetResults()[0]) != "a:1" {
		t.Fatalf("keys = %q", keys.GetResults())
	}
	mg, _ := e.kvc.InternalKVMultiGet(e.cctx(), &raypb.InternalKVMultiGetRequest{Namespace: ns, Keys: [][]byte{[]byte("a:2"), []byte("nope")}})
	if len(mg.GetResults()) != 1 || string(mg.GetResults()[0].GetValue()) != "z" {
		t.Fatalf("multiget = %v", mg.GetResults())
	}
	ex, _ := e.kvc.InternalKVExists(e.cctx(), &raypb.InternalKVExistsRequest{Namespace: ns, Key: []byte("b:1")})
	if !ex.GetExists() {
		t.Fatal("exists false")
	}
	d, _ := e.kvc.InternalKVDel(e.cctx(), &raypb.InternalKVDelRequest{Namespace: ns, Key: []byte("a:"), DelByPrefix: true})
	if d.GetDeletedNum() != 2 {
		t.Fatalf("del by prefix = %d", d.GetDeletedNum())
	}
	if _, ok, _ := e.kv.Get(context.Background(), ns, []byte("b:1")); !ok {
		t.Fatal("del by prefix removed another key")
	}
	cfg, _ := e.kvc.GetInternalConfig(e.cctx(), &raypb.GetInternalConfigRequest{})
	if cfg.GetConfig() != defaultSystemConfig {
		t.Fatalf("internal config = %q", cfg.GetConfig())
	}
}

func testNode(id []byte, ip string, port int32, head bool, res map[string]float64) *raypb.GcsNodeInfo {
	return &raypb.GcsNodeInfo{
		NodeId: id, NodeManagerAddress: ip, NodeManagerPort: port, ObjectManagerPort: port + 1,
		NodeName: ip, IsHeadNode: head, ResourcesTotal: res,
		RayletSocketName: "/tmp/s/raylet", ObjectStoreSocketName: "/tmp/s/plasma",
	}
}

func TestNodesRegisterQueryUnregister(t *testing.T) {
	e := newEnv(t, nil)
	live := e.subscribe(raypb.ChannelType_GCS_NODE_ADDRESS_AND_LIVENESS_CHANNEL, nil)
	n1, n2 := randBytes(28), randBytes(28)
	for _, n := range []*raypb.GcsNodeInfo{
		testNode(n1, "10.0.0.1", 14500, true, map[string]float64{"CPU": 2}),
		testNode(n2, "10.0.0.2", 14510, false, map[string]float64{"CPU": 1, "GPU": 1}),
	} {
		if r, err := e.node.RegisterNode(e.cctx(), &raypb.RegisterNodeRequest{NodeInfo: n}); err != nil || r.GetStatus().GetCode() != 0 {
			t.Fatalf("register: %v %v", r, err)
		}
	}
	m := live.next(nil)
	if !bytes.Equal(m.GetKeyId(), n1) || m.GetNodeAddressAndLivenessMessage().GetNodeManagerPort() != 14500 {
		t.Fatalf("first liveness message = %v", m)
	}

	alive := raypb.GcsNodeInfo_ALIVE
	sel := func(s ...*raypb.GetAllNodeInfoRequest_NodeSelector) []*raypb.GcsNodeInfo {
		r, err := e.node.GetAllNodeInfo(e.cctx(), &raypb.GetAllNodeInfoRequest{NodeSelectors: s, StateFilter: &alive})
		if err != nil {
			t.Fatal(err)
		}
		return r.GetNodeInfoList()
	}
	if got := sel(); len(got) != 2 {
		t.Fatalf("all alive = %d nodes", len(got))
	}
	if got := sel(&raypb.GetAllNodeInfoRequest_NodeSelector{NodeSelector: &raypb.GetAllNodeInfoRequest_NodeSelector_NodeId{NodeId: n2}}); len(got) != 1 || !bytes.Equal(got[0].GetNodeId(), n2) {
		t.Fatalf("by node id = %v", got)
	}
	if got := sel(&raypb.GetAllNodeInfoRequest_NodeSelector{NodeSelector: &raypb.GetAllNodeInfoRequest_NodeSelector_IsHeadNode{IsHeadNode: true}}); len(got) != 1 || !bytes.Equal(got[0].GetNodeId(), n1) {
		t.Fatalf("head = %v", got)
	}
	if got := sel(&raypb.GetAllNodeInfoRequest_NodeSelector{NodeSelector: &raypb.GetAllNodeInfoRequest_NodeSelector_NodeIpAddress{NodeIpAddress: "10.0.0.2"}}, &raypb.GetAllNodeInfoRequest_NodeSelector{NodeSelector: &raypb.GetAllNodeInfoRequest_NodeSelector_NodeId{NodeId: randBytes(28)}}); len(got) != 1 {
		t.Fatalf("by ip or unknown id = %v", got)
	}
	ca, _ := e.node.CheckAlive(e.cctx(), &raypb.CheckAliveRequest{NodeIds: [][]byte{n1, randBytes(28)}})
	if ca.GetRayVersion() != "2.60.0" || len(ca.GetRayletAlive()) != 2 || !ca.GetRayletAlive()[0] || ca.GetRayletAlive()[1] {
		t.Fatalf("check alive = %v", ca)
	}
	tot, _ := e.res.GetAllTotalResources(e.cctx(), &raypb.GetAllTotalResourcesRequest{})
	if len(tot.GetResourcesList()) != 2 || tot.GetResourcesList()[1].GetResourcesTotal()["GPU"] != 1 {
		t.Fatalf("total resources = %v", tot)
	}

	_, err := e.node.UnregisterNode(e.cctx(), &raypb.UnregisterNodeRequest{NodeId: n2, NodeDeathInfo: &commonpb.NodeDeathInfo{Reason: commonpb.NodeDeathInfo_EXPECTED_TERMINATION, ReasonMessage: "bye"}})
	if err != nil {
		t.Fatal(err)
	}
	m = live.next(func(m *raypb.PubMessage) bool {
		return bytes.Equal(m.GetKeyId(), n2) && m.GetNodeAddressAndLivenessMessage().GetState() == raypb.GcsNodeInfo_DEAD
	})
	if m.GetNodeAddressAndLivenessMessage().GetDeathInfo().GetReasonMessage() != "bye" {
		t.Fatalf("death info = %v", m)
	}
	if got := sel(); len(got) != 1 {
		t.Fatalf("alive after unregister = %d", len(got))
	}
	dead := raypb.GcsNodeInfo_DEAD
	lv, _ := e.node.GetAllNodeAddressAndLiveness(e.cctx(), &raypb.GetAllNodeAddressAndLivenessRequest{StateFilter: &dead})
	if len(lv.GetNodeInfoList()) != 1 || !bytes.Equal(lv.GetNodeInfoList()[0].GetNodeId(), n2) {
		t.Fatalf("dead liveness = %v", lv)
	}
}

func TestUnreachableRayletDies(t *testing.T) {
	// A port nobody listens on.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := int32(lis.Addr().(*net.TCPAddr).Port)
	lis.Close()
	e := newEnv(t, func(c *Config) {
		c.ResourcePollPeriod = 20 * time.Millisecond
		c.NodeDeadAfter = 200 * time.Millisecond
	})
	sub := e.subscribe(raypb.ChannelType_GCS_NODE_INFO_CHANNEL, nil)
	id := randBytes(28)
	if _, err := e.node.RegisterNode(e.cctx(), &raypb.RegisterNodeRequest{NodeInfo: testNode(id, "127.0.0.1", port, true, map[string]float64{"CPU": 1})}); err != nil {
		t.Fatal(err)
	}
	m := sub.next(func(m *raypb.PubMessage) bool { return m.GetNodeInfoMessage().GetState() == raypb.GcsNodeInfo_DEAD })
	if m.GetNodeInfoMessage().GetDeathInfo().GetReason() != commonpb.NodeDeathInfo_UNEXPECTED_TERMINATION {
		t.Fatalf("death = %v", m.GetNodeInfoMessage().GetDeathInfo())
	}
}

func TestJobs(t *testing.T) {
	e := newEnv(t, nil)
	sub := e.subscribe(raypb.ChannelType_GCS_JOB_CHANNEL, nil)
	for want := int32(1); want <= 2; want++ {
		r, _ := e.job.GetNextJobID(e.cctx(), &raypb.GetNextJobIDRequest{})
		if r.GetJobId() != want {
			t.Fatalf("next job id = %d, want %d", r.GetJobId(), want)
		}
	}
	jid := []byte{1, 0, 0, 0}
	_, err := e.job.AddJob(e.cctx(), &raypb.AddJobRequest{Data: &raypb.JobTableData{JobId: jid, DriverPid: 42, Entrypoint: "python x.py",
		DriverAddress: &commonpb.Address{IpAddress: "10.0.0.1", Port: 1234}}})
	if err != nil {
		t.Fatal(err)
	}
	m := sub.next(nil)
	if !bytes.Equal(m.GetKeyId(), jid) || m.GetJobMessage().GetDriverPid() != 42 || m.GetJobMessage().GetIsDead() {
		t.Fatalf("job message = %v", m)
	}
	_, _ = e.job.AddJob(e.cctx(), &raypb.AddJobRequest{Data: &raypb.JobTableData{JobId: []byte{2, 0, 0, 0}}})
	_, _ = e.job.MarkJobFinished(e.cctx(), &raypb.MarkJobFinishedRequest{JobId: jid})
	m = sub.next(func(m *raypb.PubMessage) bool { return bytes.Equal(m.GetKeyId(), jid) })
	if !m.GetJobMessage().GetIsDead() || m.GetJobMessage().GetEndTime() == 0 {
		t.Fatalf("finished job message = %v", m)
	}
	// A job whose driver's node dies is finished.
	drvNode := randBytes(28)
	_, _ = e.node.RegisterNode(e.cctx(), &raypb.RegisterNodeRequest{NodeInfo: testNode(drvNode, "10.0.0.9", 1, false, nil)})
	_, _ = e.job.AddJob(e.cctx(), &raypb.AddJobRequest{Data: &raypb.JobTableData{JobId: []byte{3, 0, 0, 0}, DriverAddress: &commonpb.Address{NodeId: drvNode}}})
	_, _ = e.node.UnregisterNode(e.cctx(), &raypb.UnregisterNodeRequest{NodeId: drvNode})
	m = sub.next(func(m *raypb.PubMessage) bool { return m.GetKeyId()[0] == 3 && m.GetJobMessage().GetIsDead() })
	f3 := "3"
	if j3, _ := e.job.GetAllJobInfo(e.cctx(), &raypb.GetAllJobInfoRequest{JobOrSubmissionId: &f3}); len(j3.GetJobInfoList()) != 1 || !j3.GetJobInfoList()[0].GetIsDead() {
		t.Fatalf("job 3 after its driver's node died = %v", j3)
	}

	all, _ := e.job.GetAllJobInfo(e.cctx(), &raypb.GetAllJobInfoRequest{})
	if len(all.GetJobInfoList()) != 3 || !all.GetJobInfoList()[0].GetIsDead() || all.GetJobInfoList()[1].GetIsDead() {
		t.Fatalf("all jobs = %v", all)
	}
	f := "02000000"
	one, _ := e.job.GetAllJobInfo(e.cctx(), &raypb.GetAllJobInfoRequest{JobOrSubmissionId: &f})
	if len(one.GetJobInfoList()) != 1 || one.GetJobInfoList()[0].GetJobId()[0] != 2 {
		t.Fatalf("filtered jobs = %v", one)
	}
	lim := int32(1)
	lm, _ := e.job.GetAllJobInfo(e.cctx(), &raypb.GetAllJobInfoRequest{Limit: &lim})
	if len(lm.GetJobInfoList()) != 1 {
		t.Fatalf("limited jobs = %d", len(lm.GetJobInfoList()))
	}
}

func TestWorkers(t *testing.T) {
	e := newEnv(t, nil)
	sub := e.subscribe(raypb.ChannelType_GCS_WORKER_DELTA_CHANNEL, nil)
	wid, nid := randBytes(28), randBytes(28)
	_, err := e.wrk.AddWorkerInfo(e.cctx(), &raypb.AddWorkerInfoRequest{WorkerData: &raypb.WorkerTableData{
		IsAlive: true, WorkerAddress: &commonpb.Address{WorkerId: wid, NodeId: nid, IpAddress: "10.0.0.1", Port: 5}, Pid: 77,
		WorkerType: commonpb.WorkerType_DRIVER, WorkerInfo: map[string][]byte{"driver_id": wid},
	}})
	if err != nil {
		t.Fatal(err)
	}
	g, _ := e.wrk.GetWorkerInfo(e.cctx(), &raypb.GetWorkerInfoRequest{WorkerId: wid})
	if g.GetWorkerTableData().GetPid() != 77 {
		t.Fatalf("get worker = %v", g)
	}
	_, _ = e.wrk.UpdateWorkerNumPausedThreads(e.cctx(), &raypb.UpdateWorkerNumPausedThreadsRequest{WorkerId: wid, NumPausedThreadsDelta: 2})
	paused := true
	pw, _ := e.wrk.GetAllWorkerInfo(e.cctx(), &raypb.GetAllWorkerInfoRequest{Filters: &raypb.GetAllWorkerInfoRequest_Filters{ExistPausedThreads: &paused}})
	if len(pw.GetWorkerTableData()) != 1 {
		t.Fatalf("paused filter = %v", pw)
	}
	exit := commonpb.WorkerExitType_SYSTEM_ERROR
	detail := "segfault"
	_, err = e.wrk.ReportWorkerFailure(e.cctx(), &raypb.ReportWorkerFailureRequest{WorkerFailure: &raypb.WorkerTableData{
		WorkerAddress: &commonpb.Address{WorkerId: wid, NodeId: nid}, ExitType: &exit, ExitDetail: &detail,
	}})
	if err != nil {
		t.Fatal(err)
	}
	m := sub.next(nil)
	if !bytes.Equal(m.GetWorkerDeltaMessage().GetWorkerId(), wid) || !bytes.Equal(m.GetWorkerDeltaMessage().GetNodeId(), nid) {
		t.Fatalf("worker delta = %v", m)
	}
	aliveF := false
	dw, _ := e.wrk.GetAllWorkerInfo(e.cctx(), &raypb.GetAllWorkerInfoRequest{Filters: &raypb.GetAllWorkerInfoRequest_Filters{IsAlive: &aliveF}})
	if len(dw.GetWorkerTableData()) != 1 || dw.GetWorkerTableData()[0].GetExitDetail() != "segfault" || dw.GetWorkerTableData()[0].GetPid() != 77 {
		t.Fatalf("dead workers = %v", dw)
	}
}

func TestLargeKVValue(t *testing.T) {
	e := newEnv(t, nil)
	big := bytes.Repeat([]byte("x"), 8<<20) // a large pickled function
	if _, err := e.kvc.InternalKVPut(e.cctx(), &raypb.InternalKVPutRequest{Namespace: []byte("fun"), Key: []byte("f"), Value: big}, grpc.MaxCallSendMsgSize(MaxMessageSize)); err != nil {
		t.Fatal(err)
	}
	g, err := e.kvc.InternalKVGet(e.cctx(), &raypb.InternalKVGetRequest{Namespace: []byte("fun"), Key: []byte("f")}, grpc.MaxCallRecvMsgSize(MaxMessageSize))
	if err != nil || len(g.GetValue()) != len(big) {
		t.Fatalf("get = %d bytes, %v", len(g.GetValue()), err)
	}
}

package nodemanager

import (
	"bytes"
	"context"
	"net"
	"testing"

	"github.com/gray-cluster/gray/native/ipcframe"
	commonpb "github.com/gray-cluster/gray/proto/ray/commonpb"
	raypb "github.com/gray-cluster/gray/proto/ray/raypb"
	"google.golang.org/protobuf/proto"
)

func TestRegisterNodeInfo(t *testing.T) {
	tn := newTestNode(t, true, func(c *Config) { c.IsHead = true; c.Labels = map[string]string{"zone": "a"} })
	calls := tn.gcs.rec.get("RegisterNode")
	if len(calls) != 1 {
		t.Fatalf("RegisterNode calls: %d", len(calls))
	}
	info := calls[0].(*raypb.RegisterNodeRequest).GetNodeInfo()
	if !bytes.Equal(info.GetNodeId(), tn.r.cfg.NodeID) || info.GetNodeManagerPort() != int32(tn.r.Port()) ||
		info.GetRayletSocketName() != tn.r.cfg.RayletSocket || info.GetObjectStoreSocketName() != tn.r.cfg.PlasmaSocket ||
		!info.GetIsHeadNode() || info.GetState() != raypb.GcsNodeInfo_ALIVE || info.GetResourcesTotal()["CPU"] != 2 ||
		info.GetLabels()["ray.io/node-id"] != tn.r.nodeID.String() || info.GetLabels()["zone"] != "a" ||
		info.GetSessionDir() != tn.r.cfg.SessionDir || info.GetTempDir() != tn.dir || info.GetStartTimeMs() == 0 {
		t.Fatalf("node info: %v", info)
	}
	rep, err := tn.nm.GetSystemConfig(context.Background(), &raypb.GetSystemConfigRequest{})
	if err != nil || rep.GetSystemConfig() == "" {
		t.Fatalf("GetSystemConfig: %v %v", rep, err)
	}
	tn.r.Close()
	if len(tn.gcs.rec.get("UnregisterNode")) != 1 {
		t.Fatal("Close did not unregister the node")
	}
}

func TestDriverRegisterAnnounceDisconnect(t *testing.T) {
	tn := newTestNode(t, true, func(c *Config) { c.MinWorkerPort, c.MaxWorkerPort = 20000, 40000 })
	sock, err := dialSock(tn.r.cfg.RayletSocket)
	if err != nil {
		t.Fatal(err)
	}
	defer sock.conn.Close()
	wid := append(jobID(1), bytes.Repeat([]byte{0xff}, 24)...)
	jc, _ := proto.Marshal(&commonpb.JobConfig{RayNamespace: "ns1"})
	port, nodeID, ok, err := sock.register(workerTypeDriver, wid, 4242, jobID(1), jc)
	if err != nil || !ok {
		t.Fatalf("register: ok=%v err=%v", ok, err)
	}
	if !bytes.Equal(nodeID, tn.r.cfg.NodeID) || port < 20000 || port > 40000 {
		t.Fatalf("reply: node %x port %d", nodeID, port)
	}
	if err := sock.announce(port, "python my_driver.py"); err != nil {
		t.Fatal(err)
	}
	body, err := sock.expect(msgAnnounceWorkerPortReply)
	if err != nil {
		t.Fatal(err)
	}
	if len(body) == 0 {
		t.Fatal("empty AnnounceWorkerPortReply")
	}
	jobs := tn.gcs.rec.get("AddJob")
	if len(jobs) != 1 {
		t.Fatalf("AddJob before the reply: %d calls", len(jobs))
	}
	jd := jobs[0].(*raypb.AddJobRequest).GetData()
	if !bytes.Equal(jd.GetJobId(), jobID(1)) || jd.GetDriverPid() != 4242 || jd.GetEntrypoint() != "python my_driver.py" ||
		jd.GetConfig().GetRayNamespace() != "ns1" || jd.GetIsDead() || jd.GetDriverAddress().GetPort() != port ||
		!bytes.Equal(jd.GetDriverAddress().GetWorkerId(), wid) || jd.GetDriverIpAddress() != "127.0.0.1" {
		t.Fatalf("job data: %v", jd)
	}
	if err := sock.disconnect(int32(commonpb.WorkerExitType_INTENDED_USER_EXIT), "Shutdown by ray.shutdown()."); err != nil {
		t.Fatal(err)
	}
	tn.gcs.rec.waitFor(t, "MarkJobFinished", atLeast(1))
	fails := tn.gcs.rec.waitFor(t, "ReportWorkerFailure", atLeast(1))
	wf := fails[0].(*raypb.ReportWorkerFailureRequest).GetWorkerFailure()
	if wf.GetExitType() != commonpb.WorkerExitType_INTENDED_USER_EXIT || wf.GetExitDetail() != "Shutdown by ray.shutdown()." ||
		!bytes.Equal(wf.GetWorkerAddress().GetWorkerId(), wid) || wf.GetWorkerType() != commonpb.WorkerType_DRIVER {
		t.Fatalf("worker failure: %v", wf)
	}
	// The raylet closes the connection after the reply.
	if _, err := sock.rd.Read(); err == nil {
		t.Fatal("connection still open after DisconnectClientReply")
	}
}

func TestAddJobFailureIsReported(t *testing.T) {
	tn := newTestNode(t, true, nil)
	tn.gcs.addJobErr = &raypb.GcsStatus{Code: 5, Message: "boom"}
	sock, err := dialSock(tn.r.cfg.RayletSocket)
	if err != nil {
		t.Fatal(err)
	}
	defer sock.conn.Close()
	wid := append(jobID(2), bytes.Repeat([]byte{0xff}, 24)...)
	port, _, _, err := sock.register(workerTypeDriver, wid, 1, jobID(2), nil)
	if err != nil {
		t.Fatal(err)
	}
	sock.announce(port, "x")
	body, err := sock.expect(msgAnnounceWorkerPortReply)
	if err != nil {
		t.Fatal(err)
	}
	if got := parseAnnounceReply(body); got {
		t.Fatal("AnnounceWorkerPortReply success despite AddJob failure")
	}
}

func TestUnknownWorkerIsRefused(t *testing.T) {
	tn := newTestNode(t, true, nil)
	sock, err := dialSock(tn.r.cfg.RayletSocket)
	if err != nil {
		t.Fatal(err)
	}
	defer sock.conn.Close()
	_, _, ok, err := sock.register(workerTypeWorker, bytes.Repeat([]byte{3}, 28), 1, []byte{0xff, 0xff, 0xff, 0xff}, nil)
	if err != nil || ok {
		t.Fatalf("unknown worker: ok=%v err=%v", ok, err)
	}
}

// A client that sends garbage is dropped; others are served.
func TestMalformedClientDropped(t *testing.T) {
	tn := newTestNode(t, true, nil)
	cases := map[string][]byte{
		"bad cookie":        append(bytes.Repeat([]byte{1}, 24), 0),
		"bad flatbuffer":    ipcframe.Append(nil, msgRegisterClientRequest, []byte{0xff, 0xff, 0xff, 0x7f, 1, 2, 3, 4}),
		"before register":   ipcframe.Append(nil, msgWaitRequest, nil),
		"unknown type":      ipcframe.Append(nil, 99, nil),
		"short flatbuffer":  ipcframe.Append(nil, msgRegisterClientRequest, []byte{1}),
		"huge declared len": ipcframe.Append(nil, msgRegisterClientRequest, nil)[:16],
	}
	for name, raw := range cases {
		c, err := net.Dial("unix", tn.r.cfg.RayletSocket)
		if err != nil {
			t.Fatal(err)
		}
		if name == "huge declared len" {
			raw = append(raw, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f)
		}
		c.Write(raw)
		buf := make([]byte, 64)
		for {
			if _, err := c.Read(buf); err != nil {
				break // closed by the raylet (a refusal reply may come first)
			}
		}
		c.Close()
	}
	// A well-behaved driver still gets served.
	sock, _, _, _ := tn.driver(t, 3)
	if err := sock.disconnect(3, "bye"); err != nil {
		t.Fatal(err)
	}
}

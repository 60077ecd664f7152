package nodemanager

import (
	"bytes"
	"context"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	commonpb "github.com/gray-cluster/gray/proto/ray/commonpb"
	raypb "github.com/gray-cluster/gray/proto/ray/raypb"
)

// The test binary doubles as a fake default_worker.py: the raylet runs it
// as "python <script> --flags...". NM_FAKE_WORKER selects the behaviour.
func TestMain(m *testing.M) {
	if mode := os.Getenv("NM_FAKE_WORKER"); mode != "" {
		os.Exit(fakeWorkerMain(mode))
	}
	os.Exit(m.Run())
}

func flagValue(args []string, name string) string {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v
		}
	}
	return ""
}

// fakeWorkerMain registers, serves CoreWorkerService on the port it got,
// announces it and lives until its socket closes or it is told to exit.
// Mode "silent" never registers. It writes its argv and env to
// $NM_FAKE_WORKER_DUMP/<worker id>.
func fakeWorkerMain(mode string) int {
	args := os.Args[1:]
	id := flagValue(args, "worker-id")
	if d := os.Getenv("NM_FAKE_WORKER_DUMP"); d != "" {
		os.WriteFile(filepath.Join(d, id), []byte(strings.Join(args, "\n")+"\n--env--\n"+strings.Join(os.Environ(), "\n")), 0o644)
	}
	if mode == "silent" {
		select {}
	}
	wid, err := hex.DecodeString(id)
	if err != nil {
		return 2
	}
	sock, err := dialSock(flagValue(args, "raylet-name"))
	if err != nil {
		return 3
	}
	port, _, ok, err := sock.register(workerTypeWorker, wid, int64(os.Getpid()), []byte{0xff, 0xff, 0xff, 0xff}, nil)
	if err != nil || !ok {
		return 4
	}
	cw := &fakeCoreWorker{rec: newRecorder()}
	cw.onExit = func() {
		// Like a core worker: say goodbye, then exit once the raylet replied.
		b := buildDisconnect(int32(commonpb.WorkerExitType_INTENDED_SYSTEM_EXIT), "fake worker exiting")
		sock.send(msgDisconnectClientRequest, b)
	}
	if _, _, err := serveCoreWorker(":"+itoa(int(port)), cw); err != nil {
		return 5
	}
	if err := sock.announce(port, ""); err != nil {
		return 6
	}
	for {
		sock.conn.SetReadDeadline(time.Time{})
		if _, err := sock.rd.Read(); err != nil {
			return 0
		}
	}
}

func newProcessNode(t *testing.T, mode string, mutate func(*Config)) (*testNode, string) {
	dump, err := os.MkdirTemp("", "nmdump")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dump) })
	tn := newTestNode(t, false, func(c *Config) {
		c.Python = os.Args[0]
		c.RayDir = "/opt/ray"
		c.WorkerEnv = []string{"NM_FAKE_WORKER=" + mode, "NM_FAKE_WORKER_DUMP=" + dump}
		c.MinWorkerPort, c.MaxWorkerPort = 30000, 30999
		if mutate != nil {
			mutate(c)
		}
	})
	return tn, dump
}

func TestProcessWorkerCommandLine(t *testing.T) {
	tn, dump := newProcessNode(t, "serve", nil)
	ctx := context.Background()
	rep := waitLease(t, tn.requestAsync(ctx, leaseSpec(1, jobID(1), owner1, map[string]float64{"CPU": 1}), false))
	wid := hex.EncodeToString(rep.GetWorkerAddress().GetWorkerId())
	if p := rep.GetWorkerAddress().GetPort(); p < 30000 || p > 30999 {
		t.Fatalf("worker port %d outside the range", p)
	}
	raw, err := os.ReadFile(filepath.Join(dump, wid))
	if err != nil {
		t.Fatal(err)
	}
	argv, env, _ := strings.Cut(string(raw), "\n--env--\n")
	c := tn.r.cfg
	want := []string{
		"/opt/ray/_private/workers/default_worker.py",
		"--node-ip-address=127.0.0.1",
		"--node-manager-port=" + itoa(tn.r.Port()),
		"--object-store-name=" + c.PlasmaSocket,
		"--raylet-name=" + c.RayletSocket,
		"--redis-address=None",
		"--metrics-agent-port=0",
		"--logging-rotate-bytes=536870912",
		"--logging-rotate-backup-count=5",
		"--runtime-env-agent-port=0",
		"--gcs-address=" + c.GCSAddress,
		"--session-name=session_test",
		"--temp-dir=" + tn.dir,
		"--webui=",
		"--cluster-id=07",
		"--worker-id=" + wid,
	}
	lines := strings.Split(argv, "\n")
	for i, w := range want {
		if lines[i] != w {
			t.Fatalf("argv[%d] = %q, want %q\n%s", i+1, lines[i], w, argv)
		}
	}
	rest := lines[len(want):]
	if len(rest) != 3 || !strings.HasPrefix(rest[0], "--worker-launch-time-ms=") || rest[1] != "--node-id="+tn.r.nodeID.String() || rest[2] != "--runtime-env-hash=0" {
		t.Fatalf("argv tail: %q", rest)
	}
	for _, kv := range []string{"RAY_JOB_ID=01000000", "RAY_RAYLET_PID=" + itoa(os.Getpid()), "RAY_LD_PRELOAD_ON_WORKERS=0", "SPT_NOENV=1"} {
		if !strings.Contains("\n"+env+"\n", "\n"+kv+"\n") {
			t.Errorf("env lacks %s", kv)
		}
	}
}

// A worker process that dies while leased: failure reported, resources back.
func TestProcessWorkerKilled(t *testing.T) {
	tn, _ := newProcessNode(t, "serve", nil)
	ctx := context.Background()
	spec := leaseSpec(1, jobID(1), owner1, map[string]float64{"CPU": 2})
	rep := waitLease(t, tn.requestAsync(ctx, spec, false))
	if err := syscall.Kill(int(rep.GetWorkerPid()), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	fails := tn.gcs.rec.waitFor(t, "ReportWorkerFailure", atLeast(1))
	wf := fails[0].(*raypb.ReportWorkerFailureRequest).GetWorkerFailure()
	if wf.GetPid() != rep.GetWorkerPid() || wf.GetExitType() != commonpb.WorkerExitType_SYSTEM_ERROR {
		t.Fatalf("failure: %v", wf)
	}
	if got := tn.available("CPU"); got != 2 {
		t.Fatalf("CPU after the worker died: %v", got)
	}
	// The next lease gets a new worker.
	rep2 := waitLease(t, tn.requestAsync(ctx, leaseSpec(2, jobID(1), owner1, map[string]float64{"CPU": 1}), false))
	if bytes.Equal(rep2.GetWorkerAddress().GetWorkerId(), rep.GetWorkerAddress().GetWorkerId()) {
		t.Fatal("lease granted on the dead worker")
	}
}

// A worker that never registers is killed after WorkerRegisterTimeout.
func TestProcessWorkerRegisterTimeout(t *testing.T) {
	tn, dump := newProcessNode(t, "silent", func(c *Config) { c.WorkerRegisterTimeout = time.Second })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := tn.requestAsync(ctx, leaseSpec(1, jobID(1), owner1, map[string]float64{"CPU": 1}), false)
	fails := tn.gcs.rec.waitFor(t, "ReportWorkerFailure", atLeast(1))
	wf := fails[0].(*raypb.ReportWorkerFailureRequest).GetWorkerFailure()
	if !strings.Contains(wf.GetExitDetail(), "did not register") {
		t.Fatalf("failure detail: %q", wf.GetExitDetail())
	}
	files, _ := os.ReadDir(dump)
	if len(files) == 0 {
		t.Fatal("the silent worker never ran")
	}
	cancel()
	<-c
}

// Idle workers beyond the prestart count are asked to exit after the idle
// timeout, and exit.
func TestProcessIdleWorkerExits(t *testing.T) {
	tn, _ := newProcessNode(t, "serve", func(c *Config) { c.IdleWorkerTimeout = 300 * time.Millisecond })
	ctx := context.Background()
	rep := waitLease(t, tn.requestAsync(ctx, leaseSpec(1, jobID(1), owner1, map[string]float64{"CPU": 1}), false))
	tn.nm.ReturnWorkerLease(ctx, &raypb.ReturnWorkerLeaseRequest{LeaseId: leaseSpec(1, nil, owner1, nil).LeaseId})
	fails := tn.gcs.rec.waitFor(t, "ReportWorkerFailure", atLeast(1))
	wf := fails[0].(*raypb.ReportWorkerFailureRequest).GetWorkerFailure()
	if !bytes.Equal(wf.GetWorkerAddress().GetWorkerId(), rep.GetWorkerAddress().GetWorkerId()) ||
		wf.GetExitType() != commonpb.WorkerExitType_INTENDED_SYSTEM_EXIT {
		t.Fatalf("idle exit: %v", wf)
	}
}

// Workers that cannot start make the leases waiting for them fail instead
// of spinning.
func TestWorkerStartupFailure(t *testing.T) {
	tn := newTestNode(t, false, func(c *Config) {
		c.Python = "/nonexistent/python"
		c.RayDir = "/opt/ray"
	})
	rep := waitLease(t, tn.requestAsync(context.Background(), leaseSpec(1, jobID(1), owner1, map[string]float64{"CPU": 1}), false))
	if !rep.GetCanceled() || rep.GetFailureType() != raypb.RequestWorkerLeaseReply_SCHEDULING_CANCELLED_WORKER_STARTUP_FAILED ||
		!strings.Contains(rep.GetSchedulingFailureMessage(), "/nonexistent/python") {
		t.Fatalf("startup failure: %v", rep)
	}
}

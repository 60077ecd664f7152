package nodemanager

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gray-cluster/gray/internal/testlog"
	"github.com/gray-cluster/gray/native/plasma"
	commonpb "github.com/gray-cluster/gray/proto/ray/commonpb"
	raypb "github.com/gray-cluster/gray/proto/ray/raypb"
)

// venvPython is the python with the stock ray==2.60.0 wheel, from
// GRAY_PYTHON or the main checkout's venv.
func venvPython(t *testing.T) string {
	t.Helper()
	p := os.Getenv("GRAY_PYTHON")
	if p == "" {
		p = "/work/main/.venv/bin/python"
	}
	if _, err := os.Stat(p); err != nil {
		t.Skipf("no python with ray (GRAY_PYTHON or /work/main/.venv/bin/python): %v", err)
	}
	return p
}

// A stock default_worker.py started by the raylet registers on the socket,
// connects to the real plasma store, registers with the GCS and announces
// its port; the lease that asked for it is granted on it.
func TestRealDefaultWorker(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Python worker")
	}
	python := venvPython(t)
	g, gaddr := startFakeGCS(t)
	dir, err := os.MkdirTemp("", "nmr")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	session := filepath.Join(dir, "session_2026-12-03_00-00-00_000000_1")
	if err := os.MkdirAll(filepath.Join(session, "sockets"), 0o755); err != nil {
		t.Fatal(err)
	}
	logger := testlog.New(t)
	ps, err := plasma.New(plasma.Config{SocketPath: filepath.Join(session, "sockets", "plasma_store"), Capacity: 64 << 20, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := ps.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ps.Close() })
	nodeID := bytes.Repeat([]byte{0x5a}, 28)
	r, err := New(Config{
		NodeID: nodeID, NodeIP: "127.0.0.1", GCSAddress: gaddr,
		ClusterIDHex: strings.Repeat("07", 1) + strings.Repeat("00", 27),
		TempDir:      dir, SessionDir: session, SessionName: filepath.Base(session),
		Resources: map[string]float64{"CPU": 1}, Store: PlasmaStore(ps), Python: python,
		Logger: logger, LogPollInterval: 100 * time.Millisecond, KillGrace: 10 * time.Second,
		IdleWorkerTimeout: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	tn := &testNode{r: r, gcs: g}
	tn.nm = dialNM(t, r.Port())
	rep := waitLeaseWithin(t, tn.requestAsync(ctx, leaseSpec(1, jobID(1), owner1, map[string]float64{"CPU": 1}), false), 90*time.Second)
	a := rep.GetWorkerAddress()
	if a.GetPort() == 0 || len(a.GetWorkerId()) != 28 || rep.GetWorkerPid() == 0 {
		t.Fatalf("lease on a real worker: %v", rep)
	}
	infos := g.rec.waitFor(t, "AddWorkerInfo", atLeast(1))
	wi := infos[0].(*raypb.AddWorkerInfoRequest).GetWorkerData()
	if !bytes.Equal(wi.GetWorkerAddress().GetWorkerId(), a.GetWorkerId()) || wi.GetWorkerAddress().GetPort() != a.GetPort() {
		t.Fatalf("AddWorkerInfo: %v (lease %v)", wi, a)
	}
	// The worker's own log files exist where the log tailer looks.
	logs, _ := filepath.Glob(filepath.Join(session, "logs", "worker-*"))
	if len(logs) == 0 {
		t.Errorf("no worker log files in %s", filepath.Join(session, "logs"))
	}
	if _, err := tn.nm.ReturnWorkerLease(ctx, &raypb.ReturnWorkerLeaseRequest{LeaseId: leaseSpec(1, nil, owner1, nil).LeaseId}); err != nil {
		t.Fatal(err)
	}
	// Idle past IdleWorkerTimeout: the raylet sends Exit and the stock
	// worker says goodbye on the socket and exits by itself.
	fails := g.rec.waitFor(t, "ReportWorkerFailure", atLeast(1))
	wf := fails[0].(*raypb.ReportWorkerFailureRequest).GetWorkerFailure()
	if !bytes.Equal(wf.GetWorkerAddress().GetWorkerId(), a.GetWorkerId()) ||
		(wf.GetExitType() != commonpb.WorkerExitType_INTENDED_SYSTEM_EXIT && wf.GetExitType() != commonpb.WorkerExitType_INTENDED_USER_EXIT) {
		t.Fatalf("idle real worker's exit: %v", wf)
	}
	t.Logf("real worker exit: %v %q", wf.GetExitType(), wf.GetExitDetail())
}

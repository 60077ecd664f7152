package nodemanager

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	commonpb "github.com/gray-cluster/gray/proto/ray/commonpb"
	raypb "github.com/gray-cluster/gray/proto/ray/raypb"
)

func TestSystemConfigJSON(t *testing.T) {
	tn := newTestNode(t, true, func(c *Config) {
		c.SystemConfig = map[string]any{"enable_metrics_collection": nil, "enable_timeline": false}
	})
	rep, err := tn.nm.GetSystemConfig(context.Background(), &raypb.GetSystemConfigRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(rep.GetSystemConfig()), &m); err != nil {
		t.Fatal(err)
	}
	if _, ok := m["enable_metrics_collection"]; ok || m["enable_timeline"] != false || m["object_spilling_config"] != "" {
		t.Fatalf("system config: %v", m)
	}
}

func pgBundle(pg []byte, index int32, res map[string]float64) *commonpb.Bundle {
	return &commonpb.Bundle{BundleId: &commonpb.Bundle_BundleIdentifier{PlacementGroupId: pg, BundleIndex: index}, UnitResources: res}
}

func TestPlacementGroupBundles(t *testing.T) {
	tn := newTestNode(t, true, func(c *Config) { c.Resources = map[string]float64{"CPU": 2} })
	ctx := context.Background()
	pg := bytes.Repeat([]byte{0xab}, 18)
	pgHex := "abababababababababababababababababab"
	b := []*commonpb.Bundle{pgBundle(pg, 0, map[string]float64{"CPU": 1}), pgBundle(pg, 1, map[string]float64{"CPU": 1})}
	prep, err := tn.nm.PrepareBundleResources(ctx, &raypb.PrepareBundleResourcesRequest{BundleSpecs: b})
	if err != nil || !prep.GetSuccess() {
		t.Fatalf("prepare: %v %v", prep, err)
	}
	// No room for a third bundle; the failed prepare leaves nothing behind.
	prep, _ = tn.nm.PrepareBundleResources(ctx, &raypb.PrepareBundleResourcesRequest{BundleSpecs: []*commonpb.Bundle{pgBundle(pg, 2, map[string]float64{"CPU": 1})}})
	if prep.GetSuccess() {
		t.Fatal("prepared beyond capacity")
	}
	// A lease in bundle 0 waits for the commit.
	res := map[string]float64{"CPU_group_0_" + pgHex: 1, "CPU_group_" + pgHex: 1, "bundle_group_" + pgHex: 0.001}
	c := tn.requestAsync(ctx, leaseSpec(1, jobID(1), owner1, res), false)
	tn.notAnswered(t, c, 1)
	if _, err := tn.nm.CommitBundleResources(ctx, &raypb.CommitBundleResourcesRequest{BundleSpecs: b}); err != nil {
		t.Fatal(err)
	}
	rep := waitLease(t, c)
	w := tn.nextSpawn(t)
	names := map[string]bool{}
	for _, e := range rep.GetResourceMapping() {
		names[e.GetName()] = true
	}
	if !names["CPU_group_0_"+pgHex] || !names["CPU_group_"+pgHex] {
		t.Fatalf("mapping: %v", rep.GetResourceMapping())
	}
	// Removing the group kills the worker using it and frees everything.
	if _, err := tn.nm.RemovePlacementGroupBundles(ctx, &raypb.RemovePlacementGroupBundlesRequest{PlacementGroupId: pg}); err != nil {
		t.Fatal(err)
	}
	tn.gcs.rec.waitFor(t, "ReportWorkerFailure", atLeast(1))
	_ = w
	tn.r.mu.Lock()
	avail := tn.r.res.Available()
	tn.r.mu.Unlock()
	if len(avail) != 1 || avail["CPU"] != 2 {
		t.Fatalf("after removal: %v", avail)
	}
	// ReleaseUnusedBundles drops bundles the GCS no longer knows.
	tn.nm.PrepareBundleResources(ctx, &raypb.PrepareBundleResourcesRequest{BundleSpecs: b[:1]})
	tn.nm.ReleaseUnusedBundles(ctx, &raypb.ReleaseUnusedBundlesRequest{})
	if got := tn.available("CPU"); got != 2 {
		t.Fatalf("after ReleaseUnusedBundles: %v", got)
	}
}

func TestKillLocalActorAndCancelTask(t *testing.T) {
	tn := newTestNode(t, true, func(c *Config) {})
	ctx := context.Background()
	spec := leaseSpec(1, jobID(1), owner1, nil)
	spec.Type = commonpb.TaskType_ACTOR_CREATION_TASK
	spec.ActorId = bytes.Repeat([]byte{0xac}, 16)
	spec.RequiredPlacementResources = map[string]float64{"CPU": 1}
	rep := waitLease(t, tn.requestAsync(ctx, spec, false))
	w := tn.nextSpawn(t)
	if got := tn.available("CPU"); got != 2 {
		t.Fatalf("an actor with no running resources holds CPU: %v", got)
	}
	w.sock.send(msgActorCreationTaskDone, nil)
	cr, err := tn.nm.CancelLocalTask(ctx, &raypb.CancelLocalTaskRequest{IntendedTaskId: []byte("t"), ExecutorWorkerId: w.id[:], ForceKill: true})
	if err != nil || !cr.GetRequestedTaskRunning() || !cr.GetAttemptSucceeded() {
		t.Fatalf("CancelLocalTask: %v %v", cr, err)
	}
	if c := w.cw.rec.get("CancelTask"); len(c) != 1 || !c[0].(*raypb.CancelTaskRequest).GetForceKill() {
		t.Fatalf("CancelTask forwarded: %v", c)
	}
	if _, err := tn.nm.KillLocalActor(ctx, &raypb.KillLocalActorRequest{IntendedActorId: spec.ActorId,
		WorkerId: rep.GetWorkerAddress().GetWorkerId(), ForceKill: true}); err != nil {
		t.Fatal(err)
	}
	calls := w.cw.rec.waitFor(t, "KillActor", atLeast(1))
	if !bytes.Equal(calls[0].(*raypb.KillActorRequest).GetIntendedActorId(), spec.ActorId) {
		t.Fatalf("KillActor: %v", calls[0])
	}
	tn.gcs.rec.waitFor(t, "ReportWorkerFailure", atLeast(1))
	dead, _ := tn.nm.IsLocalWorkerDead(ctx, &raypb.IsLocalWorkerDeadRequest{WorkerId: w.id[:]})
	if !dead.GetIsDead() {
		t.Fatal("actor worker not dead after KillLocalActor")
	}
}

func TestPushErrorReachesGCS(t *testing.T) {
	tn := newTestNode(t, true, nil)
	waitLease(t, tn.requestAsync(context.Background(), leaseSpec(1, jobID(1), owner1, map[string]float64{"CPU": 1}), false))
	w := tn.nextSpawn(t)
	w.sock.send(msgPushErrorRequest, buildPushError(jobID(1), "task", "it broke", 12.5))
	calls := tn.gcs.rec.waitFor(t, "ReportJobError", atLeast(1))
	e := calls[0].(*raypb.ReportJobErrorRequest).GetJobError()
	if !bytes.Equal(e.GetJobId(), jobID(1)) || e.GetType() != "task" || e.GetErrorMessage() != "it broke" || e.GetTimestamp() != 12.5 {
		t.Fatalf("job error: %v", e)
	}
}

func TestWorkerLogsPublished(t *testing.T) {
	tn := newTestNode(t, true, func(c *Config) { c.LogPollInterval = 20 * 1e6 })
	logs := sessionLogs(tn)
	// The in-process fake worker registers with this process's pid.
	waitLease(t, tn.requestAsync(context.Background(), leaseSpec(1, jobID(1), owner1, map[string]float64{"CPU": 1}), false))
	w := tn.nextSpawn(t)
	pid := itoa(os.Getpid())
	path := filepath.Join(logs, "worker-"+w.id.String()+"-ffffffff-"+pid+".out")
	content := ":job_id:01000000\n:task_name:f\nhello from f\nsecond line\n:actor_name:Counter\nactor says hi\npartial"
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	var lines []*raypb.LogBatch
	tn.gcs.rec.waitFor(t, "GcsPublish", func(calls []any) bool {
		lines = nil
		for _, c := range calls {
			for _, m := range c.(*raypb.GcsPublishRequest).GetPubMessages() {
				if m.GetChannelType() != raypb.ChannelType_RAY_LOG_CHANNEL {
					t.Fatalf("channel %v", m.GetChannelType())
				}
				lines = append(lines, m.GetLogBatchMessage())
			}
		}
		return len(lines) >= 2
	})
	b0, b1 := lines[0], lines[1]
	if b0.GetPid() != pid || b0.GetJobId() != "01000000" || b0.GetTaskName() != "f" || b0.GetIsError() || b0.GetIp() != "127.0.0.1" ||
		len(b0.GetLines()) != 2 || b0.GetLines()[0] != "hello from f" {
		t.Fatalf("first batch: %v", b0)
	}
	if b1.GetActorName() != "Counter" || b1.GetTaskName() != "" || len(b1.GetLines()) != 1 || b1.GetLines()[0] != "actor says hi" {
		t.Fatalf("second batch: %v", b1)
	}
	// The partial line goes out once it is complete.
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(" line\n")
	f.Close()
	tn.gcs.rec.waitFor(t, "GcsPublish", func(calls []any) bool {
		for _, c := range calls {
			for _, m := range c.(*raypb.GcsPublishRequest).GetPubMessages() {
				if l := m.GetLogBatchMessage().GetLines(); len(l) == 1 && l[0] == "partial line" {
					return true
				}
			}
		}
		return false
	})
}

func TestCancelLeasesWithResourceShapes(t *testing.T) {
	tn := newTestNode(t, true, nil)
	ctx := context.Background()
	c := tn.requestAsync(ctx, leaseSpec(1, jobID(1), owner1, map[string]float64{"CPU": 8}), false)
	tn.notAnswered(t, c, 1)
	tn.nm.CancelLeasesWithResourceShapes(ctx, &raypb.CancelLeasesWithResourceShapesRequest{
		ResourceShapes: []*raypb.CancelLeasesWithResourceShapesRequest_ResourceShape{{ResourceShape: map[string]float64{"CPU": 8}}}})
	rep := waitLease(t, c)
	if !rep.GetCanceled() || rep.GetFailureType() != raypb.RequestWorkerLeaseReply_SCHEDULING_CANCELLED_UNSCHEDULABLE {
		t.Fatalf("cancelled by shape: %v", rep)
	}
}

func TestReleaseUnusedActorWorkers(t *testing.T) {
	tn := newTestNode(t, true, nil)
	ctx := context.Background()
	var ids [][]byte
	for n := byte(1); n <= 2; n++ {
		spec := leaseSpec(n, jobID(1), owner1, nil)
		spec.Type = commonpb.TaskType_ACTOR_CREATION_TASK
		spec.ActorId = bytes.Repeat([]byte{n}, 16)
		rep := waitLease(t, tn.requestAsync(ctx, spec, false))
		tn.nextSpawn(t)
		ids = append(ids, rep.GetWorkerAddress().GetWorkerId())
	}
	tn.nm.ReleaseUnusedActorWorkers(ctx, &raypb.ReleaseUnusedActorWorkersRequest{WorkerIdsInUse: ids[:1]})
	calls := tn.gcs.rec.waitFor(t, "ReportWorkerFailure", atLeast(1))
	if got := calls[0].(*raypb.ReportWorkerFailureRequest).GetWorkerFailure().GetWorkerAddress().GetWorkerId(); !bytes.Equal(got, ids[1]) {
		t.Fatalf("released %x, want %x", got, ids[1])
	}
}

func TestPrestartOnFirstDriverAndPlasmaReady(t *testing.T) {
	tn := newTestNode(t, true, func(c *Config) { c.NumPrestartWorkers = 2 })
	tn.driver(t, 1)
	w1, w2 := tn.nextSpawn(t), tn.nextSpawn(t)
	tn.driver(t, 2) // only the first driver prestarts
	tn.waitState(t, "two idle prestarted workers", func(r *Raylet) bool {
		n := 0
		for _, w := range r.byID {
			if w.state == wsIdle && w.jobHex == nilJobHex {
				n++
			}
		}
		return n == 2
	})
	select {
	case <-tn.spawns:
		t.Fatal("second driver prestarted workers too")
	default:
	}
	a := oid(7)
	w1.sock.send(msgSubscribePlasmaReady, buildSubscribePlasmaReady(a[:]))
	tn.store.Seal(a)
	calls := w1.cw.rec.waitFor(t, "PlasmaObjectReady", atLeast(1))
	if !bytes.Equal(calls[0].(*raypb.PlasmaObjectReadyRequest).GetObjectId(), a[:]) {
		t.Fatalf("PlasmaObjectReady: %v", calls[0])
	}
	_ = w2
}

func TestShutdownRayletCallsBack(t *testing.T) {
	got := make(chan bool, 1)
	tn := newTestNode(t, true, func(c *Config) { c.OnShutdown = func(g bool) { got <- g } })
	tn.nm.ShutdownRaylet(context.Background(), &raypb.ShutdownRayletRequest{Graceful: true})
	select {
	case g := <-got:
		if !g {
			t.Fatal("graceful flag lost")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("OnShutdown not called")
	}
	d, err := tn.nm.DrainRaylet(context.Background(), &raypb.DrainRayletRequest{})
	if err != nil || !d.GetIsAccepted() {
		t.Fatalf("DrainRaylet: %v %v", d, err)
	}
}

func TestGetNodeStatsFansOut(t *testing.T) {
	tn := newTestNode(t, true, nil)
	ctx := context.Background()
	tn.driver(t, 1)
	waitLease(t, tn.requestAsync(ctx, leaseSpec(1, jobID(1), owner1, map[string]float64{"CPU": 1}), false))
	w := tn.nextSpawn(t)
	rep, err := tn.nm.GetNodeStats(ctx, &raypb.GetNodeStatsRequest{IncludeMemoryInfo: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.GetCoreWorkersStats()) != 2 || rep.GetNumWorkers() != 1 || rep.GetStoreStats() == nil {
		t.Fatalf("node stats: %v", rep)
	}
	found := false
	for _, st := range rep.GetCoreWorkersStats() {
		if bytes.Equal(st.GetWorkerId(), w.id[:]) && st.GetNumPendingTasks() == 3 && st.GetWorkerType() == commonpb.WorkerType_WORKER {
			found = true
		}
	}
	if !found {
		t.Fatalf("worker stats missing: %v", rep.GetCoreWorkersStats())
	}
	oi, err := tn.nm.GetObjectsInfo(ctx, &raypb.GetObjectsInfoRequest{})
	if err != nil || oi.GetTotal() != 2 {
		t.Fatalf("objects info: %v %v", oi, err)
	}
}

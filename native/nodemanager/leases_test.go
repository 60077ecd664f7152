package nodemanager

import (
	"bytes"
	"context"
	"reflect"
	"testing"

	commonpb "github.com/gray-cluster/gray/proto/ray/commonpb"
	raypb "github.com/gray-cluster/gray/proto/ray/raypb"
	"github.com/gray-cluster/gray/resledger"
)

var owner1 = bytes.Repeat([]byte{0x11}, 28)

func TestLeaseGrantQueueReturnReuse(t *testing.T) {
	tn := newTestNode(t, true, nil) // 2 CPUs
	ctx := context.Background()
	c1 := tn.requestAsync(ctx, leaseSpec(1, jobID(1), owner1, map[string]float64{"CPU": 1}), false)
	c2 := tn.requestAsync(ctx, leaseSpec(2, jobID(1), owner1, map[string]float64{"CPU": 1}), false)
	w1, w2 := tn.nextSpawn(t), tn.nextSpawn(t)
	r1, r2 := waitLease(t, c1), waitLease(t, c2)
	for _, r := range []*raypb.RequestWorkerLeaseReply{r1, r2} {
		a := r.GetWorkerAddress()
		if a.GetPort() == 0 || a.GetIpAddress() != "127.0.0.1" || !bytes.Equal(a.GetNodeId(), tn.r.cfg.NodeID) || r.GetWorkerPid() == 0 {
			t.Fatalf("grant: %v", r)
		}
		m := r.GetResourceMapping()
		if len(m) != 1 || m[0].GetName() != "CPU" || m[0].GetResourceIds()[0].GetQuantity() != 1 {
			t.Fatalf("mapping: %v", m)
		}
	}
	got := map[WorkerID]bool{}
	for _, r := range []*raypb.RequestWorkerLeaseReply{r1, r2} {
		id, _ := workerIDFrom(r.GetWorkerAddress().GetWorkerId())
		got[id] = true
	}
	if !got[w1.id] || !got[w2.id] {
		t.Fatal("grants are not on the started workers")
	}
	if tn.available("CPU") != 0 {
		t.Fatalf("CPU available %v, want 0", tn.available("CPU"))
	}
	// A third lease queues until one is returned, then reuses that worker.
	c3 := tn.requestAsync(ctx, leaseSpec(3, jobID(1), owner1, map[string]float64{"CPU": 1}), false)
	tn.notAnswered(t, c3, 3)
	if _, err := tn.nm.ReturnWorkerLease(ctx, &raypb.ReturnWorkerLeaseRequest{LeaseId: leaseSpec(1, nil, owner1, nil).LeaseId,
		WorkerPort: r1.GetWorkerAddress().GetPort()}); err != nil {
		t.Fatal(err)
	}
	r3 := waitLease(t, c3)
	if !bytes.Equal(r3.GetWorkerAddress().GetWorkerId(), r1.GetWorkerAddress().GetWorkerId()) {
		t.Fatal("returned worker was not reused")
	}
	select {
	case <-tn.spawns:
		t.Fatal("a third worker was started")
	default:
	}
	// Load is visible to the GCS poll.
	c4 := tn.requestAsync(ctx, leaseSpec(4, jobID(1), owner1, map[string]float64{"CPU": 1}), false)
	tn.notAnswered(t, c4, 4)
	load, err := tn.nm.GetResourceLoad(ctx, &raypb.GetResourceLoadRequest{})
	if err != nil {
		t.Fatal(err)
	}
	res := load.GetResources()
	if res.GetResourcesTotal()["CPU"] != 2 || res.GetResourcesAvailable()["CPU"] != 0 || res.GetResourceLoad()["CPU"] != 1 ||
		len(res.GetResourceLoadByShape().GetResourceDemands()) != 1 ||
		res.GetResourceLoadByShape().GetResourceDemands()[0].GetNumReadyRequestsQueued() != 1 {
		t.Fatalf("resource load: %v", res)
	}
	// CancelWorkerLease answers the queued request with canceled.
	if _, err := tn.nm.CancelWorkerLease(ctx, &raypb.CancelWorkerLeaseRequest{LeaseId: leaseSpec(4, nil, owner1, nil).LeaseId}); err != nil {
		t.Fatal(err)
	}
	if r4 := waitLease(t, c4); !r4.GetCanceled() {
		t.Fatalf("cancelled lease: %v", r4)
	}
}

func TestLeaseJobBinding(t *testing.T) {
	tn := newTestNode(t, true, nil)
	ctx := context.Background()
	r1 := waitLease(t, tn.requestAsync(ctx, leaseSpec(1, jobID(1), owner1, map[string]float64{"CPU": 1}), false))
	tn.nextSpawn(t)
	tn.nm.ReturnWorkerLease(ctx, &raypb.ReturnWorkerLeaseRequest{LeaseId: leaseSpec(1, nil, owner1, nil).LeaseId})
	// Job 2 may not use job 1's idle worker.
	r2 := waitLease(t, tn.requestAsync(ctx, leaseSpec(2, jobID(2), owner1, map[string]float64{"CPU": 1}), false))
	tn.nextSpawn(t)
	if bytes.Equal(r1.GetWorkerAddress().GetWorkerId(), r2.GetWorkerAddress().GetWorkerId()) {
		t.Fatal("a worker bound to job 1 ran job 2's lease")
	}
}

// A worker that ran CPU work never runs GPU work and the other way round,
// as in Ray's worker pool.
func TestLeaseGPUWorkersApart(t *testing.T) {
	tn := newTestNode(t, true, func(c *Config) {
		c.Resources = map[string]float64{"CPU": 4, "GPU": 1}
		c.GPUIDs = []int{0}
	})
	ctx := context.Background()
	cpu := waitLease(t, tn.requestAsync(ctx, leaseSpec(1, jobID(1), owner1, map[string]float64{"CPU": 1}), false))
	tn.nextSpawn(t)
	tn.nm.ReturnWorkerLease(ctx, &raypb.ReturnWorkerLeaseRequest{LeaseId: leaseSpec(1, nil, owner1, nil).LeaseId})
	gpu := waitLease(t, tn.requestAsync(ctx, leaseSpec(2, jobID(1), owner1, map[string]float64{"CPU": 1, "GPU": 1}), false))
	tn.nextSpawn(t)
	if bytes.Equal(cpu.GetWorkerAddress().GetWorkerId(), gpu.GetWorkerAddress().GetWorkerId()) {
		t.Fatal("a CPU task's worker ran a GPU task")
	}
	tn.nm.ReturnWorkerLease(ctx, &raypb.ReturnWorkerLeaseRequest{LeaseId: leaseSpec(2, nil, owner1, nil).LeaseId})
	again := waitLease(t, tn.requestAsync(ctx, leaseSpec(3, jobID(1), owner1, map[string]float64{"CPU": 1}), false))
	if !bytes.Equal(cpu.GetWorkerAddress().GetWorkerId(), again.GetWorkerAddress().GetWorkerId()) {
		t.Fatal("the idle CPU worker was not reused for CPU work")
	}
}

func TestLeaseInfeasibleRejectAndRuntimeEnv(t *testing.T) {
	tn := newTestNode(t, true, nil)
	ctx := context.Background()
	// grant_or_reject on an infeasible request: rejected.
	rep := waitLease(t, tn.requestAsync(ctx, leaseSpec(1, jobID(1), owner1, map[string]float64{"CPU": 64}), true))
	if !rep.GetRejected() {
		t.Fatalf("want rejected: %v", rep)
	}
	// Without it the request stays queued (infeasible) and shows in the load.
	c := tn.requestAsync(ctx, leaseSpec(2, jobID(1), owner1, map[string]float64{"GPU": 1}), false)
	tn.notAnswered(t, c, 2)
	load, _ := tn.nm.GetResourceLoad(ctx, &raypb.GetResourceLoadRequest{})
	d := load.GetResources().GetResourceLoadByShape().GetResourceDemands()
	if len(d) != 1 || d[0].GetNumInfeasibleRequestsQueued() != 1 {
		t.Fatalf("infeasible demand: %v", d)
	}
	spec := leaseSpec(3, jobID(1), owner1, map[string]float64{"CPU": 1})
	spec.RuntimeEnvInfo = &commonpb.RuntimeEnvInfo{SerializedRuntimeEnv: `{"pip": ["requests"]}`}
	rep = waitLease(t, tn.requestAsync(ctx, spec, false))
	if !rep.GetCanceled() || rep.GetFailureType() != raypb.RequestWorkerLeaseReply_SCHEDULING_CANCELLED_RUNTIME_ENV_SETUP_FAILED ||
		rep.GetSchedulingFailureMessage() == "" {
		t.Fatalf("runtime_env lease: %v", rep)
	}
}

func TestLeaseGPUMapping(t *testing.T) {
	tn := newTestNode(t, true, func(c *Config) {
		c.Resources = map[string]float64{"CPU": 4, "GPU": 2}
		c.GPUIDs = []int{4, 6}
	})
	ctx := context.Background()
	rep := waitLease(t, tn.requestAsync(ctx, leaseSpec(1, jobID(1), owner1, map[string]float64{"CPU": 1, "GPU": 1}), false))
	var gpu *commonpb.ResourceMapEntry
	for _, e := range rep.GetResourceMapping() {
		if e.GetName() == "GPU" {
			gpu = e
		}
	}
	if gpu == nil || len(gpu.GetResourceIds()) != 1 || gpu.GetResourceIds()[0].GetIndex() != 4 || gpu.GetResourceIds()[0].GetQuantity() != 1 {
		t.Fatalf("GPU mapping: %v", rep.GetResourceMapping())
	}
	rep = waitLease(t, tn.requestAsync(ctx, leaseSpec(2, jobID(1), owner1, map[string]float64{"GPU": 0.5}), false))
	if m := rep.GetResourceMapping(); len(m) != 1 || m[0].GetResourceIds()[0].GetIndex() != 6 || m[0].GetResourceIds()[0].GetQuantity() != 0.5 {
		t.Fatalf("fractional GPU mapping: %v", m)
	}
}

func TestBlockedWorkerReleasesCPU(t *testing.T) {
	tn := newTestNode(t, true, func(c *Config) { c.Resources = map[string]float64{"CPU": 1} })
	ctx := context.Background()
	waitLease(t, tn.requestAsync(ctx, leaseSpec(1, jobID(1), owner1, map[string]float64{"CPU": 1}), false))
	w1 := tn.nextSpawn(t)
	c2 := tn.requestAsync(ctx, leaseSpec(2, jobID(1), owner1, map[string]float64{"CPU": 1}), false)
	tn.notAnswered(t, c2, 2)
	if err := w1.sock.send(msgNotifyWorkerBlocked, nil); err != nil {
		t.Fatal(err)
	}
	waitLease(t, c2) // the blocked worker's CPU went to the second lease
	tn.nextSpawn(t)
	if err := w1.sock.send(msgNotifyWorkerUnblocked, nil); err != nil {
		t.Fatal(err)
	}
	tn.waitState(t, "the unblocked worker to take its CPU back (oversubscribed: -1)", func(r *Raylet) bool {
		return r.res.Available()["CPU"] == -1
	})
	for _, n := range []byte{1, 2} {
		tn.nm.ReturnWorkerLease(ctx, &raypb.ReturnWorkerLeaseRequest{LeaseId: leaseSpec(n, nil, owner1, nil).LeaseId})
	}
	if got := tn.available("CPU"); got != 1 {
		t.Fatalf("CPU after returns: %v, want 1", got)
	}
}

// A leased worker that dies: its resources come back, the GCS hears of
// it, and the lease holder can ask why.
func TestLeasedWorkerDeath(t *testing.T) {
	tn := newTestNode(t, true, nil)
	ctx := context.Background()
	spec := leaseSpec(1, jobID(1), owner1, map[string]float64{"CPU": 2})
	rep := waitLease(t, tn.requestAsync(ctx, spec, false))
	w := tn.nextSpawn(t)
	w.sock.conn.Close()
	fails := tn.gcs.rec.waitFor(t, "ReportWorkerFailure", atLeast(1))
	wf := fails[0].(*raypb.ReportWorkerFailureRequest).GetWorkerFailure()
	if !bytes.Equal(wf.GetWorkerAddress().GetWorkerId(), w.id[:]) || wf.GetExitType() != commonpb.WorkerExitType_SYSTEM_ERROR ||
		!bytes.Equal(wf.GetJobId(), jobID(1)) {
		t.Fatalf("failure report: %v", wf)
	}
	if tn.available("CPU") != 2 {
		t.Fatalf("CPU after death: %v", tn.available("CPU"))
	}
	cause, err := tn.nm.GetWorkerFailureCause(ctx, &raypb.GetWorkerFailureCauseRequest{LeaseId: spec.LeaseId})
	if err != nil || cause.GetFailureCause().GetErrorType() != commonpb.ErrorType_WORKER_DIED {
		t.Fatalf("failure cause: %v %v", cause, err)
	}
	dead, _ := tn.nm.IsLocalWorkerDead(ctx, &raypb.IsLocalWorkerDeadRequest{WorkerId: rep.GetWorkerAddress().GetWorkerId()})
	if !dead.GetIsDead() {
		t.Fatal("IsLocalWorkerDead: false for a dead worker")
	}
}

// When a driver leaves, its job is finished and its idle workers are told
// to exit; workers leased by it die with it.
func TestDriverExitCleansUp(t *testing.T) {
	tn := newTestNode(t, true, nil)
	ctx := context.Background()
	sock, wid, _, _ := tn.driver(t, 1)
	waitLease(t, tn.requestAsync(ctx, leaseSpec(1, jobID(1), wid, map[string]float64{"CPU": 1}), false))
	leased := tn.nextSpawn(t)
	waitLease(t, tn.requestAsync(ctx, leaseSpec(2, jobID(1), wid, map[string]float64{"CPU": 1}), false))
	idle := tn.nextSpawn(t)
	tn.nm.ReturnWorkerLease(ctx, &raypb.ReturnWorkerLeaseRequest{LeaseId: leaseSpec(2, nil, wid, nil).LeaseId})
	if err := sock.disconnect(3, "Shutdown by ray.shutdown()."); err != nil {
		t.Fatal(err)
	}
	idle.cw.rec.waitFor(t, "Exit", atLeast(1))
	tn.gcs.rec.waitFor(t, "MarkJobFinished", atLeast(1))
	// driver + the orphaned leased worker + the exited idle worker
	tn.gcs.rec.waitFor(t, "ReportWorkerFailure", atLeast(3))
	tn.r.mu.Lock()
	_, alive := tn.r.byID[leased.id]
	tn.r.mu.Unlock()
	if alive {
		t.Fatal("worker leased by the dead driver is still registered")
	}
	if got := tn.available("CPU"); got != 2 {
		t.Fatalf("CPU after cleanup: %v", got)
	}
}

func TestExcludesNode(t *testing.T) {
	node := bytes.Repeat([]byte{1}, 28)
	other := bytes.Repeat([]byte{2}, 28)
	labels := map[string]string{"zone": "a", "ray.io/node-id": "x"}
	sel := func(op commonpb.LabelSelectorOperator, key string, vals ...string) *commonpb.LabelSelector {
		return &commonpb.LabelSelector{LabelConstraints: []*commonpb.LabelSelectorConstraint{{LabelKey: key, Operator: op, LabelValues: vals}}}
	}
	aff := func(id []byte, soft bool) *commonpb.SchedulingStrategy {
		return &commonpb.SchedulingStrategy{SchedulingStrategy: &commonpb.SchedulingStrategy_NodeAffinitySchedulingStrategy{
			NodeAffinitySchedulingStrategy: &commonpb.NodeAffinitySchedulingStrategy{NodeId: id, Soft: soft}}}
	}
	cases := []struct {
		name string
		spec *commonpb.LeaseSpec
		want bool
	}{
		{"nothing", &commonpb.LeaseSpec{}, false},
		{"in matches", &commonpb.LeaseSpec{LabelSelector: sel(commonpb.LabelSelectorOperator_LABEL_OPERATOR_IN, "zone", "b", "a")}, false},
		{"in misses", &commonpb.LeaseSpec{LabelSelector: sel(commonpb.LabelSelectorOperator_LABEL_OPERATOR_IN, "zone", "b")}, true},
		{"in on a missing label", &commonpb.LeaseSpec{LabelSelector: sel(commonpb.LabelSelectorOperator_LABEL_OPERATOR_IN, "gpu", "h100")}, true},
		{"not in matches", &commonpb.LeaseSpec{LabelSelector: sel(commonpb.LabelSelectorOperator_LABEL_OPERATOR_NOT_IN, "zone", "a")}, true},
		{"not in on a missing label", &commonpb.LeaseSpec{LabelSelector: sel(commonpb.LabelSelectorOperator_LABEL_OPERATOR_NOT_IN, "gpu", "h100")}, false},
		{"affinity here", &commonpb.LeaseSpec{SchedulingStrategy: aff(node, false)}, false},
		{"hard affinity elsewhere", &commonpb.LeaseSpec{SchedulingStrategy: aff(other, false)}, true},
		{"soft affinity elsewhere", &commonpb.LeaseSpec{SchedulingStrategy: aff(other, true)}, false},
	}
	for _, tc := range cases {
		if got := excludesNode(tc.spec, node, labels); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestRetriedLeaseRequestGetsTheSameGrant(t *testing.T) {
	tn := newTestNode(t, true, nil)
	ctx := context.Background()
	spec := leaseSpec(1, jobID(1), owner1, map[string]float64{"CPU": 1})
	r1 := waitLease(t, tn.requestAsync(ctx, spec, false))
	tn.nextSpawn(t)
	r2 := waitLease(t, tn.requestAsync(ctx, spec, false))
	if !bytes.Equal(r1.GetWorkerAddress().GetWorkerId(), r2.GetWorkerAddress().GetWorkerId()) || tn.available("CPU") != 1 {
		t.Fatalf("retry: %v vs %v, CPU %v", r1, r2, tn.available("CPU"))
	}
}

func TestUnionAndPositive(t *testing.T) {
	u := union(map[string]float64{"CPU": 1, "a": 2}, map[string]float64{"CPU": 2, "b": 1})
	if !reflect.DeepEqual(u, map[string]float64{"CPU": 2, "a": 2, "b": 1}) {
		t.Fatal(u)
	}
	if p := positive(map[string]float64{"x": 0, "y": -1, "z": 1}); !reflect.DeepEqual(p, map[string]float64{"z": 1}) {
		t.Fatal(p)
	}
}

// TestLeaseWaitsForAnotherRayletOnTheLedger: on a ledger shared with the
// head's ray:// raylet, a lease stays queued while the other raylet holds
// the CPUs, is granted once it frees one (the ledger's signal, no retry
// from the owner), and gets the GPU the other does not hold.
func TestLeaseWaitsForAnotherRayletOnTheLedger(t *testing.T) {
	total := map[string]float64{"CPU": 2, "GPU": 2}
	ledger := resledger.New(total, nil)
	other := ledger.Join("ray")
	held, _ := other.Acquire(map[string]float64{"CPU": 2, "GPU": 1})
	tn := newTestNode(t, true, func(c *Config) { c.Resources = total; c.Ledger = ledger })
	ctx := context.Background()
	c1 := tn.requestAsync(ctx, leaseSpec(1, jobID(1), owner1, map[string]float64{"CPU": 1, "GPU": 1}), false)
	tn.notAnswered(t, c1, 1)
	other.Release(resledger.Allocation{"CPU": held["CPU"]})
	rep := waitLease(t, c1)
	tn.nextSpawn(t)
	if m := rep.GetResourceMapping(); len(m) != 2 || m[1].GetName() != "GPU" || m[1].GetResourceIds()[0].GetIndex() != 1 {
		t.Fatalf("mapping %v, want GPU 1 (the other raylet holds GPU 0)", m)
	}
	if got := other.Available()["CPU"]; got != 1 {
		t.Fatalf("the other raylet sees CPU %v, want 1", got)
	}
}

// A lease spilled here (grant_or_reject) that is feasible but does not fit
// now is rejected back to its sender, as in Ray, rather than queued behind
// whatever holds the resources (which, for an actor, may be for ever).
func TestGrantOrRejectBusyIsRejected(t *testing.T) {
	tn := newTestNode(t, true, nil) // 2 CPUs
	ctx := context.Background()
	c1 := tn.requestAsync(ctx, leaseSpec(1, jobID(1), owner1, map[string]float64{"CPU": 2}), false)
	tn.nextSpawn(t)
	if r := waitLease(t, c1); len(r.GetWorkerAddress().GetWorkerId()) == 0 {
		t.Fatalf("first lease not granted: %v", r)
	}
	rep := waitLease(t, tn.requestAsync(ctx, leaseSpec(2, jobID(1), owner1, map[string]float64{"CPU": 1}), true))
	if !rep.GetRejected() {
		t.Fatalf("grant_or_reject on a busy node: want rejected, got %v", rep)
	}
	tn.r.mu.Lock()
	queued := len(tn.r.queue)
	tn.r.mu.Unlock()
	if queued != 0 {
		t.Fatalf("%d leases queued after the rejection", queued)
	}
}

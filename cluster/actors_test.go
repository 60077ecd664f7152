package cluster

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/gray-cluster/gray/gcs"
	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/raylet"
	"github.com/gray-cluster/gray/taskspec"
)

// TestUnschedulableActorDies: an actor with hard affinity to an unknown
// node is reported dead and created nowhere.
func TestUnschedulableActorDies(t *testing.T) {
	h := newHarness(t)
	a := h.add(0, cpu(4), nil)
	act := h.actor("A", cpu(1), 3, 0, affinity(nodeID(99), false))
	_ = h.c.CreateActor(act)
	if got := h.deadActors(); !slices.Equal(got, []ids.ActorID{act.ActorID}) {
		t.Fatalf("OnActorDead got %v, want the actor", got)
	}
	if got := a.recorded(); len(got) != 0 {
		t.Errorf("member ops %+v, want none", got)
	}
	if n := h.pendingLen(); n != 0 {
		t.Errorf("%d parked, want 0", n)
	}
}

// TestQueuedActorCallsDeliveredInOrder: calls to an actor whose creation is
// parked wait at the head and reach its node after CreateActor, in order,
// including calls made while the queued ones are being delivered.
func TestQueuedActorCallsDeliveredInOrder(t *testing.T) {
	h := newHarness(t)
	small := h.add(0, cpu(2), nil)
	act := h.actor("A", cpu(32), 0, 0, taskspec.Scheduling{})
	_ = h.c.CreateActor(act)
	if n := h.pendingLen(); n != 1 {
		t.Fatalf("%d parked, want 1", n)
	}
	var calls []*taskspec.ActorCall
	for i := range 3 {
		c := h.call(act, fmt.Sprintf("m%d", i))
		calls = append(calls, c)
		if err := h.c.SubmitActorTask(c); err != nil {
			t.Fatalf("SubmitActorTask: %v", err)
		}
	}
	if got := small.recorded(); len(got) != 0 {
		t.Fatalf("small node ops %+v, want none", got)
	}
	if w := h.warns(); len(w) != 1 || !strings.Contains(w[0].msg, "actor A") {
		t.Errorf("warnings %v, want one naming the actor", w)
	}

	big := newFake(1, cpu(32))
	// A client calling while the cluster creates the actor and while it
	// delivers the first queued call: those calls queue behind the others.
	during := h.call(act, "during-create")
	later := h.call(act, "during-delivery")
	big.onCreate = func(*taskspec.ActorSpec) { _ = h.c.SubmitActorTask(during) }
	big.onCall = func(c *taskspec.ActorCall) {
		if c.TaskID == calls[0].TaskID {
			_ = h.c.SubmitActorTask(later)
		}
	}
	h.c.Add(big, gcs.NodeInfo{})
	h.c.retryPending()
	after := h.call(act, "after")
	_ = h.c.SubmitActorTask(after)

	var got []string
	for _, o := range big.recorded() {
		if o.Kind == "create" {
			got = append(got, "create")
		} else {
			got = append(got, o.Method)
		}
	}
	want := []string{"create", "m0", "m1", "m2", "during-create", "during-delivery", "after"}
	if !slices.Equal(got, want) {
		t.Fatalf("big node ops %v, want %v", got, want)
	}
	if n := h.pendingLen(); n != 0 {
		t.Errorf("%d parked, want 0", n)
	}
}

// TestNodes lists the head first, then the others by id; dead nodes keep
// their record with state DEAD and the reason; totals count live nodes only.
func TestNodes(t *testing.T) {
	h := newHarness(t)
	b := h.add(1, map[string]float64{"CPU": 4, "GPU": 1}, map[string]string{"k": "v"})
	head := newFake(5, cpu(2))
	head.setAvailable(cpu(1))
	h.c.AddLocal(head, gcs.NodeInfo{IP: "10.0.0.100"})
	a := h.add(0, cpu(8), nil)
	a.setAvailable(cpu(3))
	c := h.add(2, cpu(16), nil)
	h.c.SetState(c.id, gcs.NodeSuspect)

	if got := h.c.NodeID(); got != head.id {
		t.Errorf("NodeID = %s, want the head %s", short(got), short(head.id))
	}
	wantTotal := map[string]float64{"CPU": 30, "GPU": 1}
	if got := h.c.Total(); !mapsEqual(got, wantTotal) {
		t.Errorf("Total = %v, want %v", got, wantTotal)
	}
	h.c.NodeDead(b.id, "no word from it for 30s", Lost{})
	h.c.NodeDead(b.id, "again", Lost{}) // already dead: ignored

	nodes := h.c.Nodes()
	var order []ids.NodeID
	for _, n := range nodes {
		order = append(order, n.ID)
	}
	if want := []ids.NodeID{head.id, a.id, b.id, c.id}; !slices.Equal(order, want) {
		t.Fatalf("Nodes order %v, want head, a, b, c", order)
	}
	if !nodes[0].IsHead || nodes[0].State != gcs.NodeAlive || nodes[0].IP != "10.0.0.100" {
		t.Errorf("head record %+v", nodes[0])
	}
	if nodes[1].IsHead || nodes[1].State != gcs.NodeAlive || !mapsEqual(nodes[1].Available, cpu(3)) || !mapsEqual(nodes[1].Total, cpu(8)) {
		t.Errorf("a record %+v", nodes[1])
	}
	if d := nodes[2]; d.State != gcs.NodeDead || d.DeathReason != "no word from it for 30s" ||
		len(d.Available) != 0 || d.Available == nil || d.Total["GPU"] != 1 || d.Labels["k"] != "v" {
		t.Errorf("dead record %+v", d)
	}
	if nodes[3].State != gcs.NodeSuspect {
		t.Errorf("suspect record state %s", nodes[3].State)
	}
	wantTotal = map[string]float64{"CPU": 26}
	if got := h.c.Total(); !mapsEqual(got, wantTotal) {
		t.Errorf("Total after b died = %v, want %v", got, wantTotal)
	}
	wantAvail := map[string]float64{"CPU": 1 + 3 + 16}
	if got := h.c.Available(); !mapsEqual(got, wantAvail) {
		t.Errorf("Available = %v, want %v", got, wantAvail)
	}

	// A dead node that registers again is alive, and listed once.
	h.c.Add(b, gcs.NodeInfo{})
	n := 0
	for _, info := range h.c.Nodes() {
		if info.ID == b.id {
			n++
			if info.State != gcs.NodeAlive || info.DeathReason != "" {
				t.Errorf("re-registered node %+v", info)
			}
		}
	}
	if n != 1 {
		t.Errorf("re-registered node listed %d times", n)
	}
}

func mapsEqual(a, b map[string]float64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestChanged: the channel closes on every node-table change and only then.
func TestChanged(t *testing.T) {
	h := newHarness(t)
	closed := func(ch <-chan struct{}) bool {
		select {
		case <-ch:
			return true
		default:
			return false
		}
	}
	ch := h.c.Changed()
	if closed(ch) {
		t.Fatal("Changed closed before any change")
	}
	a := h.add(0, cpu(1), nil)
	if !closed(ch) {
		t.Fatal("Add did not close Changed")
	}
	for _, step := range []struct {
		name   string
		do     func()
		change bool
	}{
		{"suspect", func() { h.c.SetState(a.id, gcs.NodeSuspect) }, true},
		{"suspect again", func() { h.c.SetState(a.id, gcs.NodeSuspect) }, false},
		{"alive", func() { h.c.SetState(a.id, gcs.NodeAlive) }, true},
		{"unknown node", func() { h.c.SetState(nodeID(50), gcs.NodeSuspect) }, false},
		{"submit", func() { _ = h.c.Submit(h.task("f", cpu(1), 0, taskspec.Scheduling{})) }, false},
		{"dead", func() { h.c.NodeDead(a.id, "x", Lost{}) }, true},
		{"dead again", func() { h.c.NodeDead(a.id, "x", Lost{}) }, false},
	} {
		ch := h.c.Changed()
		step.do()
		if got := closed(ch); got != step.change {
			t.Errorf("%s: Changed closed = %v, want %v", step.name, got, step.change)
		}
	}
}

// TestWorkerRouting: worker ids name their node by the first 8 hex digits of
// its id.
func TestWorkerRouting(t *testing.T) {
	h := newHarness(t)
	a := h.add(0, cpu(1), nil)
	b := h.add(1, cpu(1), nil)
	job7 := ids.JobFromInt(7)
	wa := short(a.id) + "-1234-1"
	wb := short(b.id) + "-99-3"
	a.jobs[wa] = job1
	b.jobs[wb] = job7

	for _, tc := range []struct {
		worker  string
		node    ids.NodeID
		ok      bool
		job     ids.JobID
		jobOK   bool
		blocked *fakeMember
	}{
		{worker: wa, node: a.id, ok: true, job: job1, jobOK: true, blocked: a},
		{worker: wb, node: b.id, ok: true, job: job7, jobOK: true, blocked: b},
		{worker: short(b.id) + "-5-5", node: b.id, ok: true, blocked: b}, // node known, worker not
		{worker: "ffffffff-1-1"},
		{worker: "no-dash-prefix-match"},
		{worker: short(a.id)}, // no dash
	} {
		t.Run(tc.worker, func(t *testing.T) {
			node, ok := h.c.WorkerNode(tc.worker)
			if ok != tc.ok || node != tc.node {
				t.Errorf("WorkerNode = %s, %v; want %s, %v", short(node), ok, short(tc.node), tc.ok)
			}
			job, ok := h.c.WorkerJob(tc.worker)
			if ok != tc.jobOK || job != tc.job {
				t.Errorf("WorkerJob = %s, %v; want %s, %v", job.Hex(), ok, tc.job.Hex(), tc.jobOK)
			}
			before := len(a.recorded("blocked")) + len(b.recorded("blocked"))
			unblock := h.c.WorkerBlocked(tc.worker)
			if unblock == nil {
				t.Fatal("WorkerBlocked returned nil")
			}
			unblock()
			after := len(a.recorded("blocked")) + len(b.recorded("blocked"))
			if tc.blocked == nil {
				if after != before {
					t.Errorf("WorkerBlocked of an unknown worker reached a node")
				}
				return
			}
			got := tc.blocked.recorded("blocked")
			if len(got) == 0 || got[len(got)-1].Worker != tc.worker {
				t.Errorf("WorkerBlocked did not reach the worker's node")
			}
			tc.blocked.mu.Lock()
			un := slices.Clone(tc.blocked.unblocked)
			tc.blocked.mu.Unlock()
			if len(un) == 0 || un[len(un)-1] != tc.worker {
				t.Errorf("unblock func did not reach the worker's node")
			}
		})
	}

	h.c.NodeDead(a.id, "gone", Lost{})
	if _, ok := h.c.WorkerNode(wa); ok {
		t.Errorf("WorkerNode finds a worker of a dead node")
	}
	if _, ok := h.c.WorkerJob(wa); ok {
		t.Errorf("WorkerJob finds a worker of a dead node")
	}
}

// TestCancel asks every live node; it succeeds when one knows the task.
func TestCancel(t *testing.T) {
	h := newHarness(t)
	a := h.add(0, cpu(1), nil)
	b := h.add(1, cpu(1), nil)
	spec := h.task("f", cpu(1), 0, affinity(b.id, false))
	_ = h.c.Submit(spec)
	if err := h.c.Cancel(spec.TaskID, true); err != nil {
		t.Errorf("Cancel of a submitted task: %v", err)
	}
	for _, m := range []*fakeMember{a, b} {
		got := m.recorded("cancel")
		if len(got) != 1 || got[0].Task != spec.TaskID || !got[0].Force {
			t.Errorf("node %s cancel ops %+v", short(m.id), got)
		}
	}
	if err := h.c.Cancel(ids.NewTaskID(ids.NilActorFor(job1)), false); !errors.Is(err, raylet.ErrUnknownTask) {
		t.Errorf("Cancel of an unknown task: %v, want ErrUnknownTask", err)
	}
}

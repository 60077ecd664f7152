package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/gray-cluster/gray/gcs"
	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/raylet"
)

// TestPlacement places one task in a three-node cluster under each strategy
// and checks which member got it.
func TestPlacement(t *testing.T) {
	const region = "ray.io/availability-region"
	for _, tc := range []struct {
		name string
		res  map[string]float64
		s    func(a, b, c *fakeMember) raylet.Scheduling
		want int // index of the member (0, 1, 2)
	}{
		{name: "default, only one node has a GPU", res: map[string]float64{"GPU": 1}, want: 1},
		{name: "default, only one node has 16 CPUs", res: cpu(16), want: 2},
		{name: "default, custom resource", res: map[string]float64{"accel": 1}, want: 0},
		{name: "hard affinity to a node with less room", res: cpu(1),
			s: func(a, _, _ *fakeMember) raylet.Scheduling { return affinity(a.id, false) }, want: 0},
		{name: "hard affinity, target full now (queues there)", res: cpu(2),
			s: func(_, b, _ *fakeMember) raylet.Scheduling { return affinity(b.id, false) }, want: 1},
		{name: "soft affinity to a node that fits", res: cpu(1),
			s: func(_, _, c *fakeMember) raylet.Scheduling { return affinity(c.id, true) }, want: 2},
		{name: "soft affinity to a node that can never fit", res: cpu(8),
			s: func(a, _, _ *fakeMember) raylet.Scheduling { return affinity(a.id, true) }, want: 2},
		{name: "label selector r2", res: cpu(1),
			s: func(_, _, _ *fakeMember) raylet.Scheduling {
				return raylet.Scheduling{Labels: map[string]string{region: "r2"}}
			},
			want: 1},
		{name: "label selector not r1 and not r2", res: cpu(1),
			s: func(_, _, _ *fakeMember) raylet.Scheduling {
				return raylet.Scheduling{Labels: map[string]string{region: "!in(r1,r2)"}}
			},
			want: 2},
		{name: "node-id label", res: cpu(1),
			s: func(a, _, _ *fakeMember) raylet.Scheduling {
				return raylet.Scheduling{Labels: map[string]string{"ray.io/node-id": a.id.Hex()}}
			}, want: 0},
		{name: "spread, first of the rotation", res: cpu(1),
			s: func(_, _, _ *fakeMember) raylet.Scheduling { return raylet.Scheduling{Kind: "SPREAD"} }, want: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			ms := []*fakeMember{
				h.add(0, map[string]float64{"CPU": 4, "accel": 1}, map[string]string{region: "r1"}),
				h.add(1, map[string]float64{"CPU": 4, "GPU": 1}, map[string]string{region: "r2"}),
				h.add(2, cpu(16), map[string]string{region: "r3"}),
			}
			ms[1].setAvailable(map[string]float64{"CPU": 0, "GPU": 1})
			var s raylet.Scheduling
			if tc.s != nil {
				s = tc.s(ms[0], ms[1], ms[2])
			}
			spec := h.task(tc.name, tc.res, 0, s)
			if err := h.c.Submit(spec); err != nil {
				t.Fatalf("Submit: %v", err)
			}
			for i, m := range ms {
				got := m.submitted()
				if i == tc.want {
					if !slices.Equal(got, []ids.TaskID{spec.TaskID}) {
						t.Errorf("member %d got %d submits, want the task once", i, len(got))
					}
				} else if len(got) != 0 {
					t.Errorf("member %d got the task, want member %d", i, tc.want)
				}
			}
			h.wantPending(spec.ReturnIDs()...)
			if n := h.pendingLen(); n != 0 {
				t.Errorf("%d parked, want 0", n)
			}
		})
	}
}

// TestUnschedulableTaskFails: hard affinity to a node that is not in the
// cluster, and a malformed strategy, fail the task's returns with
// TaskUnschedulableError without submitting or parking it.
func TestUnschedulableTaskFails(t *testing.T) {
	for _, tc := range []struct {
		name string
		s    raylet.Scheduling
		res  map[string]float64
	}{
		{name: "hard affinity to an unknown node", s: affinity(nodeID(99), false), res: cpu(1)},
		{name: "bad label key", s: raylet.Scheduling{Labels: map[string]string{"bad key!": "x"}}, res: cpu(1)},
		{name: "negative resource", res: cpu(-1)},
		{name: "affinity without a node id", s: raylet.Scheduling{Kind: "NODE_AFFINITY"}, res: cpu(1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			a := h.add(0, cpu(4), nil)
			spec := h.task("f", tc.res, 3, tc.s)
			if err := h.c.Submit(spec); err != nil {
				t.Fatalf("Submit: %v", err)
			}
			if got := a.submitted(); len(got) != 0 {
				t.Errorf("member got %d submits, want none", len(got))
			}
			h.wantSealed("ray.exceptions.TaskUnschedulableError", spec.ReturnIDs()...)
			_, args := h.sealedError(spec.ReturnIDs()[0])
			if msg := argString(args); !strings.Contains(msg, "f cannot be scheduled") {
				t.Errorf("message %q does not name the task", msg)
			}
			if n := h.pendingLen(); n != 0 {
				t.Errorf("%d parked, want 0", n)
			}
		})
	}
}

// TestSoftAffinityToUnknownNode falls back to the default policy.
func TestSoftAffinityToUnknownNode(t *testing.T) {
	h := newHarness(t)
	a := h.add(0, cpu(4), nil)
	spec := h.task("f", cpu(1), 0, affinity(nodeID(99), true))
	_ = h.c.Submit(spec)
	if got := a.submitted(); len(got) != 1 {
		t.Fatalf("member got %d submits, want 1", len(got))
	}
	h.wantPending(spec.ReturnIDs()...)
}

// TestSpreadRotates: SPREAD walks the nodes in id order, wrapping around,
// and skips suspect ones.
func TestSpreadRotates(t *testing.T) {
	h := newHarness(t)
	// Registered out of order: the rotation follows node ids.
	c := h.add(2, cpu(4), nil)
	a := h.add(0, cpu(4), nil)
	b := h.add(1, cpu(4), nil)
	byID := map[ids.NodeID]string{a.id: "a", b.id: "b", c.id: "c"}
	var order []string
	submit := func(n int) {
		for range n {
			spec := h.task("s", cpu(1), 0, raylet.Scheduling{Kind: "SPREAD"})
			_ = h.c.Submit(spec)
			for _, m := range []*fakeMember{a, b, c} {
				if slices.Contains(m.submitted(), spec.TaskID) {
					order = append(order, byID[m.id])
				}
			}
		}
	}
	submit(6)
	if want := []string{"a", "b", "c", "a", "b", "c"}; !slices.Equal(order, want) {
		t.Fatalf("spread order %v, want %v", order, want)
	}
	order = nil
	h.c.SetState(b.id, gcs.NodeSuspect)
	submit(4)
	if want := []string{"a", "c", "a", "c"}; !slices.Equal(order, want) {
		t.Fatalf("spread order with b suspect %v, want %v", order, want)
	}
	order = nil
	h.c.SetState(b.id, gcs.NodeAlive)
	submit(3)
	if !slices.Contains(order, "b") || len(order) != 3 {
		t.Fatalf("spread order after b is back %v, want b among 3", order)
	}
}

// TestSpreadPrefersNodesWithRoomNow: a spread task goes past a full node to
// one that fits now.
func TestSpreadPrefersNodesWithRoomNow(t *testing.T) {
	h := newHarness(t)
	a := h.add(0, cpu(4), nil)
	b := h.add(1, cpu(4), nil)
	a.setAvailable(cpu(0))
	for range 3 {
		_ = h.c.Submit(h.task("s", cpu(1), 0, raylet.Scheduling{Kind: "SPREAD"}))
	}
	if na, nb := len(a.submitted()), len(b.submitted()); na != 0 || nb != 3 {
		t.Fatalf("a got %d, b got %d; want 0 and 3", na, nb)
	}
}

// TestSuspectNodeGetsNoWork: a suspect node gets no new tasks or actors,
// even with hard affinity (that waits), until it is alive again.
func TestSuspectNodeGetsNoWork(t *testing.T) {
	h := newHarness(t)
	a := h.add(0, cpu(4), nil)
	b := h.add(1, cpu(64), nil)
	h.c.SetState(b.id, gcs.NodeSuspect)

	var specs []*raylet.TaskSpec
	for range 5 {
		s := h.task("t", cpu(1), 0, raylet.Scheduling{})
		specs = append(specs, s)
		_ = h.c.Submit(s)
	}
	for range 5 {
		_ = h.c.Submit(h.task("t", cpu(1), 0, raylet.Scheduling{Kind: "SPREAD"}))
	}
	act := h.actor("A", cpu(1), 0, 0, raylet.Scheduling{})
	_ = h.c.CreateActor(act)
	pinned := h.task("pinned", cpu(1), 0, affinity(b.id, false))
	_ = h.c.Submit(pinned)
	// Feasible only on b, which is suspect: it waits, without a warning.
	big := h.task("big", cpu(32), 0, raylet.Scheduling{})
	_ = h.c.Submit(big)

	if got := b.recorded("submit", "create", "call"); len(got) != 0 {
		t.Fatalf("suspect node got %d ops, want none: %+v", len(got), got)
	}
	if got := len(a.submitted()); got != 10 {
		t.Errorf("a got %d tasks, want 10", got)
	}
	if got := a.recorded("create"); len(got) != 1 {
		t.Errorf("a got %d actor creations, want 1", len(got))
	}
	if n := h.pendingLen(); n != 2 {
		t.Errorf("%d parked, want 2 (hard affinity to b, 32 CPUs)", n)
	}
	if w := h.warns(); len(w) != 0 {
		t.Errorf("warnings for work that waits for a suspect node: %v", w)
	}
	h.wantPending(pinned.ReturnIDs()...)
	h.wantPending(big.ReturnIDs()...)
	for _, n := range h.c.Nodes() {
		if n.ID == b.id && n.State != gcs.NodeSuspect {
			t.Errorf("Nodes: b state %s, want SUSPECT", n.State)
		}
	}

	h.c.SetState(b.id, gcs.NodeAlive)
	h.c.retryPending()
	if got := b.submitted(); !slices.Equal(got, []ids.TaskID{pinned.TaskID, big.TaskID}) {
		t.Errorf("after b is alive it got %d tasks, want the pinned and the big one in order", len(got))
	}
	if n := h.pendingLen(); n != 0 {
		t.Errorf("%d parked after retry, want 0", n)
	}
	for range 4 {
		_ = h.c.Submit(h.task("t", cpu(1), 0, raylet.Scheduling{Kind: "SPREAD"}))
	}
	if got := len(b.submitted()); got < 3 {
		t.Errorf("b got %d of the new spread tasks, want it in the rotation again", got-2)
	}
}

// TestInfeasibleTaskParksAndWarnsOnce: a task no node can ever run waits at
// the head, warns the job once, and is submitted when a big enough node joins
// while Run runs.
func TestInfeasibleTaskParksAndWarnsOnce(t *testing.T) {
	h := newHarness(t)
	a := h.add(0, cpu(4), nil)
	spec := h.task("huge", cpu(64), 0, raylet.Scheduling{})
	_ = h.c.Submit(spec)

	if got := a.submitted(); len(got) != 0 {
		t.Fatalf("task submitted to a node too small for it")
	}
	h.wantPending(spec.ReturnIDs()...)
	if n := h.pendingLen(); n != 1 {
		t.Fatalf("%d parked, want 1", n)
	}
	// Several retries with nothing new: still parked, no new warning.
	for range 3 {
		h.c.retryPending()
	}
	h.add(1, cpu(8), nil)
	h.c.retryPending()
	if n := h.pendingLen(); n != 1 {
		t.Fatalf("%d parked after retries, want 1", n)
	}
	w := h.warns()
	if len(w) != 1 {
		t.Fatalf("%d warnings, want exactly 1: %v", len(w), w)
	}
	if w[0].job != job1 {
		t.Errorf("warning went to job %s, want %s", w[0].job.Hex(), job1.Hex())
	}
	if !strings.Contains(w[0].msg, "CPU:64") || !strings.Contains(w[0].msg, "huge") {
		t.Errorf("warning %q does not name the resources and the task", w[0].msg)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { h.c.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	big := h.add(2, cpu(64), nil)
	if o := big.waitOp(t, "submit"); o.Task != spec.TaskID {
		t.Fatalf("big node got task %s, want the parked one", o.Task.Hex())
	}
	cancel()
	<-done
	if n := h.pendingLen(); n != 0 {
		t.Errorf("%d parked after the big node joined, want 0", n)
	}
	if got := len(h.warns()); got != 1 {
		t.Errorf("%d warnings in all, want 1", got)
	}
	h.wantPending(spec.ReturnIDs()...)
}

// TestNoNodesParksWithoutWarning: with no node at all, work waits (no
// warning: it is not infeasible, the cluster is just empty) and goes to the
// first node that joins while Run runs.
func TestNoNodesParksWithoutWarning(t *testing.T) {
	h := newHarness(t)
	spec := h.task("f", cpu(1), 0, raylet.Scheduling{})
	act := h.actor("A", cpu(1), 0, 0, raylet.Scheduling{})
	_ = h.c.Submit(spec)
	_ = h.c.CreateActor(act)
	if n := h.pendingLen(); n != 2 {
		t.Fatalf("%d parked, want 2", n)
	}
	if w := h.warns(); len(w) != 0 {
		t.Fatalf("warnings with an empty cluster: %v", w)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { h.c.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	a := h.add(0, cpu(4), nil)
	if o := a.waitOp(t, "submit"); o.Task != spec.TaskID {
		t.Fatalf("got task %s, want the parked one", o.Task.Hex())
	}
	if o := a.waitOp(t, "create"); o.Actor != act.ActorID {
		t.Fatalf("got actor %s, want the parked one", o.Actor.Hex())
	}
	if id, ok := h.c.ActorNode(act.ActorID); !ok || id != a.id {
		t.Errorf("ActorNode = %s, %v; want %s", short(id), ok, short(a.id))
	}
}

// TestMemberSubmitErrorParks: a member refusing a task (e.g. its link is
// down) keeps the task at the head, and a retry places it again.
func TestMemberSubmitErrorParks(t *testing.T) {
	h := newHarness(t)
	a := h.add(0, cpu(4), nil)
	a.submitErr = errors.New("link down")
	spec := h.task("f", cpu(1), 0, raylet.Scheduling{})
	if err := h.c.Submit(spec); err != nil {
		t.Fatalf("Submit: %v", err)
	}
	if n := h.pendingLen(); n != 1 {
		t.Fatalf("%d parked, want 1", n)
	}
	h.wantPending(spec.ReturnIDs()...)
	a.mu.Lock()
	a.submitErr = nil
	a.mu.Unlock()
	h.c.retryPending()
	if got := a.submitted(); !slices.Equal(got, []ids.TaskID{spec.TaskID}) {
		t.Fatalf("after retry member got %v, want the task", got)
	}
	if n := h.pendingLen(); n != 0 {
		t.Errorf("%d parked, want 0", n)
	}
}

// TestPlacementGroupGoesToItsNode: work in a placement group goes to the
// node whose raylet holds the group, whatever the strategy says.
func TestPlacementGroupGoesToItsNode(t *testing.T) {
	h := newHarness(t)
	a := h.add(0, cpu(64), nil)
	b := h.add(1, cpu(2), nil)
	b.groups["pg1"] = true
	spec := h.task("f", cpu(1), 0, affinity(a.id, false))
	spec.PlacementGroup = "pg1"
	_ = h.c.Submit(spec)
	act := h.actor("A", cpu(1), 0, 0, raylet.Scheduling{})
	act.PlacementGroup = "pg1"
	_ = h.c.CreateActor(act)
	if got := b.submitted(); !slices.Equal(got, []ids.TaskID{spec.TaskID}) {
		t.Errorf("group node got %v, want the task", got)
	}
	if got := b.recorded("create"); len(got) != 1 {
		t.Errorf("group node got %d actors, want 1", len(got))
	}
	if got := a.recorded("submit", "create"); len(got) != 0 {
		t.Errorf("other node got %v", got)
	}
}

// TestActorPlacementAndCalls: an actor is created on a node that fits; its
// calls, kills and its node are routed there.
func TestActorPlacementAndCalls(t *testing.T) {
	h := newHarness(t)
	a := h.add(0, cpu(2), nil)
	b := h.add(1, map[string]float64{"CPU": 2, "GPU": 1}, nil)
	act := h.actor("A", map[string]float64{"GPU": 1}, 0, 0, raylet.Scheduling{})
	_ = h.c.CreateActor(act)
	c1, c2 := h.call(act, "m1"), h.call(act, "m2")
	for _, c := range []*raylet.ActorCall{c1, c2} {
		if err := h.c.SubmitActorTask(c); err != nil {
			t.Fatalf("SubmitActorTask: %v", err)
		}
	}
	if err := h.c.KillActor(act.ActorID, true); err != nil {
		t.Fatalf("KillActor: %v", err)
	}
	want := []op{
		{Kind: "create", Actor: act.ActorID},
		{Kind: "call", Task: c1.TaskID, Actor: act.ActorID, Method: "m1"},
		{Kind: "call", Task: c2.TaskID, Actor: act.ActorID, Method: "m2"},
		{Kind: "kill", Actor: act.ActorID, NoRestart: true},
	}
	if got := b.recorded(); !slices.Equal(got, want) {
		t.Errorf("b ops %+v, want %+v", got, want)
	}
	if got := a.recorded(); len(got) != 0 {
		t.Errorf("a ops %+v, want none", got)
	}
	if id, ok := h.c.ActorNode(act.ActorID); !ok || id != b.id {
		t.Errorf("ActorNode = %s, %v; want %s", short(id), ok, short(b.id))
	}

	unknown := ids.NewActorID(job1)
	if err := h.c.SubmitActorTask(&raylet.ActorCall{TaskID: ids.NewTaskID(unknown), ActorID: unknown}); !errors.Is(err, ErrUnknownActor) {
		t.Errorf("call to an unknown actor: %v, want ErrUnknownActor", err)
	}
	if err := h.c.KillActor(unknown, false); !errors.Is(err, ErrUnknownActor) {
		t.Errorf("kill of an unknown actor: %v, want ErrUnknownActor", err)
	}
	if _, ok := h.c.ActorNode(unknown); ok {
		t.Errorf("ActorNode of an unknown actor reports one")
	}
}

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
	act := h.actor("A", cpu(32), 0, 0, raylet.Scheduling{})
	_ = h.c.CreateActor(act)
	if n := h.pendingLen(); n != 1 {
		t.Fatalf("%d parked, want 1", n)
	}
	var calls []*raylet.ActorCall
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
	big.onCreate = func(*raylet.ActorSpec) { _ = h.c.SubmitActorTask(during) }
	big.onCall = func(c *raylet.ActorCall) {
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
		{"submit", func() { _ = h.c.Submit(h.task("f", cpu(1), 0, raylet.Scheduling{})) }, false},
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

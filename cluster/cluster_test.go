package cluster

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/gray-cluster/gray/gcs"
	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/taskspec"
)

// TestPlacement places one task in a three-node cluster under each strategy
// and checks which member got it.
func TestPlacement(t *testing.T) {
	const region = "ray.io/availability-region"
	for _, tc := range []struct {
		name string
		res  map[string]float64
		s    func(a, b, c *fakeMember) taskspec.Scheduling
		want int // index of the member (0, 1, 2)
	}{
		{name: "default, only one node has a GPU", res: map[string]float64{"GPU": 1}, want: 1},
		{name: "default, only one node has 16 CPUs", res: cpu(16), want: 2},
		{name: "default, custom resource", res: map[string]float64{"accel": 1}, want: 0},
		{name: "hard affinity to a node with less room", res: cpu(1),
			s: func(a, _, _ *fakeMember) taskspec.Scheduling { return affinity(a.id, false) }, want: 0},
		{name: "hard affinity, target full now (queues there)", res: cpu(2),
			s: func(_, b, _ *fakeMember) taskspec.Scheduling { return affinity(b.id, false) }, want: 1},
		{name: "soft affinity to a node that fits", res: cpu(1),
			s: func(_, _, c *fakeMember) taskspec.Scheduling { return affinity(c.id, true) }, want: 2},
		{name: "soft affinity to a node that can never fit", res: cpu(8),
			s: func(a, _, _ *fakeMember) taskspec.Scheduling { return affinity(a.id, true) }, want: 2},
		{name: "label selector r2", res: cpu(1),
			s: func(_, _, _ *fakeMember) taskspec.Scheduling {
				return taskspec.Scheduling{Labels: map[string]string{region: "r2"}}
			},
			want: 1},
		{name: "label selector not r1 and not r2", res: cpu(1),
			s: func(_, _, _ *fakeMember) taskspec.Scheduling {
				return taskspec.Scheduling{Labels: map[string]string{region: "!in(r1,r2)"}}
			},
			want: 2},
		{name: "node-id label", res: cpu(1),
			s: func(a, _, _ *fakeMember) taskspec.Scheduling {
				return taskspec.Scheduling{Labels: map[string]string{"ray.io/node-id": a.id.Hex()}}
			}, want: 0},
		{name: "spread, first of the rotation", res: cpu(1),
			s: func(_, _, _ *fakeMember) taskspec.Scheduling { return taskspec.Scheduling{Kind: "SPREAD"} }, want: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			ms := []*fakeMember{
				h.add(0, map[string]float64{"CPU": 4, "accel": 1}, map[string]string{region: "r1"}),
				h.add(1, map[string]float64{"CPU": 4, "GPU": 1}, map[string]string{region: "r2"}),
				h.add(2, cpu(16), map[string]string{region: "r3"}),
			}
			ms[1].setAvailable(map[string]float64{"CPU": 0, "GPU": 1})
			var s taskspec.Scheduling
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
		s    taskspec.Scheduling
		res  map[string]float64
	}{
		{name: "hard affinity to an unknown node", s: affinity(nodeID(99), false), res: cpu(1)},
		{name: "bad label key", s: taskspec.Scheduling{Labels: map[string]string{"bad key!": "x"}}, res: cpu(1)},
		{name: "negative resource", res: cpu(-1)},
		{name: "affinity without a node id", s: taskspec.Scheduling{Kind: "NODE_AFFINITY"}, res: cpu(1)},
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
			spec := h.task("s", cpu(1), 0, taskspec.Scheduling{Kind: "SPREAD"})
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
		_ = h.c.Submit(h.task("s", cpu(1), 0, taskspec.Scheduling{Kind: "SPREAD"}))
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

	var specs []*taskspec.TaskSpec
	for range 5 {
		s := h.task("t", cpu(1), 0, taskspec.Scheduling{})
		specs = append(specs, s)
		_ = h.c.Submit(s)
	}
	for range 5 {
		_ = h.c.Submit(h.task("t", cpu(1), 0, taskspec.Scheduling{Kind: "SPREAD"}))
	}
	act := h.actor("A", cpu(1), 0, 0, taskspec.Scheduling{})
	_ = h.c.CreateActor(act)
	pinned := h.task("pinned", cpu(1), 0, affinity(b.id, false))
	_ = h.c.Submit(pinned)
	// Feasible only on b, which is suspect: it waits, without a warning.
	big := h.task("big", cpu(32), 0, taskspec.Scheduling{})
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
		_ = h.c.Submit(h.task("t", cpu(1), 0, taskspec.Scheduling{Kind: "SPREAD"}))
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
	spec := h.task("huge", cpu(64), 0, taskspec.Scheduling{})
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
	spec := h.task("f", cpu(1), 0, taskspec.Scheduling{})
	act := h.actor("A", cpu(1), 0, 0, taskspec.Scheduling{})
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
	spec := h.task("f", cpu(1), 0, taskspec.Scheduling{})
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

// TestActorPlacementAndCalls: an actor is created on a node that fits; its
// calls, kills and its node are routed there.
func TestActorPlacementAndCalls(t *testing.T) {
	h := newHarness(t)
	a := h.add(0, cpu(2), nil)
	b := h.add(1, map[string]float64{"CPU": 2, "GPU": 1}, nil)
	act := h.actor("A", map[string]float64{"GPU": 1}, 0, 0, taskspec.Scheduling{})
	_ = h.c.CreateActor(act)
	c1, c2 := h.call(act, "m1"), h.call(act, "m2")
	for _, c := range []*taskspec.ActorCall{c1, c2} {
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
	if err := h.c.SubmitActorTask(&taskspec.ActorCall{TaskID: ids.NewTaskID(unknown), ActorID: unknown}); !errors.Is(err, ErrUnknownActor) {
		t.Errorf("call to an unknown actor: %v, want ErrUnknownActor", err)
	}
	if err := h.c.KillActor(unknown, false); !errors.Is(err, ErrUnknownActor) {
		t.Errorf("kill of an unknown actor: %v, want ErrUnknownActor", err)
	}
	if _, ok := h.c.ActorNode(unknown); ok {
		t.Errorf("ActorNode of an unknown actor reports one")
	}
}

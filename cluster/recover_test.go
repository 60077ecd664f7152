package cluster

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/gray-cluster/gray/gcs"
	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/taskspec"
)

// TestNodeDeadTasks: a dead node's tasks run elsewhere within their retries;
// the others fail with NodeDiedError.
func TestNodeDeadTasks(t *testing.T) {
	for _, tc := range []struct {
		name       string
		maxRetries int
		s          func(dead ids.NodeID) taskspec.Scheduling
		res        map[string]float64
		// wantRetries is the MaxRetries the survivor receives; wantErr the
		// error the returns are sealed with instead ("" for none); parked
		// that the task waits at the head.
		wantRetries int
		wantErr     string
		parked      bool
	}{
		{name: "no retries", maxRetries: 0, wantErr: "ray.exceptions.NodeDiedError"},
		{name: "two retries", maxRetries: 2, wantRetries: 1},
		{name: "one retry", maxRetries: 1, wantRetries: 0},
		{name: "unlimited", maxRetries: -1, wantRetries: -1},
		{name: "spread", maxRetries: 1, wantRetries: 0,
			s: func(ids.NodeID) taskspec.Scheduling { return taskspec.Scheduling{Kind: "SPREAD"} }},
		{name: "soft affinity to the dead node", maxRetries: 1, wantRetries: 0,
			s: func(d ids.NodeID) taskspec.Scheduling { return affinity(d, true) }},
		{name: "hard affinity to the dead node", maxRetries: 3,
			s:       func(d ids.NodeID) taskspec.Scheduling { return affinity(d, false) },
			wantErr: "ray.exceptions.TaskUnschedulableError"},
		{name: "no survivor can fit it", maxRetries: 1, res: cpu(8), parked: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			a := h.add(0, cpu(8), nil)
			var s taskspec.Scheduling
			if tc.s != nil {
				s = tc.s(a.id)
			}
			res := tc.res
			if res == nil {
				res = cpu(1)
			}
			spec := h.task("f", res, tc.maxRetries, s)
			_ = h.c.Submit(spec)
			if got := a.submitted(); !slices.Equal(got, []ids.TaskID{spec.TaskID}) {
				t.Fatalf("a got %v, want the task", got)
			}
			b := h.add(1, cpu(4), nil)
			h.c.NodeDead(a.id, "kill -9", Lost{Tasks: []*taskspec.TaskSpec{spec}})

			got := b.recorded("submit")
			switch {
			case tc.wantErr != "":
				if len(got) != 0 {
					t.Errorf("survivor got %+v, want nothing", got)
				}
				h.wantSealed(tc.wantErr, spec.ReturnIDs()...)
				if tc.wantErr == "ray.exceptions.NodeDiedError" {
					_, args := h.sealedError(spec.ReturnIDs()[0])
					if msg := argString(args); !strings.Contains(msg, a.id.Hex()) || !strings.Contains(msg, "kill -9") {
						t.Errorf("NodeDiedError message %q lacks the node or the reason", msg)
					}
				}
			case tc.parked:
				if len(got) != 0 {
					t.Errorf("survivor got %+v, want nothing", got)
				}
				h.wantPending(spec.ReturnIDs()...)
				if n := h.pendingLen(); n != 1 {
					t.Errorf("%d parked, want 1", n)
				}
				big := h.add(2, cpu(8), nil)
				h.c.retryPending()
				if got := big.recorded("submit"); len(got) != 1 || got[0].MaxRetries != tc.maxRetries-1 {
					t.Errorf("new node got %+v, want the task with %d retries", got, tc.maxRetries-1)
				}
			default:
				if len(got) != 1 || got[0].Task != spec.TaskID || got[0].MaxRetries != tc.wantRetries {
					t.Errorf("survivor got %+v, want the task with MaxRetries %d", got, tc.wantRetries)
				}
				h.wantPending(spec.ReturnIDs()...)
			}
			if got := a.recorded("submit"); len(got) != 1 {
				t.Errorf("dead node got %d submits in all, want 1", len(got))
			}
		})
	}
}

// TestTaskRetryBudget: each death spends one retry; the last one fails.
func TestTaskRetryBudget(t *testing.T) {
	h := newHarness(t)
	n0 := h.add(0, cpu(1), nil)
	spec := h.task("f", cpu(1), 2, taskspec.Scheduling{})
	_ = h.c.Submit(spec)
	prev := n0
	for i, want := range []int{1, 0} {
		next := h.add(i+1, cpu(1), nil)
		h.c.NodeDead(prev.id, "died", Lost{Tasks: []*taskspec.TaskSpec{spec}})
		got := next.recorded("submit")
		if len(got) != 1 || got[0].MaxRetries != want {
			t.Fatalf("death %d: next node got %+v, want MaxRetries %d", i+1, got, want)
		}
		h.wantPending(spec.ReturnIDs()...)
		prev = next
	}
	last := h.add(9, cpu(1), nil)
	h.c.NodeDead(prev.id, "died", Lost{Tasks: []*taskspec.TaskSpec{spec}})
	if got := last.recorded("submit"); len(got) != 0 {
		t.Fatalf("task retried a third time: %+v", got)
	}
	h.wantSealed("ray.exceptions.NodeDiedError", spec.ReturnIDs()...)
}

// TestNodeDeadActors: a dead node's actors restart elsewhere within their
// restarts; lost calls of a restarted actor are sent again in order when
// it retries tasks, and everything else fails with ActorDiedError.
func TestNodeDeadActors(t *testing.T) {
	for _, tc := range []struct {
		name                        string
		maxRestarts, maxTaskRetries int
		restarted                   bool
		wantRestarts                int
		callsRetried                bool
	}{
		{name: "no restarts", maxRestarts: 0, maxTaskRetries: 3},
		{name: "one restart, retries calls", maxRestarts: 1, maxTaskRetries: 1, restarted: true, wantRestarts: 0, callsRetried: true},
		{name: "unlimited", maxRestarts: -1, maxTaskRetries: -1, restarted: true, wantRestarts: -1, callsRetried: true},
		{name: "restart without call retries", maxRestarts: 2, maxTaskRetries: 0, restarted: true, wantRestarts: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			a := h.add(0, cpu(4), nil)
			act := h.actor("Counter", cpu(1), tc.maxRestarts, tc.maxTaskRetries, taskspec.Scheduling{})
			_ = h.c.CreateActor(act)
			var lost []*taskspec.ActorCall
			for i := range 3 {
				c := h.call(act, fmt.Sprintf("m%d", i))
				lost = append(lost, c)
				_ = h.c.SubmitActorTask(c)
			}
			if got := a.recorded("create", "call"); len(got) != 4 {
				t.Fatalf("a got %d ops, want create and 3 calls", len(got))
			}
			b := h.add(1, cpu(4), nil)
			h.c.NodeDead(a.id, "gone", Lost{Actors: []*taskspec.ActorSpec{act}, Calls: lost})

			later := h.call(act, "later")
			_ = h.c.SubmitActorTask(later)

			var gotOps []string
			for _, o := range b.recorded() {
				switch o.Kind {
				case "create":
					gotOps = append(gotOps, fmt.Sprintf("create/%d", o.MaxRestarts))
				case "call":
					gotOps = append(gotOps, o.Method)
				default:
					gotOps = append(gotOps, o.Kind)
				}
			}
			var wantOps []string
			switch {
			case tc.restarted && tc.callsRetried:
				wantOps = []string{fmt.Sprintf("create/%d", tc.wantRestarts), "m0", "m1", "m2", "later"}
			case tc.restarted:
				wantOps = []string{fmt.Sprintf("create/%d", tc.wantRestarts), "later"}
			}
			if !slices.Equal(gotOps, wantOps) {
				t.Errorf("survivor ops %v, want %v", gotOps, wantOps)
			}

			var lostReturns []ids.ObjectID
			for _, c := range lost {
				lostReturns = append(lostReturns, c.ReturnIDs()...)
			}
			if tc.callsRetried {
				h.wantPending(lostReturns...)
			} else {
				h.wantSealed("ray.exceptions.ActorDiedError", lostReturns...)
			}
			if tc.restarted {
				h.wantPending(later.ReturnIDs()...)
				if got := h.deadActors(); len(got) != 0 {
					t.Errorf("OnActorDead %v for a restarted actor", got)
				}
				if id, ok := h.c.ActorNode(act.ActorID); !ok || id != b.id {
					t.Errorf("ActorNode = %s, want the survivor", short(id))
				}
				if err := h.c.KillActor(act.ActorID, false); err != nil {
					t.Errorf("KillActor of the restarted actor: %v", err)
				}
			} else {
				h.wantSealed("ray.exceptions.ActorDiedError", later.ReturnIDs()...)
				if got := h.deadActors(); !slices.Equal(got, []ids.ActorID{act.ActorID}) {
					t.Errorf("OnActorDead %v, want the actor once", got)
				}
				if err := h.c.KillActor(act.ActorID, false); !errors.Is(err, ErrUnknownNode) {
					t.Errorf("KillActor of an actor on a dead node: %v, want ErrUnknownNode", err)
				}
			}
			if got := a.recorded("create", "call"); len(got) != 4 {
				t.Errorf("dead node got %d ops in all, want 4", len(got))
			}
		})
	}
}

// TestActorRestartBudget: a restarted actor spends its restarts; at the
// last death it is dead for good.
func TestActorRestartBudget(t *testing.T) {
	h := newHarness(t)
	a := h.add(0, cpu(1), nil)
	act := h.actor("A", cpu(1), 1, -1, taskspec.Scheduling{})
	_ = h.c.CreateActor(act)
	b := h.add(1, cpu(1), nil)
	h.c.NodeDead(a.id, "first", Lost{Actors: []*taskspec.ActorSpec{act}})
	if got := b.recorded("create"); len(got) != 1 || got[0].MaxRestarts != 0 {
		t.Fatalf("b creates %+v, want one with MaxRestarts 0", got)
	}
	c := h.add(2, cpu(1), nil)
	call := h.call(act, "m")
	h.c.NodeDead(b.id, "second", Lost{Actors: []*taskspec.ActorSpec{act}, Calls: []*taskspec.ActorCall{call}})
	if got := c.recorded(); len(got) != 0 {
		t.Fatalf("actor restarted beyond its budget: %+v", got)
	}
	if got := h.deadActors(); !slices.Equal(got, []ids.ActorID{act.ActorID}) {
		t.Fatalf("OnActorDead %v, want the actor", got)
	}
	h.wantSealed("ray.exceptions.ActorDiedError", call.ReturnIDs()...)
}

// TestRestartParkedQueuesLostCalls: an actor restarted while no node can
// take it waits; its lost calls and new ones wait with it and reach the node
// that finally creates it, in order.
func TestRestartParkedQueuesLostCalls(t *testing.T) {
	h := newHarness(t)
	a := h.add(0, cpu(8), nil)
	act := h.actor("A", cpu(8), 1, 1, taskspec.Scheduling{})
	_ = h.c.CreateActor(act)
	c0, c1 := h.call(act, "c0"), h.call(act, "c1")
	_ = h.c.SubmitActorTask(c0)
	_ = h.c.SubmitActorTask(c1)
	small := h.add(1, cpu(2), nil)
	h.c.NodeDead(a.id, "gone", Lost{Actors: []*taskspec.ActorSpec{act}, Calls: []*taskspec.ActorCall{c0, c1}})
	c2 := h.call(act, "c2")
	_ = h.c.SubmitActorTask(c2)
	if got := small.recorded(); len(got) != 0 {
		t.Fatalf("small node got %+v", got)
	}
	if n := h.pendingLen(); n != 1 {
		t.Fatalf("%d parked, want the actor", n)
	}
	h.wantPending(c0.ReturnIDs()[0], c1.ReturnIDs()[0], c2.ReturnIDs()[0])

	big := h.add(2, cpu(8), nil)
	h.c.retryPending()
	var got []string
	for _, o := range big.recorded() {
		got = append(got, o.Kind+":"+o.Method)
	}
	if want := []string{"create:", "call:c0", "call:c1", "call:c2"}; !slices.Equal(got, want) {
		t.Fatalf("big node ops %v, want %v", got, want)
	}
}

// TestLostCallsOfOtherActorsFail: calls lost with a node for an actor that
// did not die with it (e.g. in transit) fail, and the actor lives on.
func TestLostCallsOfOtherActorsFail(t *testing.T) {
	h := newHarness(t)
	a := h.add(0, cpu(1), nil)
	b := h.add(1, cpu(1), nil)
	act := h.actor("A", cpu(1), 5, 5, affinity(b.id, false))
	_ = h.c.CreateActor(act)
	c := h.call(act, "m")
	h.c.NodeDead(a.id, "gone", Lost{Calls: []*taskspec.ActorCall{c}})
	h.wantSealed("ray.exceptions.ActorDiedError", c.ReturnIDs()...)
	if got := h.deadActors(); len(got) != 0 {
		t.Errorf("OnActorDead %v", got)
	}
	next := h.call(act, "next")
	_ = h.c.SubmitActorTask(next)
	if got := b.recorded("call"); len(got) != 1 || got[0].Task != next.TaskID {
		t.Errorf("b calls %+v, want the next call", got)
	}
}

// TestNodeDeadHolders: every holder of a dead node is released in the store
// and reported.
func TestNodeDeadHolders(t *testing.T) {
	h := newHarness(t)
	a := h.add(0, cpu(1), nil)
	onlyW1 := ids.NewTaskID(ids.NilActorFor(job1)).ReturnID(1)
	shared := ids.NewTaskID(ids.NilActorFor(job1)).ReturnID(1)
	other := ids.NewTaskID(ids.NilActorFor(job1)).ReturnID(1)
	h.store.Create(onlyW1, "w1")
	h.store.Create(shared, "w2")
	h.store.Create(shared, "driver")
	h.store.Create(other, "w3")
	h.c.NodeDead(a.id, "gone", Lost{Holders: []string{"w1", "w2"}})
	if got := h.goneHolders(); !slices.Equal(got, []string{"w1", "w2"}) {
		t.Errorf("OnHolderGone %v, want w1, w2", got)
	}
	if h.store.Contains(onlyW1) {
		t.Errorf("object held only by a dead worker survives")
	}
	if !h.store.Contains(shared) || !h.store.Contains(other) {
		t.Errorf("object held by others was freed")
	}
	// The store's reference to w2 is gone: the driver's release frees it.
	if !h.store.Release(shared, "driver") || h.store.Contains(shared) {
		t.Errorf("shared object not freed by its last holder")
	}
}

// TestRecoverWithoutDeath: a provider that restarted stays a member; its
// lost work may be placed on it again.
func TestRecoverWithoutDeath(t *testing.T) {
	h := newHarness(t)
	a := h.add(0, cpu(2), nil)
	spec := h.task("f", cpu(1), 1, taskspec.Scheduling{})
	_ = h.c.Submit(spec)
	act := h.actor("A", cpu(1), 1, 1, taskspec.Scheduling{})
	_ = h.c.CreateActor(act)
	h.c.Recover(a.id, "the provider restarted", Lost{Tasks: []*taskspec.TaskSpec{spec}, Actors: []*taskspec.ActorSpec{act}})
	if got := a.recorded("submit"); len(got) != 2 || got[1].MaxRetries != 0 {
		t.Errorf("submits %+v, want the task again with MaxRetries 0", got)
	}
	if got := a.recorded("create"); len(got) != 2 || got[1].MaxRestarts != 0 {
		t.Errorf("creates %+v, want the actor again with MaxRestarts 0", got)
	}
	for _, n := range h.c.Nodes() {
		if n.State != gcs.NodeAlive {
			t.Errorf("node %s state %s after Recover", short(n.ID), n.State)
		}
	}
}

// TestRecoverWithoutStore: with no store configured, failures are dropped
// (nothing to seal) without a panic.
func TestRecoverWithoutStore(t *testing.T) {
	c := New(Config{Seed: 1})
	f := newFake(0, cpu(1))
	c.Add(f, gcs.NodeInfo{})
	spec := &taskspec.TaskSpec{TaskID: ids.NewTaskID(ids.NilActorFor(job1)), NumReturns: 1}
	act := &taskspec.ActorSpec{ActorID: ids.NewActorID(job1)}
	c.NodeDead(f.id, "x", Lost{Tasks: []*taskspec.TaskSpec{spec}, Actors: []*taskspec.ActorSpec{act},
		Calls: []*taskspec.ActorCall{{TaskID: ids.NewTaskID(act.ActorID), ActorID: act.ActorID, NumReturns: 1}}, Holders: []string{"w"}})
	_ = c.Submit(&taskspec.TaskSpec{TaskID: ids.NewTaskID(ids.NilActorFor(job1)), NumReturns: 1, Scheduling: affinity(nodeID(7), false)})
}

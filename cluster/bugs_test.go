package cluster

import (
	"fmt"
	"slices"
	"testing"

	"github.com/gray-cluster/gray/gcs"
	"github.com/gray-cluster/gray/taskspec"
)

// Regression tests for bugs found by reading the code.

// A client call made while a dead node's actor is being restarted overtakes
// the calls the node lost, which were submitted before it.
func TestRestartKeepsLostCallsFirst(t *testing.T) {
	h := newHarness(t)
	a := h.add(0, cpu(4), nil)
	act := h.actor("A", cpu(1), 1, 1, taskspec.Scheduling{})
	_ = h.c.CreateActor(act)
	lost0, lost1 := h.call(act, "lost0"), h.call(act, "lost1")
	_ = h.c.SubmitActorTask(lost0)
	_ = h.c.SubmitActorTask(lost1)
	b := newFake(1, cpu(4))
	newer := h.call(act, "newer")
	b.onCreate = func(*taskspec.ActorSpec) { _ = h.c.SubmitActorTask(newer) }
	h.c.Add(b, gcs.NodeInfo{})
	h.c.NodeDead(a.id, "gone", Lost{Actors: []*taskspec.ActorSpec{act}, Calls: []*taskspec.ActorCall{lost0, lost1}})
	var got []string
	for _, o := range b.recorded() {
		got = append(got, o.Kind+":"+o.Method)
	}
	if want := []string{"create:", "call:lost0", "call:lost1", "call:newer"}; !slices.Equal(got, want) {
		t.Fatalf("new node ops %v, want %v", got, want)
	}
}

// Cancelling a task that waits at the head (infeasible) does nothing: the
// task runs later when a node that fits joins.
func TestCancelParkedTask(t *testing.T) {
	h := newHarness(t)
	h.add(0, cpu(4), nil)
	spec := h.task("huge", cpu(64), 0, taskspec.Scheduling{})
	_ = h.c.Submit(spec)
	if err := h.c.Cancel(spec.TaskID, false); err != nil {
		t.Errorf("Cancel of a parked task: %v", err)
	}
	big := h.add(1, cpu(64), nil)
	h.c.retryPending()
	if got := big.submitted(); len(got) != 0 {
		t.Errorf("cancelled task submitted to the new node")
	}
	h.wantSealed("ray.exceptions.TaskCancelledError", spec.ReturnIDs()...)
}

// Killing an actor whose creation waits at the head fails with "unknown
// node 0000…" and the actor is still created later.
func TestKillParkedActor(t *testing.T) {
	h := newHarness(t)
	h.add(0, cpu(4), nil)
	act := h.actor("A", cpu(64), 0, 0, taskspec.Scheduling{})
	_ = h.c.CreateActor(act)
	c := h.call(act, "m")
	_ = h.c.SubmitActorTask(c)
	if err := h.c.KillActor(act.ActorID, true); err != nil {
		t.Errorf("KillActor of a pending actor: %v", err)
	}
	big := h.add(1, cpu(64), nil)
	h.c.retryPending()
	if got := big.recorded(); len(got) != 0 {
		t.Errorf("killed actor created later: %+v", got)
	}
	h.wantSealed("ray.exceptions.ActorDiedError", c.ReturnIDs()...)
}

// An actor call's MaxTaskRetries is spent per call: a call lost with its
// actor's node is resubmitted once with MaxTaskRetries 1, then fails with
// ActorDiedError, however often the actor itself restarts.
func TestActorCallRetriesSpentPerCall(t *testing.T) {
	h := newHarness(t)
	prev := h.add(0, cpu(1), nil)
	act := h.actor("A", cpu(1), -1, 1, taskspec.Scheduling{})
	_ = h.c.CreateActor(act)
	c := h.call(act, "m")
	_ = h.c.SubmitActorTask(c)
	for death := 1; death <= 3; death++ {
		next := h.add(death, cpu(1), nil)
		h.c.NodeDead(prev.id, fmt.Sprint("death ", death), Lost{Actors: []*taskspec.ActorSpec{act}, Calls: []*taskspec.ActorCall{c}})
		calls := next.recorded("call")
		if death == 1 && len(calls) != 1 {
			t.Fatalf("first death: call not retried")
		}
		if death > 1 && len(calls) != 0 {
			t.Fatalf("death %d: call retried again with MaxTaskRetries 1", death)
		}
		prev = next
	}
	h.wantSealed("ray.exceptions.ActorDiedError", c.ReturnIDs()...)
}

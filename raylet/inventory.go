package raylet

import (
	"strconv"

	"github.com/gray-cluster/gray/internal/ids"
)

// leaseID names one grant: a task attempt or an actor incarnation.
func leaseID(t *task) string {
	if t.lease != "" {
		return t.lease
	}
	return t.spec.TaskID.Hex() + ":" + strconv.Itoa(t.attempt)
}

func (r *Raylet) leaseStart(t *task) {
	if r.cfg.OnLease != nil && t.spec.TaskID != (ids.TaskID{}) {
		r.cfg.OnLease(leaseID(t), t.spec.JobID, t.spec.Resources)
	}
}

// TaskIDs lists the tasks the raylet has not finished.
func (r *Raylet) TaskIDs() []ids.TaskID {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]ids.TaskID, 0, len(r.tasks))
	for id := range r.tasks {
		out = append(out, id)
	}
	return out
}

// ActorIDs lists the actors the raylet hosts that are not dead.
func (r *Raylet) ActorIDs() []ids.ActorID {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]ids.ActorID, 0, len(r.actors))
	for id := range r.actors {
		out = append(out, id)
	}
	return out
}

// PendingReturns lists the return ids of the work the raylet still has to
// finish: its tasks and its actors' queued and running calls.
func (r *Raylet) PendingReturns() []ids.ObjectID {
	r.mu.Lock()
	var out []ids.ObjectID
	for _, t := range r.tasks {
		out = append(out, t.spec.ReturnIDs()...)
	}
	actors := make([]*actor, 0, len(r.actors))
	for _, a := range r.actors {
		actors = append(actors, a)
	}
	r.mu.Unlock()
	for _, a := range actors {
		a.mu.Lock()
		for _, c := range a.queue {
			out = append(out, c.ReturnIDs()...)
		}
		for _, c := range a.inflight {
			out = append(out, c.ReturnIDs()...)
		}
		a.mu.Unlock()
	}
	return out
}

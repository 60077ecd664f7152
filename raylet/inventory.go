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

package raylet

import (
	"maps"
	"sort"

	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/taskspec"
)

// TaskRun is where one task or actor call stands on this raylet, for the
// State API: read-only, taken under the raylet's locks.
type TaskRun struct {
	TaskID  ids.TaskID
	ActorID ids.ActorID // zero for normal tasks
	Attempt int
	// State is a Ray TaskStatus name: PENDING_ARGS_AVAIL (waiting for its
	// arguments), PENDING_NODE_ASSIGNMENT (queued for resources) or RUNNING.
	State    string
	WorkerID string
	PID      int
}

// ActorRun is one hosted actor's state and process.
type ActorRun struct {
	ActorID  ids.ActorID
	State    taskspec.ActorState
	WorkerID string
	PID      int
	Restarts int
}

// Runs lists the unfinished tasks and actor calls this raylet holds.
func (r *Raylet) Runs() []TaskRun {
	r.mu.Lock()
	var out []TaskRun
	for id, t := range r.tasks {
		run := TaskRun{TaskID: id, Attempt: t.attempt}
		switch t.state {
		case stateWaitingDeps:
			run.State = "PENDING_ARGS_AVAIL"
		case stateQueued:
			run.State = "PENDING_NODE_ASSIGNMENT"
		case stateRunning:
			run.State = "RUNNING"
		default:
			continue
		}
		if t.onGrant != nil {
			continue // an actor's resource grant, not a task of its own
		}
		if t.worker != nil {
			run.WorkerID, run.PID = t.worker.id, t.worker.pid
		}
		out = append(out, run)
	}
	actors := make([]*actor, 0, len(r.actors))
	for _, a := range r.actors {
		actors = append(actors, a)
	}
	r.mu.Unlock()
	for _, a := range actors {
		a.mu.Lock()
		var wid string
		var pid int
		if a.worker != nil {
			wid, pid = a.worker.id, a.worker.pid
		}
		for id, c := range a.inflight {
			out = append(out, TaskRun{TaskID: id, ActorID: c.ActorID, Attempt: c.Attempts, State: "RUNNING", WorkerID: wid, PID: pid})
		}
		for _, c := range a.queue {
			out = append(out, TaskRun{TaskID: c.TaskID, ActorID: c.ActorID, Attempt: c.Attempts, State: "SUBMITTED_TO_WORKER"})
		}
		a.mu.Unlock()
	}
	return out
}

// ActorRuns lists the actors this raylet hosts.
func (r *Raylet) ActorRuns() []ActorRun {
	r.mu.Lock()
	actors := make([]*actor, 0, len(r.actors))
	for _, a := range r.actors {
		actors = append(actors, a)
	}
	r.mu.Unlock()
	out := make([]ActorRun, 0, len(actors))
	for _, a := range actors {
		a.mu.Lock()
		run := ActorRun{ActorID: a.spec.ActorID, State: a.state, Restarts: a.restarts}
		if a.worker != nil {
			run.WorkerID, run.PID = a.worker.id, a.worker.pid
		}
		a.mu.Unlock()
		out = append(out, run)
	}
	return out
}

// Demand is a request shape waiting for resources and how many wait.
type Demand struct {
	Shape map[string]float64
	Count int
}

// Demands lists the shapes of the tasks and actors queued for resources
// here, largest count first.
func (r *Raylet) Demands() []Demand {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Demand
	for _, c := range r.queue.classes {
		n := 0
		var shape map[string]float64
		for _, q := range c.tasks {
			if q.t.cancelled {
				continue
			}
			n++
			if shape == nil {
				shape = maps.Clone(q.t.spec.Resources)
			}
		}
		if n > 0 {
			out = append(out, Demand{Shape: shape, Count: n})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Count > out[j].Count })
	return out
}

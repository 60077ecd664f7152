package cluster

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/gray-cluster/gray/gcs"
	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/objectstore"
	"github.com/gray-cluster/gray/rayerr"
	"github.com/gray-cluster/gray/scheduler"
	"github.com/gray-cluster/gray/taskspec"
)

// Lost is what a dead node was doing for the cluster.
type Lost struct {
	Tasks  []*taskspec.TaskSpec
	Actors []*taskspec.ActorSpec
	Calls  []*taskspec.ActorCall
	// Holders are the node's workers' holder keys in the head's store.
	Holders []string
}

// pendingWork is a task or actor no node can take now; it is placed again
// whenever the node table changes.
type pendingWork struct {
	task  *taskspec.TaskSpec
	actor *taskspec.ActorSpec
}

// Run retries pending work whenever the node table changes, until ctx ends.
func (c *Cluster) Run(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.Changed():
		case <-c.poke:
		case <-tick.C:
		}
		c.retryGroups()
		c.retryPending()
	}
}

func (c *Cluster) park(w pendingWork, err error) {
	c.mu.Lock()
	c.pending = append(c.pending, w)
	c.mu.Unlock()
	what, res := "", map[string]float64(nil)
	if w.task != nil {
		what, res = "task "+w.task.Name, w.task.Resources
	} else {
		what, res = "actor "+w.actor.Name, w.actor.Resources
	}
	if errors.Is(err, scheduler.ErrInfeasible) {
		c.warn(w, fmt.Sprintf("Warning: The following resource request cannot be scheduled right now: %v (%s). No node in the cluster can fit it; it stays pending until one that can joins.", res, what))
	} else {
		c.log.Debug("work waits for a node", "what", what, "err", err)
	}
}

func (c *Cluster) warn(w pendingWork, msg string) {
	c.log.Warn(msg)
	if c.cfg.Warn == nil {
		return
	}
	if w.task != nil {
		c.cfg.Warn(w.task.JobID, msg)
	} else {
		c.cfg.Warn(w.actor.JobID, msg)
	}
}

func (c *Cluster) retryPending() {
	c.mu.Lock()
	list := c.pending
	c.pending = nil
	c.mu.Unlock()
	var still []pendingWork
	for _, w := range list {
		var err error
		if w.task != nil {
			err = c.trySubmit(w.task)
		} else {
			err = c.tryCreateActor(w.actor)
		}
		switch {
		case err == nil:
		case errors.Is(err, scheduler.ErrNoNode) || errors.Is(err, scheduler.ErrInvalid):
			// Its hard-affinity node is gone for good.
			if w.task != nil {
				c.unschedulable(w.task, err)
			} else {
				c.actorGone(w.actor.ActorID)
			}
		default:
			still = append(still, w)
		}
	}
	c.mu.Lock()
	c.pending = append(still, c.pending...)
	c.mu.Unlock()
}

// NodeDead removes a node for good and recovers its work: tasks with
// retries left run elsewhere, actors with restarts left restart elsewhere,
// and everything else fails with the error Ray raises for a dead node.
func (c *Cluster) NodeDead(id ids.NodeID, reason string, lost Lost) {
	c.mu.Lock()
	m := c.members[id]
	if m == nil {
		c.mu.Unlock()
		return
	}
	delete(c.members, id)
	info := m.info
	info.State, info.DeathReason = gcs.NodeDead, reason
	info.Available = map[string]float64{}
	info.Total = m.m.Total()
	c.dead[id] = info
	c.notifyLocked()
	c.mu.Unlock()
	c.log.Warn("node dead", "node", id.Hex(), "reason", reason, "tasks", len(lost.Tasks), "actors", len(lost.Actors), "calls", len(lost.Calls))
	c.forgetNode(id)
	c.groupsLostNode(id)
	c.Recover(id, reason, lost)
}

// Recover re-places work a node lost (it died, or restarted and came back
// without it) within the tasks' retries and actors' restarts, and fails the
// rest with the error Ray raises for a dead node.
func (c *Cluster) Recover(id ids.NodeID, reason string, lost Lost) {

	for _, h := range lost.Holders {
		if c.cfg.Store != nil {
			c.cfg.Store.ReleaseAll(h)
		}
		if c.cfg.OnHolderGone != nil {
			c.cfg.OnHolderGone(h)
		}
	}
	nodeDied := c.errorValue(rayerr.NodeDied(fmt.Sprintf("The node %s running this task died (%s).", id.Hex(), reason)))
	for _, t := range lost.Tasks {
		if t.MaxRetries == 0 {
			c.fail(t.ReturnIDs(), nodeDied)
			continue
		}
		if t.MaxRetries > 0 {
			t.MaxRetries--
		}
		c.log.Info("retrying task of dead node", "task", t.TaskID.Hex(), "name", t.Name)
		_ = c.Submit(t)
	}
	restart := map[ids.ActorID]*taskspec.ActorSpec{}
	for _, a := range lost.Actors {
		if a.MaxRestarts != 0 {
			restart[a.ActorID] = a
		}
	}
	// Lost calls of actors that restart go to the front of their queue, in
	// their order, before the actor is created again (so calls made during
	// the restart come after them); the rest fail.
	died := c.errorValue(rayerr.ActorDied())
	requeue := map[ids.ActorID][]*taskspec.ActorCall{}
	for _, call := range lost.Calls {
		// max_task_retries is per call: each resend spends one.
		if a := restart[call.ActorID]; a != nil && (a.MaxTaskRetries < 0 || call.Attempts < a.MaxTaskRetries) {
			call.Attempts++
			requeue[call.ActorID] = append(requeue[call.ActorID], call)
			continue
		}
		c.fail(call.ReturnIDs(), died)
	}
	for _, a := range lost.Actors {
		if restart[a.ActorID] == nil {
			c.actorGone(a.ActorID)
			continue
		}
		if a.MaxRestarts > 0 {
			a.MaxRestarts--
		}
		c.log.Info("restarting actor of dead node", "actor", a.ActorID.Hex(), "class", a.Name)
		c.mu.Lock()
		if pa := c.actors[a.ActorID]; pa != nil {
			pa.placed = false
			pa.queued = append(requeue[a.ActorID], pa.queued...)
		}
		c.mu.Unlock()
		_ = c.CreateActor(a)
	}
}

func (c *Cluster) actorGone(id ids.ActorID) {
	c.mu.Lock()
	var queued []*taskspec.ActorCall
	if a := c.actors[id]; a != nil {
		a.dead = true
		queued = a.takeQueued()
	}
	c.mu.Unlock()
	died := c.errorValue(rayerr.ActorDied())
	for _, call := range queued {
		c.fail(call.ReturnIDs(), died)
	}
	if c.cfg.OnActorDead != nil {
		c.cfg.OnActorDead(id)
	}
}

// errorValue is an object value that raises e on the client.
func (c *Cluster) errorValue(e rayerr.Exception) []byte { return e.Pickle() }

// fail seals results as an error value.
func (c *Cluster) fail(returns []ids.ObjectID, value []byte) {
	if c.cfg.Store == nil {
		return
	}
	for _, id := range returns {
		c.cfg.Store.Seal(&objectstore.Object{ID: id, Chunks: [][]byte{value}, Size: int64(len(value)), IsError: true})
	}
}

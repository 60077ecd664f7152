package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/gray-cluster/gray/gcs"
	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/objectstore"
	"github.com/gray-cluster/gray/taskspec"
)

// This file keeps the cluster's tables durable: provider nodes and
// placement groups are written through to the GCS store on every change
// (Config.Nodes, Config.Groups), an actor's placement is reported to the
// actor table (Config.OnActorPlaced), and a restarted head loads them back
// (RestoreNode, RestoreGroup, RestoreActor).

// ErrBadRecord is a stored record the cluster cannot use.
var ErrBadRecord = errors.New("cluster: bad stored record")

const actorSpecVersion = 1

type storedSpec struct {
	V    int                 `json:"v"`
	Spec *taskspec.ActorSpec `json:"spec"`
}

// EncodeActorSpec is the stored form of an actor's spec (versioned JSON).
func EncodeActorSpec(spec *taskspec.ActorSpec) ([]byte, error) {
	return json.Marshal(storedSpec{V: actorSpecVersion, Spec: spec})
}

// DecodeActorSpec reads what EncodeActorSpec wrote.
func DecodeActorSpec(b []byte) (*taskspec.ActorSpec, error) {
	var s storedSpec
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%w: actor spec: %v", ErrBadRecord, err)
	}
	if s.V != actorSpecVersion || s.Spec == nil {
		return nil, fmt.Errorf("%w: actor spec version %d", ErrBadRecord, s.V)
	}
	return s.Spec, nil
}

// storeNode writes a provider's record through to the node table.
func (c *Cluster) storeNode(info gcs.NodeInfo) {
	if c.cfg.Nodes == nil || info.IsHead {
		return
	}
	if err := c.cfg.Nodes.Put(context.Background(), info); err != nil {
		c.log.Warn("node table", "node", info.ID.Hex(), "err", err)
	}
}

// forgetNode removes a dead provider from the node table.
func (c *Cluster) forgetNode(id ids.NodeID) {
	if c.cfg.Nodes == nil {
		return
	}
	if err := c.cfg.Nodes.Delete(context.Background(), id); err != nil {
		c.log.Warn("node table", "node", id.Hex(), "err", err)
	}
}

// groupRecordLocked is g as the group table keeps it (c.mu held).
func groupRecordLocked(g *group) gcs.PlacementGroupRecord {
	return gcs.PlacementGroupRecord{ID: g.id, Name: g.name, Strategy: g.strategy, Job: g.job, Detached: g.detached,
		State: g.state, Bundles: g.bundles, Nodes: slices.Clone(g.nodes)}
}

// storeGroup writes g through to the group table as it is now (a removed
// group leaves it).
func (c *Cluster) storeGroup(g *group) {
	if c.cfg.Groups == nil {
		return
	}
	c.mu.Lock()
	rec := groupRecordLocked(g)
	c.mu.Unlock()
	var err error
	if rec.State == PGRemoved {
		err = c.cfg.Groups.Delete(context.Background(), rec.ID)
	} else {
		err = c.cfg.Groups.Put(context.Background(), rec)
	}
	if err != nil {
		c.log.Warn("placement group table", "pg", rec.ID, "err", err)
	}
}

// actorPlaced reports an actor's new node to the actor table.
func (c *Cluster) actorPlaced(spec *taskspec.ActorSpec, node ids.NodeID) {
	if c.cfg.OnActorPlaced != nil {
		c.cfg.OnActorPlaced(spec, node)
	}
}

// RestoreNode adds a provider known from the node table as a suspect
// member (it gets no work) until it reconnects, or is declared dead.
func (c *Cluster) RestoreNode(m Member, info gcs.NodeInfo) {
	c.add(m, info, false)
	c.SetState(info.ID, gcs.NodeSuspect)
}

// RestoreGroup puts a stored placement group back in the table, its
// bundles on the nodes that held them (which keep their reservations
// across the head's restart; a node that does not come back loses them
// like any dead node). A group of a job that ended (every job did, with
// the head) is removed unless it is detached.
func (c *Cluster) RestoreGroup(rec gcs.PlacementGroupRecord) error {
	bst, err := bundleStrategy(rec.Strategy)
	if err != nil {
		return fmt.Errorf("%w: placement group %s: %w", ErrBadRecord, rec.ID, err)
	}
	g := &group{
		id: rec.ID, name: rec.Name, strategy: rec.Strategy, bst: bst, job: rec.Job, detached: rec.Detached,
		bundles: rec.Bundles, nodes: slices.Clone(rec.Nodes), state: rec.State,
		ready: make(chan struct{}), gone: make(chan struct{}),
	}
	c.mu.Lock()
	for i, n := range g.nodes {
		if _, ok := c.members[n]; !ok {
			g.nodes[i] = ids.NodeID{} // the old head's, or a node already gone
		}
	}
	switch {
	case g.state == PGCreated && !g.complete():
		g.state = PGRescheduling
		close(g.ready)
	case g.state == PGCreated || g.state == PGRescheduling:
		close(g.ready)
	}
	c.groups[g.id] = g
	c.mu.Unlock()
	if !g.detached {
		c.log.Info("removing a restored placement group of an ended job", "pg", g.id)
		return c.RemovePlacementGroup(g.id)
	}
	c.log.Info("placement group restored", "pg", g.id, "name", g.name, "state", g.state)
	c.storeGroup(g)
	c.Poke()
	return nil
}

// RestoreActor puts a stored actor back: on its node, waiting (calls
// queue) until that node reconnects and reports it alive (Reattach); one
// that was waiting for a node is created again (it waits again). An
// actor whose node is gone (the old head's, or a node already dead) is
// recovered as a dead node's actor: restarted within its max_restarts, else
// dead. class is its pickled class payload, stored again in the head's
// object store for restarts.
func (c *Cluster) RestoreActor(spec *taskspec.ActorSpec, node ids.NodeID, class []byte) {
	const holder = "restored-actor-class"
	if c.cfg.Store != nil && len(class) > 0 && !c.cfg.Store.Contains(spec.ClassID) {
		obj := &objectstore.Object{ID: spec.ClassID, Chunks: [][]byte{class}, Size: int64(len(class))}
		if err := c.cfg.Store.Put(obj, holder); err != nil {
			c.log.Warn("restore actor class", "actor", spec.ActorID.Hex(), "err", err)
		}
	}
	if !slices.Contains(spec.Pins, spec.ClassID) {
		spec.Pins = append(spec.Pins, spec.ClassID)
	}
	if c.cfg.Store != nil {
		// Pinned as its node's member pinned it when it was created (the
		// member unpins it when the actor dies or its node does).
		c.cfg.Store.Pin(spec.Pins)
		c.cfg.Store.Release(spec.ClassID, holder)
	}
	// Objects the constructor's arguments referred to died with the old
	// head: such an actor cannot be constructed again.
	for _, d := range spec.Deps {
		if c.cfg.Store == nil || !c.cfg.Store.Contains(d) {
			spec.MaxRestarts = 0
			break
		}
	}
	if node == (ids.NodeID{}) {
		// It was waiting for a node: it waits again.
		_ = c.CreateActor(spec)
		return
	}
	c.mu.Lock()
	c.actors[spec.ActorID] = &placedActor{spec: spec, node: node}
	_, onMember := c.members[node]
	c.mu.Unlock()
	if !onMember {
		c.log.Info("restored actor's node is gone", "actor", spec.ActorID.Hex(), "node", node.Hex())
		c.Recover(node, "it ran on the head before it restarted", Lost{Actors: []*taskspec.ActorSpec{spec}})
		if c.cfg.Store != nil {
			c.cfg.Store.Unpin(spec.Pins)
		}
	}
}

// Reattach marks the actors a reconnected node still runs as placed there,
// after sending the calls that queued meanwhile (in order: an actor counts
// as placed only once none are left, as after a creation).
func (c *Cluster) Reattach(node ids.NodeID, actors []ids.ActorID) {
	c.mu.Lock()
	m := c.members[node]
	c.mu.Unlock()
	if m == nil {
		return
	}
	for _, id := range actors {
		sent := 0
		for {
			c.mu.Lock()
			a := c.actors[id]
			if a == nil || a.dead || a.node != node || a.placed {
				c.mu.Unlock()
				break
			}
			calls := a.takeQueued()
			if len(calls) == 0 {
				a.placed = true
				c.mu.Unlock()
				c.log.Info("actor re-attached", "actor", id.Hex(), "node", node.Hex(), "queued_calls", sent)
				break
			}
			c.mu.Unlock()
			for _, call := range calls {
				if err := m.m.SubmitActorTask(call); err != nil {
					c.log.Warn("queued actor call", "actor", id.Hex(), "err", err)
				}
			}
			sent += len(calls)
		}
	}
}

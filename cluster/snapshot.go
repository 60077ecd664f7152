package cluster

import (
	"maps"
	"slices"
	"strings"

	"github.com/gray-cluster/gray/internal/ids"
)

// ActorPlacement is where the cluster put an actor.
type ActorPlacement struct {
	Node ids.NodeID
	// Placed: the node took it; Dead: it died with its node for good.
	Placed, Dead bool
	// Resources are what it holds; PlacementGroup its group (hex) or "".
	Resources      map[string]float64
	PlacementGroup string
}

// ActorPlacements snapshots the placement of every actor the cluster knows.
func (c *Cluster) ActorPlacements() map[ids.ActorID]ActorPlacement {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[ids.ActorID]ActorPlacement, len(c.actors))
	for id, a := range c.actors {
		p := ActorPlacement{Node: a.node, Placed: a.placed, Dead: a.dead}
		if a.spec != nil {
			p.Resources, p.PlacementGroup = maps.Clone(a.spec.Resources), a.spec.PlacementGroup
		}
		out[id] = p
	}
	return out
}

// PlacementGroupInfo is one placement group as the State API shows it.
type PlacementGroupInfo struct {
	ID, Name, Strategy, State string
	Job                       ids.JobID
	Detached                  bool
	Bundles                   []map[string]float64
	// Nodes are the bundles' nodes (zero: not placed).
	Nodes []ids.NodeID
}

// PlacementGroups snapshots the placement group table, sorted by id.
func (c *Cluster) PlacementGroups() []PlacementGroupInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]PlacementGroupInfo, 0, len(c.groups))
	for _, g := range c.groups {
		info := PlacementGroupInfo{ID: g.id, Name: g.name, Strategy: g.strategy, State: g.state, Job: g.job,
			Detached: g.detached, Nodes: slices.Clone(g.nodes)}
		for _, b := range g.bundles {
			info.Bundles = append(info.Bundles, maps.Clone(b))
		}
		out = append(out, info)
	}
	slices.SortFunc(out, func(a, b PlacementGroupInfo) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Parked is work waiting at the head because no node can take it now.
type Parked struct {
	Task      ids.TaskID  // zero for an actor
	Actor     ids.ActorID // zero for a task
	Resources map[string]float64
}

// Pending lists the work parked at the head.
func (c *Cluster) Pending() []Parked {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]Parked, 0, len(c.pending))
	for _, w := range c.pending {
		switch {
		case w.task != nil:
			out = append(out, Parked{Task: w.task.TaskID, Resources: maps.Clone(w.task.Resources)})
		case w.actor != nil:
			out = append(out, Parked{Actor: w.actor.ActorID, Resources: maps.Clone(w.actor.Resources)})
		}
	}
	return out
}

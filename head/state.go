package head

import (
	"net/http"

	"github.com/gray-cluster/gray/stateapi"
)

// stateHandler serves Ray's State API over one view of both worlds: the
// ray:// pool's tables and, when it runs, the native node's.
func (h *Head) stateHandler() http.Handler {
	srcs := []stateapi.Source{stateapi.PoolSource{Take: h.poolSnapshot}}
	if h.Native != nil && h.Native.GCS() != nil {
		srcs = append(srcs, stateapi.NativeSource{Tables: h.Native.GCS(), Objects: h.Native.Plasma()})
	}
	return stateapi.Handler(stateapi.Merge(srcs...), h.log)
}

// poolSnapshot reads the ray:// world's tables through their snapshot
// accessors.
func (h *Head) poolSnapshot() stateapi.PoolSnapshot {
	tasks, dropped := h.tasks.Snapshot()
	return stateapi.PoolSnapshot{
		HeadNode: h.Raylet.NodeID(), HeadIP: h.cfg.NodeIP,
		Nodes: h.Cluster.Nodes(), Actors: h.Actors.List(), Placements: h.Cluster.ActorPlacements(),
		Groups: h.Cluster.PlacementGroups(), Parked: h.Cluster.Pending(), Jobs: h.Jobs.List(),
		Runs: h.Raylet.Runs(), ActorRuns: h.Raylet.ActorRuns(), Workers: h.Raylet.Workers(),
		Objects: h.Store.Objects(), Tasks: tasks, Dropped: dropped,
	}
}

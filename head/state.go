package head

import (
	"context"
	"encoding/hex"
	"net/http"

	"github.com/gray-cluster/gray/auth"
	"github.com/gray-cluster/gray/internal/ids"

	"github.com/gray-cluster/gray/stateapi"
)

// stateHandler serves Ray's State API over one view of both worlds: the
// ray:// pool's tables and, when it runs, the native node's.
func (h *Head) stateHandler() http.Handler {
	srcs := []stateapi.Source{stateapi.PoolSource{Take: h.poolSnapshot}}
	if h.Native != nil && h.Native.GCS() != nil {
		srcs = append(srcs, stateapi.NativeSource{Tables: h.Native.GCS(), Objects: h.Native.Plasma()})
	}
	return stateapi.Handler(h.callersRows(oneRowPerNode(stateapi.Merge(srcs...))), h.log)
}

// oneRowPerNode keeps the first row of each node id: the head's node is in
// both worlds' tables under one id (the ray:// row comes first).
func oneRowPerNode(src stateapi.Source) stateapi.Source {
	return stateapi.SourceFunc(func(ctx context.Context, r stateapi.Resource) (stateapi.Snapshot, error) {
		snap, err := src.Snapshot(ctx, r)
		if err != nil || r != stateapi.Nodes {
			return snap, err
		}
		seen := map[any]bool{}
		kept := snap.Rows[:0]
		for _, row := range snap.Rows {
			if id := row["node_id"]; id != nil && seen[id] {
				continue
			} else if id != nil {
				seen[id] = true
			}
			kept = append(kept, row)
		}
		snap.Rows = kept
		return snap, nil
	})
}

// callersRows keeps, with token auth, the rows of the caller's account
// only (an operator sees all): a job's, actor's, task's, placement
// group's, worker's or object's account is that of the job that made it.
// Nodes are everyone's.
func (h *Head) callersRows(src stateapi.Source) stateapi.Source {
	return stateapi.SourceFunc(func(ctx context.Context, r stateapi.Resource) (stateapi.Snapshot, error) {
		snap, err := src.Snapshot(ctx, r)
		if err != nil || !h.auth.Enabled() || r == stateapi.Nodes {
			return snap, err
		}
		id, ok := auth.FromContext(ctx)
		if ok && id.Operator {
			return snap, nil
		}
		kept := snap.Rows[:0]
		for _, row := range snap.Rows {
			if ok && h.rowAccount(r, row) == id.Account {
				kept = append(kept, row)
			}
		}
		snap.Rows = kept
		return snap, nil
	})
}

// rowAccount is the account of the job a row belongs to ("" unknown).
func (h *Head) rowAccount(r stateapi.Resource, row stateapi.Row) string {
	key := "job_id"
	if r == stateapi.PlacementGroups {
		key = "creator_job_id"
	}
	if r == stateapi.Objects {
		hexID, _ := row["object_id"].(string)
		raw, err := hex.DecodeString(hexID)
		if err != nil {
			return ""
		}
		oid, err := ids.ObjectFromBytes(raw)
		if err != nil {
			return ""
		}
		return h.Client.JobAccount(oid.Task().Job())
	}
	hexID, _ := row[key].(string)
	raw, err := hex.DecodeString(hexID)
	if err != nil {
		return ""
	}
	job, err := ids.JobFromBytes(raw)
	if err != nil {
		return ""
	}
	return h.Client.JobAccount(job)
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

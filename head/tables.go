package head

import (
	"context"
	"fmt"
	"slices"

	"github.com/gray-cluster/gray/cluster"
	"github.com/gray-cluster/gray/gcs"
	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/taskspec"
)

// actorPlaced writes a stored (detached) actor's placement through to the
// actor table: its node, its spec as the cluster routes and restarts it,
// and (once) its class payload.
func (h *Head) actorPlaced(spec *taskspec.ActorSpec, node ids.NodeID) {
	stored, haveClass := h.Actors.IsStored(spec.ActorID)
	if !stored {
		return
	}
	b, err := cluster.EncodeActorSpec(spec)
	if err != nil {
		h.log.Warn("actor table: encode spec", "actor", spec.ActorID.Hex(), "err", err)
		return
	}
	p := gcs.ActorPlacement{Node: node, Spec: b}
	if !haveClass {
		if obj, err := h.Store.Get(spec.ClassID); err == nil {
			p.Class = slices.Concat(obj.Chunks...)
		}
	}
	if err := h.Actors.Place(context.Background(), spec.ActorID, p); err != nil {
		h.log.Warn("actor table", "actor", spec.ActorID.Hex(), "err", err)
	}
}

// restoreTables loads what a restarted head finds in its GCS store into
// the live cluster: providers (waiting to reconnect), placement groups,
// then detached actors on their nodes. On a fresh store it does nothing.
func (h *Head) restoreTables(ctx context.Context) error {
	nodeTable := gcs.NewNodeTable(h.gcsStore)
	nodes, err := nodeTable.List(ctx)
	if err != nil {
		return fmt.Errorf("head: GCS storage %s: %w", h.gcsStore.Describe(), err)
	}
	groups, err := gcs.NewGroupTable(h.gcsStore).List(ctx)
	if err != nil {
		return fmt.Errorf("head: GCS storage %s: %w", h.gcsStore.Describe(), err)
	}
	type restored struct {
		rec  gcs.ActorRecord
		spec *taskspec.ActorSpec
	}
	var actors []restored
	byNode := map[ids.NodeID][]*taskspec.ActorSpec{}
	for _, rec := range h.Actors.Stored() {
		if rec.Placement.Spec == nil {
			// Registered, never placed: its creation died with the old head.
			h.log.Warn("stored actor was never placed; it is dead", "actor", rec.Info.ID.Hex())
			h.Client.ActorDead(rec.Info.ID)
			continue
		}
		spec, err := cluster.DecodeActorSpec(rec.Placement.Spec)
		if err != nil {
			h.log.Warn("stored actor unreadable; it is dead", "actor", rec.Info.ID.Hex(), "err", err)
			h.Client.ActorDead(rec.Info.ID)
			continue
		}
		actors = append(actors, restored{rec: rec, spec: spec})
		byNode[rec.Placement.Node] = append(byNode[rec.Placement.Node], spec)
	}
	if len(nodes)+len(groups)+len(actors) == 0 {
		return nil
	}
	h.log.Info("restoring GCS tables", "nodes", len(nodes), "placement_groups", len(groups), "actors", len(actors))
	if h.Nodes != nil {
		h.Nodes.Restore(nodes, byNode)
	} else {
		for _, n := range nodes { // no provider port: none can come back
			if err := nodeTable.Delete(ctx, n.ID); err != nil {
				return err
			}
		}
	}
	for _, g := range groups {
		if err := h.Cluster.RestoreGroup(g); err != nil {
			h.log.Warn("placement group not restored", "pg", g.ID, "err", err)
		}
	}
	for _, a := range actors {
		h.Client.ActorRestored(ctx, a.rec.Info.ID)
		h.Cluster.RestoreActor(a.spec, a.rec.Placement.Node, a.rec.Placement.Class)
	}
	return nil
}

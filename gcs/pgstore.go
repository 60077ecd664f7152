package gcs

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/gray-cluster/gray/internal/ids"
)

// PlacementGroupsTable is the Store table of placement groups. Keys are
// the groups' hex ids; values the JSON of storedGroup.
const PlacementGroupsTable = "placement_groups"

const groupRecordVersion = 1

// PlacementGroupRecord is a placement group as the store keeps it: its
// bundles, strategy, name, state and the node holding each bundle (zero:
// none yet).
type PlacementGroupRecord struct {
	ID       string
	Name     string
	Strategy string
	Job      ids.JobID
	Detached bool
	State    string
	Bundles  []map[string]float64
	Nodes    []ids.NodeID
}

type storedGroup struct {
	V        int                  `json:"v"`
	ID       string               `json:"id"`
	Name     string               `json:"name,omitempty"`
	Strategy string               `json:"strategy"`
	Job      string               `json:"job"`
	Detached bool                 `json:"detached,omitempty"`
	State    string               `json:"state"`
	Bundles  []map[string]float64 `json:"bundles"`
	Nodes    []string             `json:"nodes"`
}

// GroupTable is the durable placement group table; the cluster's group
// map is its in-memory view.
type GroupTable struct{ s Store }

// NewGroupTable returns the placement group table kept in s.
func NewGroupTable(s Store) *GroupTable { return &GroupTable{s: s} }

// Put records a group as it is now.
func (t *GroupTable) Put(ctx context.Context, g PlacementGroupRecord) error {
	sg := storedGroup{V: groupRecordVersion, ID: g.ID, Name: g.Name, Strategy: g.Strategy, Job: g.Job.Hex(),
		Detached: g.Detached, State: g.State, Bundles: g.Bundles, Nodes: make([]string, len(g.Nodes))}
	for i, n := range g.Nodes {
		if n != (ids.NodeID{}) {
			sg.Nodes[i] = n.Hex()
		}
	}
	v, err := json.Marshal(sg)
	if err != nil {
		return err
	}
	if _, err := t.s.Apply(ctx, Put(PlacementGroupsTable, []byte(g.ID), v)); err != nil {
		return fmt.Errorf("placement groups: store %s: %w", g.ID, err)
	}
	return nil
}

// Delete forgets a group (it was removed).
func (t *GroupTable) Delete(ctx context.Context, id string) error {
	if _, err := t.s.Apply(ctx, Delete(PlacementGroupsTable, []byte(id))); err != nil {
		return fmt.Errorf("placement groups: forget %s: %w", id, err)
	}
	return nil
}

// List returns the stored groups in id order.
func (t *GroupTable) List(ctx context.Context) ([]PlacementGroupRecord, error) {
	var out []PlacementGroupRecord
	err := t.s.Scan(ctx, PlacementGroupsTable, nil, func(key, value []byte) error {
		var s storedGroup
		if err := json.Unmarshal(value, &s); err != nil {
			return fmt.Errorf("%w: placement group record: %v", ErrCorrupt, err)
		}
		if s.V != groupRecordVersion || s.ID != string(key) || len(s.Nodes) != len(s.Bundles) {
			return fmt.Errorf("%w: placement group record %q (version %d)", ErrCorrupt, key, s.V)
		}
		g := PlacementGroupRecord{ID: s.ID, Name: s.Name, Strategy: s.Strategy, Detached: s.Detached, State: s.State,
			Bundles: s.Bundles, Nodes: make([]ids.NodeID, len(s.Nodes))}
		job, err := hexJob(s.Job)
		if err != nil {
			return err
		}
		g.Job = job
		for i, n := range s.Nodes {
			if n == "" {
				continue
			}
			if g.Nodes[i], err = ids.NodeFromHex(n); err != nil {
				return fmt.Errorf("%w: placement group %s node: %v", ErrCorrupt, s.ID, err)
			}
		}
		for i, b := range g.Bundles {
			if b == nil {
				g.Bundles[i] = map[string]float64{}
			}
		}
		out = append(out, g)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("placement groups: load: %w", err)
	}
	return out, nil
}

func hexJob(s string) (ids.JobID, error) {
	b, err := hex.DecodeString(s)
	if err != nil {
		return ids.JobID{}, fmt.Errorf("%w: job id %q: %v", ErrCorrupt, s, err)
	}
	job, err := ids.JobFromBytes(b)
	if err != nil {
		return ids.JobID{}, fmt.Errorf("%w: job id %q: %v", ErrCorrupt, s, err)
	}
	return job, nil
}

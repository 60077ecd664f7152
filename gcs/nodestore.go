package gcs

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"

	"github.com/gray-cluster/gray/internal/ids"
)

// NodesTable is the Store table of the provider nodes the head knows, so
// that a restarted head recognises providers that reconnect (and gives up
// on those that do not come back). Keys are node ids (28 bytes); values
// the JSON of storedNode. The head's own node is not kept: it is new with
// every head process.
const NodesTable = "nodes"

const nodeRecordVersion = 1

type storedNode struct {
	V        int                `json:"v"`
	ID       string             `json:"id"`
	IP       string             `json:"ip,omitempty"`
	Hostname string             `json:"hostname,omitempty"`
	Total    map[string]float64 `json:"total,omitempty"`
	Labels   map[string]string  `json:"labels,omitempty"`
	GPUs     string             `json:"gpus,omitempty"`
}

// NodeTable is the durable node table: the record of every provider node
// that is registered and not dead. The cluster's member list is its
// in-memory view (with the live connection to each node).
type NodeTable struct{ s Store }

// NewNodeTable returns the node table kept in s.
func NewNodeTable(s Store) *NodeTable { return &NodeTable{s: s} }

// Put records a node (its id, address, resources and labels).
func (t *NodeTable) Put(ctx context.Context, info NodeInfo) error {
	v, err := json.Marshal(storedNode{V: nodeRecordVersion, ID: info.ID.Hex(), IP: info.IP, Hostname: info.Hostname,
		Total: info.Total, Labels: info.Labels, GPUs: info.GPUs})
	if err != nil {
		return err
	}
	if _, err := t.s.Apply(ctx, Put(NodesTable, info.ID.Bytes(), v)); err != nil {
		return fmt.Errorf("nodes: store %s: %w", info.ID.Hex(), err)
	}
	return nil
}

// Delete forgets a node (it died).
func (t *NodeTable) Delete(ctx context.Context, id ids.NodeID) error {
	if _, err := t.s.Apply(ctx, Delete(NodesTable, id.Bytes())); err != nil {
		return fmt.Errorf("nodes: forget %s: %w", id.Hex(), err)
	}
	return nil
}

// List returns the stored nodes in id order, each with State NodeSuspect:
// known, not heard from since the head started.
func (t *NodeTable) List(ctx context.Context) ([]NodeInfo, error) {
	var out []NodeInfo
	err := t.s.Scan(ctx, NodesTable, nil, func(key, value []byte) error {
		var s storedNode
		if err := json.Unmarshal(value, &s); err != nil {
			return fmt.Errorf("%w: node record: %v", ErrCorrupt, err)
		}
		if s.V != nodeRecordVersion {
			return fmt.Errorf("%w: node record version %d", ErrCorrupt, s.V)
		}
		id, err := ids.NodeFromBytes(key)
		if err != nil || id.Hex() != s.ID {
			return fmt.Errorf("%w: node record key %x names %q", ErrCorrupt, key, s.ID)
		}
		out = append(out, NodeInfo{ID: id, IP: s.IP, Hostname: s.Hostname, State: NodeSuspect,
			Total: maps.Clone(s.Total), Available: map[string]float64{}, Labels: maps.Clone(s.Labels), GPUs: s.GPUs})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("nodes: load: %w", err)
	}
	return out, nil
}

package gcs

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
)

// The native GCS's tables (native/gcsserver): what stock Ray's GCS keeps in
// Redis for fault tolerance. Keys are Ray's ids (bytes); values a versioned
// envelope around Ray's own protobuf messages, which the GCS encodes (this
// package keeps them opaque).
const (
	// NativeActorsTable: actor id → ActorTableData, creation TaskSpec.
	NativeActorsTable = "native.actors"
	// NativeJobsTable: job id → JobTableData.
	NativeJobsTable = "native.jobs"
	// NativeNodesTable: node id → GcsNodeInfo.
	NativeNodesTable = "native.nodes"
	// NativePlacementGroupsTable: placement group id →
	// PlacementGroupTableData.
	NativePlacementGroupsTable = "native.placement_groups"
	// NativeWorkersTable: worker id → WorkerTableData (alive workers and
	// the newest dead ones, as Ray's GCS keeps its WorkerTable).
	NativeWorkersTable = "native.workers"
	// NativeMetaTable: the cluster id.
	NativeMetaTable = "native.meta"
)

// nativeRecordVersion is the envelope's layout.
const nativeRecordVersion = 1

// NativeClusterIDSize is the length of a Ray cluster id.
const NativeClusterIDSize = 28

var nativeClusterIDKey = []byte("cluster_id")

// NativeTables is the durable home of the native GCS's tables: the server
// writes each change through and loads them when it starts.
type NativeTables struct{ s Store }

// NewNativeTables returns the native tables kept in s.
func NewNativeTables(s Store) *NativeTables { return &NativeTables{s: s} }

func checkNativeTable(table string) error {
	switch table {
	case NativeActorsTable, NativeJobsTable, NativeNodesTable, NativePlacementGroupsTable, NativeWorkersTable:
		return nil
	}
	return fmt.Errorf("%w: %q is not a native table", ErrBadTable, table)
}

// ClusterID returns the cluster id, choosing and storing a random one the
// first time, so that core workers and raylets that outlive a head restart
// keep talking to the same cluster.
func (t *NativeTables) ClusterID(ctx context.Context) ([]byte, error) {
	id := make([]byte, NativeClusterIDSize)
	if _, err := rand.Read(id); err != nil {
		return nil, err
	}
	if _, err := t.s.Apply(ctx, Insert(NativeMetaTable, nativeClusterIDKey, id)); err != nil {
		return nil, fmt.Errorf("native tables: cluster id: %w", err)
	}
	v, ok, err := t.s.Get(ctx, NativeMetaTable, nativeClusterIDKey)
	if err != nil {
		return nil, fmt.Errorf("native tables: cluster id: %w", err)
	}
	if !ok || len(v) != NativeClusterIDSize {
		return nil, fmt.Errorf("%w: native cluster id of %d bytes", ErrCorrupt, len(v))
	}
	return v, nil
}

// Put records one entry: its parts (encoded messages) in order.
func (t *NativeTables) Put(ctx context.Context, table string, key []byte, parts ...[]byte) error {
	if err := checkNativeTable(table); err != nil {
		return err
	}
	if _, err := t.s.Apply(ctx, Put(table, key, encodeParts(parts))); err != nil {
		return fmt.Errorf("native tables: store %s %x: %w", table, key, err)
	}
	return nil
}

// Delete forgets one entry.
func (t *NativeTables) Delete(ctx context.Context, table string, key []byte) error {
	if err := checkNativeTable(table); err != nil {
		return err
	}
	if _, err := t.s.Apply(ctx, Delete(table, key)); err != nil {
		return fmt.Errorf("native tables: forget %s %x: %w", table, key, err)
	}
	return nil
}

// Load calls fn with every entry of table in key order.
func (t *NativeTables) Load(ctx context.Context, table string, fn func(key []byte, parts [][]byte) error) error {
	if err := checkNativeTable(table); err != nil {
		return err
	}
	err := t.s.Scan(ctx, table, nil, func(key, value []byte) error {
		parts, err := decodeParts(value)
		if err != nil {
			return fmt.Errorf("%s %x: %w", table, key, err)
		}
		return fn(key, parts)
	})
	if err != nil {
		return fmt.Errorf("native tables: load: %w", err)
	}
	return nil
}

// encodeParts is the envelope: a version byte, the number of parts, then
// each part as a length and its bytes (uvarints).
func encodeParts(parts [][]byte) []byte {
	n := 1 + binary.MaxVarintLen64
	for _, p := range parts {
		n += binary.MaxVarintLen64 + len(p)
	}
	out := make([]byte, 0, n)
	out = append(out, nativeRecordVersion)
	out = binary.AppendUvarint(out, uint64(len(parts)))
	for _, p := range parts {
		out = binary.AppendUvarint(out, uint64(len(p)))
		out = append(out, p...)
	}
	return out
}

func decodeParts(v []byte) ([][]byte, error) {
	if len(v) == 0 || v[0] != nativeRecordVersion {
		return nil, fmt.Errorf("%w: native record version", ErrCorrupt)
	}
	v = v[1:]
	count, k := binary.Uvarint(v)
	if k <= 0 || count > uint64(len(v)) {
		return nil, fmt.Errorf("%w: native record header", ErrCorrupt)
	}
	v = v[k:]
	parts := make([][]byte, 0, count)
	for range count {
		l, k := binary.Uvarint(v)
		if k <= 0 || l > uint64(len(v)-k) {
			return nil, fmt.Errorf("%w: native record part", ErrCorrupt)
		}
		parts = append(parts, append([]byte(nil), v[k:k+int(l)]...))
		v = v[k+int(l):]
	}
	if len(v) != 0 {
		return nil, fmt.Errorf("%w: native record trailer", ErrCorrupt)
	}
	return parts, nil
}

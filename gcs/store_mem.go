package gcs

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"sync"
)

// MemStore is a Store in memory: nothing survives the process. It is what a
// head without a usable state directory runs on, and what tests use.
type MemStore struct {
	mu     sync.RWMutex
	tables map[string]map[string][]byte
	closed bool
}

// NewMemStore returns an empty memory store.
func NewMemStore() *MemStore { return &MemStore{tables: map[string]map[string][]byte{}} }

// Describe implements Store.
func (m *MemStore) Describe() string { return "memory (nothing survives a restart)" }

// Close implements Store.
func (m *MemStore) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	return nil
}

// Get implements Store.
func (m *MemStore) Get(_ context.Context, table string, key []byte) ([]byte, bool, error) {
	if err := checkTable(table); err != nil {
		return nil, false, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return nil, false, ErrClosed
	}
	v, ok := m.tables[table][string(key)]
	if !ok {
		return nil, false, nil
	}
	return append([]byte{}, v...), true, nil
}

// sortedKeys lists the keys of t with prefix, sorted; the caller holds mu.
func sortedKeys(t map[string][]byte, prefix []byte) []string {
	var keys []string
	for k := range t {
		if strings.HasPrefix(k, string(prefix)) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}

// Keys implements Store.
func (m *MemStore) Keys(_ context.Context, table string, prefix []byte) ([][]byte, error) {
	if err := checkTable(table); err != nil {
		return nil, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return nil, ErrClosed
	}
	keys := sortedKeys(m.tables[table], prefix)
	out := make([][]byte, len(keys))
	for i, k := range keys {
		out[i] = []byte(k)
	}
	return out, nil
}

// Scan implements Store. It works on a snapshot of the matching entries, so
// fn may use the store.
func (m *MemStore) Scan(_ context.Context, table string, prefix []byte, fn func(key, value []byte) error) error {
	if err := checkTable(table); err != nil {
		return err
	}
	m.mu.RLock()
	if m.closed {
		m.mu.RUnlock()
		return ErrClosed
	}
	t := m.tables[table]
	keys := sortedKeys(t, prefix)
	vals := make([][]byte, len(keys))
	for i, k := range keys {
		vals[i] = bytes.Clone(t[k])
	}
	m.mu.RUnlock()
	for i, k := range keys {
		if err := fn([]byte(k), vals[i]); err != nil {
			return err
		}
	}
	return nil
}

// Apply implements Store.
func (m *MemStore) Apply(_ context.Context, ops ...Op) ([]int, error) {
	if err := checkOps(ops); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	res := make([]int, len(ops))
	for i, op := range ops {
		t := m.tables[op.Table]
		if t == nil {
			t = map[string][]byte{}
			m.tables[op.Table] = t
		}
		k := string(op.Key)
		_, existed := t[k]
		switch op.Kind {
		case OpPut:
			t[k] = append([]byte{}, op.Value...)
		case OpInsert:
			if !existed {
				t[k] = append([]byte{}, op.Value...)
			}
		case OpDelete:
			delete(t, k)
		case OpDeletePrefix:
			for key := range t {
				if strings.HasPrefix(key, k) {
					delete(t, key)
					res[i]++
				}
			}
			continue
		}
		if existed {
			res[i] = 1
		}
	}
	return res, nil
}

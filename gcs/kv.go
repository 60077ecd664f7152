// Package gcs holds the cluster's state of record: internal KV, jobs and the
// node table. Storage sits behind small interfaces so that an embedded store
// or Redis can back it.
package gcs

import (
	"sort"
	"strings"
	"sync"
)

// KV is Ray's internal key-value store, partitioned by namespace.
type KV interface {
	// Get returns a copy of the value; it is non-nil (possibly empty) when
	// the key exists, so that callers can tell an empty value from none.
	Get(ns, key []byte) ([]byte, bool)
	// Put stores value and reports whether the key already existed; with
	// overwrite false an existing value is kept.
	Put(ns, key, value []byte, overwrite bool) (existed bool)
	// Del deletes key (or every key with that prefix) and returns the count.
	Del(ns, key []byte, byPrefix bool) int
	Exists(ns, key []byte) bool
	// Keys lists the full keys starting with prefix, sorted.
	Keys(ns, prefix []byte) [][]byte
}

// MemKV is an in-memory KV.
type MemKV struct {
	mu   sync.RWMutex
	data map[string]map[string][]byte
}

// NewMemKV returns an empty in-memory KV.
func NewMemKV() *MemKV { return &MemKV{data: map[string]map[string][]byte{}} }

func (m *MemKV) Get(ns, key []byte) ([]byte, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	v, ok := m.data[string(ns)][string(key)]
	if !ok {
		return nil, false
	}
	return append([]byte{}, v...), true
}

func (m *MemKV) Put(ns, key, value []byte, overwrite bool) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	t := m.data[string(ns)]
	if t == nil {
		t = map[string][]byte{}
		m.data[string(ns)] = t
	}
	_, existed := t[string(key)]
	if existed && !overwrite {
		return true
	}
	t[string(key)] = append([]byte{}, value...)
	return existed
}

func (m *MemKV) Del(ns, key []byte, byPrefix bool) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	t := m.data[string(ns)]
	if !byPrefix {
		if _, ok := t[string(key)]; ok {
			delete(t, string(key))
			return 1
		}
		return 0
	}
	n := 0
	for k := range t {
		if strings.HasPrefix(k, string(key)) {
			delete(t, k)
			n++
		}
	}
	return n
}

func (m *MemKV) Exists(ns, key []byte) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	_, ok := m.data[string(ns)][string(key)]
	return ok
}

func (m *MemKV) Keys(ns, prefix []byte) [][]byte {
	m.mu.RLock()
	defer m.mu.RUnlock()
	var keys []string
	for k := range m.data[string(ns)] {
		if strings.HasPrefix(k, string(prefix)) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	out := make([][]byte, len(keys))
	for i, k := range keys {
		out[i] = []byte(k)
	}
	return out
}

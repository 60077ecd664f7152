// Package gcs holds the cluster's state of record: internal KV, jobs and the
// node table. The durable tables live in a Store (bbolt by default, Redis
// for heads that share one, or memory), so that a head restarted on the
// same state finds them again.
package gcs

import (
	"context"
	"encoding/binary"
	"fmt"
)

// KV is Ray's internal key-value store, partitioned by namespace (a nil
// and an empty namespace are the same). Errors are the store's: a write
// that returned nil is durable as far as the store promises.
type KV interface {
	// Get returns a copy of the value; it is non-nil (possibly empty) when
	// the key exists, so that callers can tell an empty value from none.
	Get(ctx context.Context, ns, key []byte) ([]byte, bool, error)
	// Put stores value and reports whether the key already existed; with
	// overwrite false an existing value is kept.
	Put(ctx context.Context, ns, key, value []byte, overwrite bool) (existed bool, err error)
	// Del deletes key (or every key with that prefix) and returns the count.
	Del(ctx context.Context, ns, key []byte, byPrefix bool) (int, error)
	Exists(ctx context.Context, ns, key []byte) (bool, error)
	// Keys lists the full keys starting with prefix, sorted.
	Keys(ctx context.Context, ns, prefix []byte) ([][]byte, error)
}

// KVTable is the Store table of the internal KV. Its keys are the
// namespace's length (uvarint), the namespace, then the KV key, so that a
// namespace's keys are one range in key order.
const KVTable = "kv"

// StoreKV is the internal KV kept in a Store.
type StoreKV struct {
	s Store
}

// NewStoreKV returns the KV kept in s.
func NewStoreKV(s Store) *StoreKV { return &StoreKV{s: s} }

// NewMemKV returns an empty KV in memory.
func NewMemKV() *StoreKV { return NewStoreKV(NewMemStore()) }

func kvKey(ns, key []byte) []byte {
	out := binary.AppendUvarint(make([]byte, 0, binary.MaxVarintLen64+len(ns)+len(key)), uint64(len(ns)))
	out = append(out, ns...)
	return append(out, key...)
}

func (k *StoreKV) Get(ctx context.Context, ns, key []byte) ([]byte, bool, error) {
	v, ok, err := k.s.Get(ctx, KVTable, kvKey(ns, key))
	if err != nil {
		return nil, false, fmt.Errorf("kv get: %w", err)
	}
	return v, ok, nil
}

func (k *StoreKV) Put(ctx context.Context, ns, key, value []byte, overwrite bool) (bool, error) {
	op := Put(KVTable, kvKey(ns, key), value)
	if !overwrite {
		op.Kind = OpInsert
	}
	res, err := k.s.Apply(ctx, op)
	if err != nil {
		return false, fmt.Errorf("kv put: %w", err)
	}
	return res[0] == 1, nil
}

func (k *StoreKV) Del(ctx context.Context, ns, key []byte, byPrefix bool) (int, error) {
	op := Delete(KVTable, kvKey(ns, key))
	if byPrefix {
		op.Kind = OpDeletePrefix
	}
	res, err := k.s.Apply(ctx, op)
	if err != nil {
		return 0, fmt.Errorf("kv del: %w", err)
	}
	return res[0], nil
}

func (k *StoreKV) Exists(ctx context.Context, ns, key []byte) (bool, error) {
	_, ok, err := k.Get(ctx, ns, key)
	return ok, err
}

func (k *StoreKV) Keys(ctx context.Context, ns, prefix []byte) ([][]byte, error) {
	full := kvKey(ns, prefix)
	keys, err := k.s.Keys(ctx, KVTable, full)
	if err != nil {
		return nil, fmt.Errorf("kv keys: %w", err)
	}
	skip := len(full) - len(prefix)
	for i, key := range keys {
		keys[i] = key[skip:]
	}
	return keys, nil
}

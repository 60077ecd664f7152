package gcs

import (
	"context"
	"errors"
	"fmt"
)

// Store keeps the cluster's tables: named tables of key → value bytes. One
// Store backs every durable table of the head (the internal KV, the job
// counter, and later actors, placement groups and nodes), so that a change
// touching several tables commits atomically. Implementations: the bbolt
// file (OpenBoltStore, the default), Redis (OpenRedisStore) and memory
// (NewMemStore).
//
// Values passed in and returned are never retained or shared: callers may
// change them afterwards.
type Store interface {
	// Get returns a copy of the value under key; ok is false when the key
	// is absent (a present empty value is non-nil).
	Get(ctx context.Context, table string, key []byte) (value []byte, ok bool, err error)
	// Keys lists the keys of table that start with prefix, in byte order.
	Keys(ctx context.Context, table string, prefix []byte) ([][]byte, error)
	// Scan calls fn with each entry of table whose key starts with prefix,
	// in key order, until fn returns an error, which Scan returns.
	Scan(ctx context.Context, table string, prefix []byte, fn func(key, value []byte) error) error
	// Apply commits ops atomically and in order: after it returns nil every
	// op has been applied (and is durable as far as the backend promises),
	// after an error none has. It returns one result per op (see OpKind).
	Apply(ctx context.Context, ops ...Op) ([]int, error)
	// Describe names the backend and where it keeps the tables.
	Describe() string
	Close() error
}

// OpKind is what an Op does, and what its result in Apply means.
type OpKind uint8

const (
	// OpPut sets key to value; result 1 if the key existed before.
	OpPut OpKind = iota + 1
	// OpInsert sets key to value only if it is absent; result 1 if it
	// existed (and was kept).
	OpInsert
	// OpDelete removes key; result 1 if it existed.
	OpDelete
	// OpDeletePrefix removes every key that starts with Key (every key of
	// the table when Key is empty); result the number removed.
	OpDeletePrefix
)

// Op is one change to one table.
type Op struct {
	Kind  OpKind
	Table string
	Key   []byte
	Value []byte
}

// Put is an OpPut.
func Put(table string, key, value []byte) Op {
	return Op{Kind: OpPut, Table: table, Key: key, Value: value}
}

// Insert is an OpInsert.
func Insert(table string, key, value []byte) Op {
	return Op{Kind: OpInsert, Table: table, Key: key, Value: value}
}

// Delete is an OpDelete.
func Delete(table string, key []byte) Op { return Op{Kind: OpDelete, Table: table, Key: key} }

// DeletePrefix is an OpDeletePrefix.
func DeletePrefix(table string, prefix []byte) Op {
	return Op{Kind: OpDeletePrefix, Table: table, Key: prefix}
}

// Errors of the stores.
var (
	// ErrBadTable: a table name that is empty, too long, or has characters
	// other than a-z, 0-9, '_', '-' and '.' (or starts with '_').
	ErrBadTable = errors.New("gcs store: bad table name")
	// ErrBadKey: an empty key (outside a prefix), or one over MaxKeySize.
	ErrBadKey = errors.New("gcs store: bad key")
	// ErrBadOp: an op of an unknown kind.
	ErrBadOp = errors.New("gcs store: bad op")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("gcs store: closed")
	// ErrCorrupt: the stored data is not what this version writes.
	ErrCorrupt = errors.New("gcs store: corrupt")
)

// MaxKeySize is the longest key any backend takes (bbolt's limit).
const MaxKeySize = 32 << 10

// MaxValueSize is the largest value any backend takes (Redis's default
// proto-max-bulk-len is 512 MiB; bbolt's limit is higher).
const MaxValueSize = 512<<20 - 1

// schemaVersion is the layout of the stored tables; changing it means
// writing a migration.
const schemaVersion = "1"

func checkTable(name string) error {
	if name == "" || len(name) > 64 || name[0] == '_' {
		return fmt.Errorf("%w: %q", ErrBadTable, name)
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return fmt.Errorf("%w: %q", ErrBadTable, name)
		}
	}
	return nil
}

func checkKey(key []byte) error {
	if len(key) == 0 || len(key) > MaxKeySize {
		return fmt.Errorf("%w: %d bytes", ErrBadKey, len(key))
	}
	return nil
}

// checkOps validates ops before any is applied, so that a bad op fails the
// batch without touching the store.
func checkOps(ops []Op) error {
	for i, op := range ops {
		if err := checkTable(op.Table); err != nil {
			return fmt.Errorf("op %d: %w", i, err)
		}
		switch op.Kind {
		case OpPut, OpInsert:
			if len(op.Value) > MaxValueSize {
				return fmt.Errorf("op %d: %w: value of %d bytes", i, ErrBadOp, len(op.Value))
			}
			fallthrough
		case OpDelete:
			if err := checkKey(op.Key); err != nil {
				return fmt.Errorf("op %d: %w", i, err)
			}
		case OpDeletePrefix:
			if len(op.Key) > MaxKeySize {
				return fmt.Errorf("op %d: %w: prefix of %d bytes", i, ErrBadKey, len(op.Key))
			}
		default:
			return fmt.Errorf("op %d: %w: kind %d", i, ErrBadOp, op.Kind)
		}
	}
	return nil
}

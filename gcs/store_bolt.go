package gcs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// BoltStore is a Store in one bbolt file: each table a bucket, plus a meta
// bucket with the schema version. A write is on disk (fsynced) when Apply
// returns.
//
// Writes are group-committed: one goroutine takes every Apply waiting at
// that moment and commits them in one bbolt transaction (one fsync), so a
// lone writer waits for one fsync and concurrent writers share them.
// (bbolt's own db.Batch would add its MaxBatchDelay to every lone write.)
type BoltStore struct {
	db   *bolt.DB
	path string

	mu     sync.RWMutex // guards closed and sends on reqs
	closed bool
	reqs   chan *boltReq
	done   chan struct{} // closed when the committer has drained reqs
}

type boltReq struct {
	ops  []Op
	res  []int
	err  error
	done chan struct{}
}

var boltMeta = []byte("_meta")

// maxGroup bounds how many Applies one transaction commits.
const maxGroup = 256

// OpenBoltStore opens (creating if needed) the store file at path. It fails
// after a second rather than wait while another process holds the file.
func OpenBoltStore(path string) (*BoltStore, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return nil, fmt.Errorf("gcs store: open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(boltMeta)
		if err != nil {
			return err
		}
		switch v := meta.Get([]byte("version")); {
		case v == nil:
			return meta.Put([]byte("version"), []byte(schemaVersion))
		case string(v) != schemaVersion:
			return fmt.Errorf("%w: schema version %q, want %q", ErrCorrupt, v, schemaVersion)
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("gcs store: open %s: %w", path, err)
	}
	s := &BoltStore{db: db, path: path, reqs: make(chan *boltReq, maxGroup), done: make(chan struct{})}
	go s.commitLoop()
	return s, nil
}

// Describe implements Store.
func (s *BoltStore) Describe() string { return "bolt " + s.path }

// Close waits for the writes already taken, then closes the file.
func (s *BoltStore) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.reqs)
	s.mu.Unlock()
	<-s.done
	return s.db.Close()
}

func (s *BoltStore) view(fn func(tx *bolt.Tx) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	return s.db.View(fn)
}

// Get implements Store.
func (s *BoltStore) Get(_ context.Context, table string, key []byte) ([]byte, bool, error) {
	if err := checkTable(table); err != nil {
		return nil, false, err
	}
	var (
		out []byte
		ok  bool
	)
	err := s.view(func(tx *bolt.Tx) error {
		if b := tx.Bucket([]byte(table)); b != nil {
			if v := b.Get(key); v != nil {
				out, ok = append([]byte{}, v...), true
			}
		}
		return nil
	})
	return out, ok, err
}

// Keys implements Store.
func (s *BoltStore) Keys(_ context.Context, table string, prefix []byte) ([][]byte, error) {
	if err := checkTable(table); err != nil {
		return nil, err
	}
	var out [][]byte
	err := s.view(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(table))
		if b == nil {
			return nil
		}
		c := b.Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			out = append(out, bytes.Clone(k))
		}
		return nil
	})
	return out, err
}

// Scan implements Store. It reads one consistent snapshot; fn must not
// write to the store (a write would wait for this read to end).
func (s *BoltStore) Scan(ctx context.Context, table string, prefix []byte, fn func(key, value []byte) error) error {
	if err := checkTable(table); err != nil {
		return err
	}
	return s.view(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(table))
		if b == nil {
			return nil
		}
		c := b.Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := fn(bytes.Clone(k), bytes.Clone(v)); err != nil {
				return err
			}
		}
		return nil
	})
}

// Apply implements Store. If ctx ends while the write waits, Apply returns
// ctx's error, and the write may or may not have been committed.
func (s *BoltStore) Apply(ctx context.Context, ops ...Op) ([]int, error) {
	if err := checkOps(ops); err != nil {
		return nil, err
	}
	req := &boltReq{ops: ops, done: make(chan struct{})}
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return nil, ErrClosed
	}
	select {
	case s.reqs <- req:
	case <-ctx.Done():
		s.mu.RUnlock()
		return nil, ctx.Err()
	}
	s.mu.RUnlock()
	select {
	case <-req.done:
		return req.res, req.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// commitLoop commits the waiting requests, a group at a time, until Close.
func (s *BoltStore) commitLoop() {
	defer close(s.done)
	for req := range s.reqs {
		group := []*boltReq{req}
	more:
		for len(group) < maxGroup {
			select {
			case r, ok := <-s.reqs:
				if !ok {
					break more
				}
				group = append(group, r)
			default:
				break more
			}
		}
		s.commit(group)
	}
}

// commit applies group in one transaction. If that fails, each request is
// retried alone, so one request's failure is only its own.
func (s *BoltStore) commit(group []*boltReq) {
	results := make([][]int, len(group))
	err := s.db.Update(func(tx *bolt.Tx) error {
		for i, r := range group {
			res, err := applyBolt(tx, r.ops)
			if err != nil {
				return err
			}
			results[i] = res
		}
		return nil
	})
	if err != nil && len(group) > 1 {
		for _, r := range group {
			s.commit([]*boltReq{r})
		}
		return
	}
	for i, r := range group {
		if err != nil {
			r.err = fmt.Errorf("gcs store: %s: %w", s.path, err)
		} else {
			r.res = results[i]
		}
		close(r.done)
	}
}

func applyBolt(tx *bolt.Tx, ops []Op) ([]int, error) {
	res := make([]int, len(ops))
	for i, op := range ops {
		b, err := tx.CreateBucketIfNotExists([]byte(op.Table))
		if err != nil {
			return nil, err
		}
		switch op.Kind {
		case OpPut, OpInsert:
			existed := b.Get(op.Key) != nil
			if existed {
				res[i] = 1
			}
			if op.Kind == OpPut || !existed {
				// bbolt keeps a nil value as absent: store empty as empty.
				v := op.Value
				if v == nil {
					v = []byte{}
				}
				if err := b.Put(op.Key, v); err != nil {
					return nil, err
				}
			}
		case OpDelete:
			if b.Get(op.Key) != nil {
				res[i] = 1
				if err := b.Delete(op.Key); err != nil {
					return nil, err
				}
			}
		case OpDeletePrefix:
			c := b.Cursor()
			for k, _ := c.Seek(op.Key); k != nil && bytes.HasPrefix(k, op.Key); k, _ = c.Seek(op.Key) {
				if err := c.Delete(); err != nil {
					return nil, err
				}
				res[i]++
			}
		default:
			return nil, errors.New("unreachable: op kind checked")
		}
	}
	return res, nil
}

package auth

import (
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Record is one token as the head keeps it: never the token itself.
type Record struct {
	ID       string    `json:"id"`
	Account  string    `json:"account"`
	Operator bool      `json:"operator,omitempty"`
	Hash     [32]byte  `json:"hash"`
	Created  time.Time `json:"created"`
	Revoked  time.Time `json:"revoked,omitzero"`
	Note     string    `json:"note,omitempty"`
}

// Store keeps token records. Implementations must be safe for concurrent
// use; the bbolt one is the default, and a GCS-backed one can replace it.
type Store interface {
	Put(Record) error
	// Get returns the record of id (ErrNotFound if none).
	Get(id string) (Record, error)
	List() ([]Record, error)
	Close() error
}

// MemStore is an in-memory Store (tests, and pools without a state dir).
type MemStore struct {
	mu   sync.Mutex
	recs map[string]Record
}

// NewMemStore returns an empty MemStore.
func NewMemStore() *MemStore { return &MemStore{recs: map[string]Record{}} }

// Put implements Store.
func (m *MemStore) Put(r Record) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.recs[r.ID] = r
	return nil
}

// Get implements Store.
func (m *MemStore) Get(id string) (Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.recs[id]
	if !ok {
		return Record{}, ErrNotFound
	}
	return r, nil
}

// List implements Store.
func (m *MemStore) List() ([]Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Record, 0, len(m.recs))
	for _, r := range m.recs {
		out = append(out, r)
	}
	sortRecords(out)
	return out, nil
}

// Close implements Store.
func (m *MemStore) Close() error { return nil }

func sortRecords(rs []Record) {
	sort.Slice(rs, func(i, j int) bool {
		if !rs[i].Created.Equal(rs[j].Created) {
			return rs[i].Created.Before(rs[j].Created)
		}
		return rs[i].ID < rs[j].ID
	})
}

var bTokens = []byte("tokens")

// BoltStore keeps records in a bbolt file (one bucket, id → JSON).
type BoltStore struct{ db *bolt.DB }

// OpenBolt opens (creating) the token file at path, mode 0600.
func OpenBolt(path string) (*BoltStore, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return nil, fmt.Errorf("auth: open %s: %w", path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bTokens)
		return err
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("auth: open %s: %w", path, err)
	}
	return &BoltStore{db: db}, nil
}

// Put implements Store.
func (b *BoltStore) Put(r Record) error {
	v, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return b.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bTokens).Put([]byte(r.ID), v) })
}

// Get implements Store.
func (b *BoltStore) Get(id string) (Record, error) {
	var r Record
	err := b.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bTokens).Get([]byte(id))
		if v == nil {
			return ErrNotFound
		}
		return json.Unmarshal(v, &r)
	})
	return r, err
}

// List implements Store.
func (b *BoltStore) List() ([]Record, error) {
	var out []Record
	err := b.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bTokens).ForEach(func(_, v []byte) error {
			var r Record
			if err := json.Unmarshal(v, &r); err != nil {
				return err
			}
			out = append(out, r)
			return nil
		})
	})
	sortRecords(out)
	return out, err
}

// Close implements Store.
func (b *BoltStore) Close() error { return b.db.Close() }

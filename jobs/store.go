package jobs

import (
	"context"
	"sort"
	"sync"
)

// Store keeps job records. The Manager serialises its own writes to one
// record; a Store must only be safe for concurrent use. Issue 16 gives the
// head a durable one (the GCS tables' store).
type Store interface {
	// Create adds a record, or reports ErrDuplicate if its submission id
	// is taken.
	Create(ctx context.Context, r Record) error
	// Put replaces an existing record.
	Put(ctx context.Context, r Record) error
	// Get returns a record, or ErrNotFound.
	Get(ctx context.Context, submissionID string) (Record, error)
	// List returns every record, oldest first.
	List(ctx context.Context) ([]Record, error)
	// Delete removes a record, or reports ErrNotFound.
	Delete(ctx context.Context, submissionID string) error
}

// MemStore is an in-memory Store.
type MemStore struct {
	mu   sync.Mutex
	recs map[string]Record
}

// NewMemStore returns an empty in-memory store.
func NewMemStore() *MemStore { return &MemStore{recs: map[string]Record{}} }

func (s *MemStore) Create(_ context.Context, r Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.recs[r.SubmissionID]; ok {
		return ErrDuplicate
	}
	s.recs[r.SubmissionID] = r.clone()
	return nil
}

func (s *MemStore) Put(_ context.Context, r Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.recs[r.SubmissionID]; !ok {
		return ErrNotFound
	}
	s.recs[r.SubmissionID] = r.clone()
	return nil
}

func (s *MemStore) Get(_ context.Context, id string) (Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.recs[id]
	if !ok {
		return Record{}, ErrNotFound
	}
	return r.clone(), nil
}

func (s *MemStore) List(_ context.Context) ([]Record, error) {
	s.mu.Lock()
	out := make([]Record, 0, len(s.recs))
	for _, r := range s.recs {
		out = append(out, r.clone())
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].StartTime != out[j].StartTime {
			return out[i].StartTime < out[j].StartTime
		}
		return out[i].SubmissionID < out[j].SubmissionID
	})
	return out, nil
}

func (s *MemStore) Delete(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.recs[id]; !ok {
		return ErrNotFound
	}
	delete(s.recs, id)
	return nil
}

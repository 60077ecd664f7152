package jobs

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"

	"github.com/gray-cluster/gray/gcs"
)

// jobsTable is the GCS table of Jobs API records (submission id → JSON).
const jobsTable = "jobs"

// GCSStore keeps job records in the GCS tables' store, so that they
// outlive the head (bbolt or Redis, as the head's store is).
type GCSStore struct{ st gcs.Store }

// NewGCSStore keeps records in st.
func NewGCSStore(st gcs.Store) *GCSStore { return &GCSStore{st: st} }

func (s *GCSStore) Create(ctx context.Context, r Record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("jobs: encoding %s: %w", r.SubmissionID, err)
	}
	res, err := s.st.Apply(ctx, gcs.Op{Kind: gcs.OpInsert, Table: jobsTable, Key: []byte(r.SubmissionID), Value: b})
	if err != nil {
		return fmt.Errorf("jobs: storing %s: %w", r.SubmissionID, err)
	}
	if res[0] == 1 {
		return ErrDuplicate
	}
	return nil
}

// Put replaces an existing record (the Manager serialises writes to one
// record, so the check and the write need no transaction).
func (s *GCSStore) Put(ctx context.Context, r Record) error {
	if _, err := s.Get(ctx, r.SubmissionID); err != nil {
		return err
	}
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("jobs: encoding %s: %w", r.SubmissionID, err)
	}
	if _, err := s.st.Apply(ctx, gcs.Put(jobsTable, []byte(r.SubmissionID), b)); err != nil {
		return fmt.Errorf("jobs: storing %s: %w", r.SubmissionID, err)
	}
	return nil
}

func (s *GCSStore) Get(ctx context.Context, id string) (Record, error) {
	if id == "" {
		return Record{}, ErrNotFound
	}
	b, ok, err := s.st.Get(ctx, jobsTable, []byte(id))
	if err != nil {
		return Record{}, fmt.Errorf("jobs: reading %s: %w", id, err)
	}
	if !ok {
		return Record{}, ErrNotFound
	}
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return Record{}, fmt.Errorf("jobs: record %s: %w", id, err)
	}
	return r, nil
}

func (s *GCSStore) List(ctx context.Context) ([]Record, error) {
	var out []Record
	err := s.st.Scan(ctx, jobsTable, nil, func(key, value []byte) error {
		var r Record
		if err := json.Unmarshal(value, &r); err != nil {
			return fmt.Errorf("jobs: record %s: %w", key, err)
		}
		out = append(out, r)
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].StartTime != out[j].StartTime {
			return out[i].StartTime < out[j].StartTime
		}
		return out[i].SubmissionID < out[j].SubmissionID
	})
	return out, nil
}

func (s *GCSStore) Delete(ctx context.Context, id string) error {
	if id == "" {
		return ErrNotFound
	}
	res, err := s.st.Apply(ctx, gcs.Op{Kind: gcs.OpDelete, Table: jobsTable, Key: []byte(id)})
	if err != nil {
		return fmt.Errorf("jobs: deleting %s: %w", id, err)
	}
	if res[0] == 0 {
		return ErrNotFound
	}
	return nil
}

package gcs

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	"github.com/gray-cluster/gray/internal/ids"
)

// JobInfo is the record of one job (a client session).
type JobInfo struct {
	ID        ids.JobID
	Namespace string
	ClientID  string
	// SubmissionID is the Jobs API submission whose entrypoint runs this
	// session ("" for a driver started by hand).
	SubmissionID string
	StartTime    time.Time
	EndTime      time.Time
	Alive        bool
}

// Jobs is the job table. Its counter is kept in a Store (when it has one)
// before a number is handed out, so that job numbers never repeat after a
// restart: native drivers' exports in the KV are keyed by them. The
// records themselves are still in memory.
type Jobs struct {
	mu    sync.Mutex
	next  uint32
	jobs  map[ids.JobID]*JobInfo
	store Store // nil: the counter is in memory only
}

// CountersTable is the Store table of counters; JobCounterKey holds the
// next job number, big-endian.
const (
	CountersTable = "counters"
	JobCounterKey = "job"
)

// NewJobs returns an empty job table whose counter lives in memory.
func NewJobs() *Jobs { return &Jobs{next: 1, jobs: map[ids.JobID]*JobInfo{}} }

// OpenJobs returns an empty job table whose counter is kept in s,
// continuing from the number stored there.
func OpenJobs(ctx context.Context, s Store) (*Jobs, error) {
	j := NewJobs()
	j.store = s
	v, ok, err := s.Get(ctx, CountersTable, []byte(JobCounterKey))
	switch {
	case err != nil:
		return nil, fmt.Errorf("jobs: read counter: %w", err)
	case ok && len(v) != 4:
		return nil, fmt.Errorf("jobs: %w: job counter is %d bytes", ErrCorrupt, len(v))
	case ok:
		j.next = max(binary.BigEndian.Uint32(v), 1)
	}
	return j, nil
}

// allocLocked hands out the next job number, stored first.
func (j *Jobs) allocLocked(ctx context.Context) (uint32, error) {
	n := j.next
	if j.store != nil {
		next := binary.BigEndian.AppendUint32(nil, n+1)
		if _, err := j.store.Apply(ctx, Put(CountersTable, []byte(JobCounterKey), next)); err != nil {
			return 0, fmt.Errorf("jobs: store counter: %w", err)
		}
	}
	j.next = n + 1
	return n, nil
}

// Start registers a new job and returns its record.
func (j *Jobs) Start(ctx context.Context, clientID, namespace string, now time.Time) (JobInfo, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	n, err := j.allocLocked(ctx)
	if err != nil {
		return JobInfo{}, err
	}
	id := ids.JobFromInt(n)
	info := &JobInfo{ID: id, Namespace: namespace, ClientID: clientID, StartTime: now, Alive: true}
	j.jobs[id] = info
	return *info, nil
}

// NextID reserves a job number for a job recorded elsewhere (a native
// driver's, in the native GCS), so that no two jobs share one.
func (j *Jobs) NextID(ctx context.Context) (uint32, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.allocLocked(ctx)
}

// SetSubmission links a job to the Jobs API submission that started it.
func (j *Jobs) SetSubmission(id ids.JobID, submissionID string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if info, ok := j.jobs[id]; ok {
		info.SubmissionID = submissionID
	}
}

// Finish marks a job as ended.
func (j *Jobs) Finish(id ids.JobID, now time.Time) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if info, ok := j.jobs[id]; ok {
		info.Alive = false
		info.EndTime = now
	}
}

// Get returns a job's record.
func (j *Jobs) Get(id ids.JobID) (JobInfo, bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	info, ok := j.jobs[id]
	if !ok {
		return JobInfo{}, false
	}
	return *info, true
}

// List returns every job.
func (j *Jobs) List() []JobInfo {
	j.mu.Lock()
	defer j.mu.Unlock()
	out := make([]JobInfo, 0, len(j.jobs))
	for _, info := range j.jobs {
		out = append(out, *info)
	}
	return out
}

// Resume registers a job that was running when the head stopped and whose
// driver session is coming back (see Sessions), under its old id.
func (j *Jobs) Resume(info JobInfo) {
	j.mu.Lock()
	defer j.mu.Unlock()
	info.Alive = true
	info.EndTime = time.Time{}
	j.jobs[info.ID] = &info
	if n := info.ID.Int(); n >= j.next {
		j.next = n + 1
	}
}

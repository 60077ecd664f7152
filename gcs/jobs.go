package gcs

import (
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

// Jobs is the job table.
type Jobs struct {
	mu   sync.Mutex
	next uint32
	jobs map[ids.JobID]*JobInfo
}

// NewJobs returns an empty job table.
func NewJobs() *Jobs { return &Jobs{next: 1, jobs: map[ids.JobID]*JobInfo{}} }

// Start registers a new job and returns its id.
func (j *Jobs) Start(clientID, namespace string, now time.Time) JobInfo {
	j.mu.Lock()
	defer j.mu.Unlock()
	id := ids.JobFromInt(j.next)
	j.next++
	info := &JobInfo{ID: id, Namespace: namespace, ClientID: clientID, StartTime: now, Alive: true}
	j.jobs[id] = info
	return *info
}

// SetSubmission links a job to the Jobs API submission that started it.
func (j *Jobs) SetSubmission(id ids.JobID, submissionID string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if info, ok := j.jobs[id]; ok {
		info.SubmissionID = submissionID
	}
}

// NextID reserves a job number for a job recorded elsewhere (a native
// driver's, in the native GCS), so that no two jobs share one.
func (j *Jobs) NextID() uint32 {
	j.mu.Lock()
	defer j.mu.Unlock()
	id := j.next
	j.next++
	return id
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

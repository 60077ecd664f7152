// Package taskhistory keeps a bounded history of the tasks the head's Ray
// Client front end submitted (normal tasks and actor calls): what they are,
// when they were submitted and how they ended. The State API joins it with
// what the raylets report of the tasks still running; the oldest records
// are dropped beyond the limit, as Ray's GCS drops old task events.
package taskhistory

import (
	"container/list"
	"maps"
	"sync"
	"time"

	"github.com/gray-cluster/gray/internal/ids"
)

// DefaultLimit is the number of task records kept (Ray's GCS keeps 100000
// task events by default; the head keeps fewer, each record is larger).
const DefaultLimit = 10000

// Task types, as Ray's TaskType names them.
const (
	NormalTask = "NORMAL_TASK"
	ActorTask  = "ACTOR_TASK"
)

// End states.
const (
	Finished = "FINISHED"
	Failed   = "FAILED"
)

// Record is one submitted task.
type Record struct {
	TaskID  ids.TaskID
	JobID   ids.JobID
	ActorID ids.ActorID // zero for a normal task
	Type    string
	// Name is the task's name (the name option, else FuncName); FuncName is
	// the function, or Class.method for actor calls.
	Name, FuncName string
	Resources      map[string]float64
	PlacementGroup string
	Submitted      time.Time
	// State is "" until it ended (Finished or Failed), at Ended.
	State     string
	Ended     time.Time
	ErrorType string
}

// History is the bounded record table; safe for concurrent use.
type History struct {
	limit int
	now   func() time.Time

	mu      sync.Mutex
	order   *list.List // of *Record, oldest first
	byID    map[ids.TaskID]*list.Element
	dropped int
}

// New returns a history of at most limit records (<= 0: DefaultLimit); now
// is the clock (nil: time.Now).
func New(limit int, now func() time.Time) *History {
	if limit <= 0 {
		limit = DefaultLimit
	}
	if now == nil {
		now = time.Now
	}
	return &History{limit: limit, now: now, order: list.New(), byID: map[ids.TaskID]*list.Element{}}
}

// Submitted records a task; Submitted is set to now when zero.
func (h *History) Submitted(r Record) {
	if h == nil {
		return
	}
	if r.Submitted.IsZero() {
		r.Submitted = h.now()
	}
	if r.Name == "" {
		r.Name = r.FuncName
	}
	r.Resources = maps.Clone(r.Resources)
	h.mu.Lock()
	defer h.mu.Unlock()
	if el, ok := h.byID[r.TaskID]; ok {
		el.Value = &r
		h.order.MoveToBack(el)
		return
	}
	h.byID[r.TaskID] = h.order.PushBack(&r)
	for h.order.Len() > h.limit {
		old := h.order.Front()
		h.order.Remove(old)
		delete(h.byID, old.Value.(*Record).TaskID)
		h.dropped++
	}
}

// Ended records how a task ended (a task no longer kept is ignored).
func (h *History) Ended(id ids.TaskID, failed bool, errorType string) {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	el, ok := h.byID[id]
	if !ok {
		return
	}
	r := *el.Value.(*Record)
	r.State, r.Ended, r.ErrorType = Finished, h.now(), ""
	if failed {
		r.State, r.ErrorType = Failed, errorType
	}
	el.Value = &r
}

// Snapshot returns the records, oldest first, and how many were dropped.
func (h *History) Snapshot() ([]Record, int) {
	if h == nil {
		return nil, 0
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]Record, 0, h.order.Len())
	for el := h.order.Front(); el != nil; el = el.Next() {
		out = append(out, *el.Value.(*Record))
	}
	return out, h.dropped
}

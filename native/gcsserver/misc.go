package gcsserver

import (
	"container/list"
	"context"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/gray-cluster/gray/proto/ray/commonpb"
	"github.com/gray-cluster/gray/proto/ray/eventspb"
	"github.com/gray-cluster/gray/proto/ray/raypb"
)

// minPollTimeout bounds an RPC timeout derived from a short poll period.
const minPollTimeout = time.Second

func newTicker(d time.Duration) *time.Ticker { return time.NewTicker(d) }

func formatFloat(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

// taskEventRing keeps the latest task events, merged per (task, attempt),
// evicting the oldest attempt beyond its limit.
type taskEventRing struct {
	limit   int
	order   *list.List // of *raypb.TaskEvents, oldest first
	byKey   map[string]*list.Element
	dropped int32
}

func newTaskEventRing(limit int) *taskEventRing {
	return &taskEventRing{limit: limit, order: list.New(), byKey: map[string]*list.Element{}}
}

func eventKey(e *raypb.TaskEvents) string {
	return string(e.GetTaskId()) + "/" + strconv.Itoa(int(e.GetAttemptNumber()))
}

func (r *taskEventRing) add(e *raypb.TaskEvents) {
	k := eventKey(e)
	if el, ok := r.byKey[k]; ok {
		proto.Merge(el.Value.(*raypb.TaskEvents), e)
		return
	}
	r.byKey[k] = r.order.PushBack(proto.Clone(e))
	for r.order.Len() > r.limit {
		old := r.order.Front()
		r.order.Remove(old)
		delete(r.byKey, eventKey(old.Value.(*raypb.TaskEvents)))
		r.dropped++
	}
}

func predicate(p raypb.FilterPredicate, equal bool) bool {
	if p == raypb.FilterPredicate_NOT_EQUAL {
		return !equal
	}
	return equal
}

// eventMatches applies GetTaskEvents filters (all must hold).
func eventMatches(e *raypb.TaskEvents, f *raypb.GetTaskEventsRequest_Filters) bool {
	if f == nil {
		return true
	}
	for _, jf := range f.GetJobFilters() {
		if !predicate(jf.GetPredicate(), string(e.GetJobId()) == string(jf.GetJobId())) {
			return false
		}
	}
	for _, tf := range f.GetTaskFilters() {
		if !predicate(tf.GetPredicate(), string(e.GetTaskId()) == string(tf.GetTaskId())) {
			return false
		}
	}
	for _, af := range f.GetActorFilters() {
		if !predicate(af.GetPredicate(), string(e.GetTaskInfo().GetActorId()) == string(af.GetActorId())) {
			return false
		}
	}
	for _, nf := range f.GetTaskNameFilters() {
		if !predicate(nf.GetPredicate(), e.GetTaskInfo().GetName() == nf.GetTaskName()) {
			return false
		}
	}
	if f.GetExcludeDriver() && e.GetTaskInfo().GetType() == commonpb.TaskType_DRIVER_TASK {
		return false
	}
	for _, sf := range f.GetStateFilters() {
		if !predicate(sf.GetPredicate(), strings.EqualFold(latestState(e).String(), sf.GetState())) {
			return false
		}
	}
	return true
}

// latestState is the task status with the latest timestamp.
func latestState(e *raypb.TaskEvents) commonpb.TaskStatus {
	best, at := commonpb.TaskStatus_NIL, int64(-1)
	for st, ts := range e.GetStateUpdates().GetStateTsNs() {
		if ts > at || (ts == at && st > int32(best)) {
			best, at = commonpb.TaskStatus(st), ts
		}
	}
	return best
}

type taskService struct {
	raypb.UnimplementedTaskInfoGcsServiceServer
	s *Server
}

func (x *taskService) AddTaskEventData(_ context.Context, req *raypb.AddTaskEventDataRequest) (*raypb.AddTaskEventDataReply, error) {
	x.s.mu.Lock()
	defer x.s.mu.Unlock()
	for _, e := range req.GetData().GetEventsByTask() {
		x.s.events.add(e)
	}
	x.s.events.dropped += req.GetData().GetNumProfileEventsDropped()
	return &raypb.AddTaskEventDataReply{Status: okStatus()}, nil
}

func (x *taskService) GetTaskEvents(_ context.Context, req *raypb.GetTaskEventsRequest) (*raypb.GetTaskEventsReply, error) {
	x.s.mu.Lock()
	defer x.s.mu.Unlock()
	r := x.s.events
	out := &raypb.GetTaskEventsReply{Status: okStatus(), NumTotalStored: int64(r.order.Len()), NumStatusTaskEventsDropped: r.dropped}
	for el := r.order.Front(); el != nil; el = el.Next() {
		e := el.Value.(*raypb.TaskEvents)
		if !eventMatches(e, req.GetFilters()) {
			out.NumFilteredOnGcs++
			continue
		}
		if req.Limit != nil && req.GetLimit() > 0 && int64(len(out.EventsByTask)) >= req.GetLimit() {
			out.NumTruncated++
			continue
		}
		out.EventsByTask = append(out.EventsByTask, proto.Clone(e).(*raypb.TaskEvents))
	}
	return out, nil
}

type runtimeEnvService struct {
	raypb.UnimplementedRuntimeEnvGcsServiceServer
	s *Server
}

// PinRuntimeEnvURI remembers the pin's expiry (nothing is garbage collected
// by gray yet, so the pin only has to be acknowledged).
func (x *runtimeEnvService) PinRuntimeEnvURI(_ context.Context, req *raypb.PinRuntimeEnvURIRequest) (*raypb.PinRuntimeEnvURIReply, error) {
	x.s.mu.Lock()
	x.s.uriPins[req.GetUri()] = x.s.now().Add(time.Duration(req.GetExpirationS()) * time.Second)
	x.s.mu.Unlock()
	return &raypb.PinRuntimeEnvURIReply{Status: okStatus()}, nil
}

type eventExportService struct {
	raypb.UnimplementedRayEventExportGcsServiceServer
	s *Server
}

// AddEvents accepts and drops exported Ray events.
func (x *eventExportService) AddEvents(context.Context, *eventspb.AddEventsRequest) (*eventspb.AddEventsReply, error) {
	return &eventspb.AddEventsReply{Status: &eventspb.AddEventsStatus{}}, nil
}

// TaskEvents returns a snapshot of the task event ring (oldest first) and
// how many task attempts it dropped beyond its limit.
func (s *Server) TaskEvents() ([]*raypb.TaskEvents, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*raypb.TaskEvents, 0, s.events.order.Len())
	for el := s.events.order.Front(); el != nil; el = el.Next() {
		out = append(out, proto.Clone(el.Value.(*raypb.TaskEvents)).(*raypb.TaskEvents))
	}
	return out, int(s.events.dropped)
}

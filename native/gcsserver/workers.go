package gcsserver

import (
	"context"

	"google.golang.org/protobuf/proto"

	"github.com/gray-cluster/gray/proto/ray/raypb"
)

// Workers returns a snapshot of the worker table.
func (s *Server) Workers() []*raypb.WorkerTableData {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*raypb.WorkerTableData, 0, len(s.workerOrd))
	for _, id := range s.workerOrd {
		out = append(out, proto.Clone(s.workers[id]).(*raypb.WorkerTableData))
	}
	return out
}

// putWorkerLocked stores (or replaces) a worker record.
func (s *Server) putWorkerLocked(w *raypb.WorkerTableData) {
	id := string(w.GetWorkerAddress().GetWorkerId())
	if _, ok := s.workers[id]; !ok {
		s.workerOrd = append(s.workerOrd, id)
	}
	s.workers[id] = w
	s.storeWorkerLocked(w)
}

// workerDeadLocked records a worker's failure (merged into its record),
// publishes the worker delta and fails the actors it hosted or owned.
func (s *Server) workerDeadLocked(f *raypb.WorkerTableData) {
	wid := f.GetWorkerAddress().GetWorkerId()
	w := s.workers[string(wid)]
	if w == nil {
		w = proto.Clone(f).(*raypb.WorkerTableData)
		s.putWorkerLocked(w)
	} else {
		if !w.GetIsAlive() && w.EndTimeMs != 0 {
			return // already reported
		}
		w.ExitType = f.ExitType
		w.ExitDetail = f.ExitDetail
		w.CreationTaskException = f.GetCreationTaskException()
		w.EndTimeMs = f.GetEndTimeMs()
		if f.MemoryUsedBytesAtDeath != nil {
			w.MemoryUsedBytesAtDeath = f.MemoryUsedBytesAtDeath
		}
	}
	w.IsAlive = false
	if w.EndTimeMs == 0 {
		w.EndTimeMs = uint64(s.now().UnixMilli())
	}
	s.storeWorkerLocked(w)
	s.log.Info("worker failed", "worker_id", hexID(wid), "exit_type", w.GetExitType().String(), "detail", w.GetExitDetail())
	s.publish(&raypb.PubMessage{
		ChannelType: raypb.ChannelType_GCS_WORKER_DELTA_CHANNEL,
		KeyId:       wid,
		InnerMessage: &raypb.PubMessage_WorkerDeltaMessage{WorkerDeltaMessage: &raypb.WorkerDeltaData{
			NodeId: f.GetWorkerAddress().GetNodeId(), WorkerId: wid,
		}},
	})
	s.onWorkerDeadLocked(f)
	s.pruneWorkersLocked()
}

type workerService struct {
	raypb.UnimplementedWorkerInfoGcsServiceServer
	s *Server
}

func (x *workerService) AddWorkerInfo(_ context.Context, req *raypb.AddWorkerInfoRequest) (*raypb.AddWorkerInfoReply, error) {
	d := req.GetWorkerData()
	if len(d.GetWorkerAddress().GetWorkerId()) == 0 {
		return &raypb.AddWorkerInfoReply{Status: errStatus(codeInvalid, "AddWorkerInfo without worker_address.worker_id")}, nil
	}
	d = proto.Clone(d).(*raypb.WorkerTableData)
	if d.Timestamp == 0 {
		d.Timestamp = x.s.now().UnixMilli()
	}
	x.s.mu.Lock()
	defer x.s.mu.Unlock()
	x.s.putWorkerLocked(d)
	return &raypb.AddWorkerInfoReply{Status: okStatus()}, nil
}

func (x *workerService) ReportWorkerFailure(_ context.Context, req *raypb.ReportWorkerFailureRequest) (*raypb.ReportWorkerFailureReply, error) {
	f := req.GetWorkerFailure()
	if len(f.GetWorkerAddress().GetWorkerId()) == 0 {
		return &raypb.ReportWorkerFailureReply{Status: errStatus(codeInvalid, "ReportWorkerFailure without worker_address.worker_id")}, nil
	}
	x.s.mu.Lock()
	defer x.s.mu.Unlock()
	x.s.workerDeadLocked(f)
	return &raypb.ReportWorkerFailureReply{Status: okStatus()}, nil
}

func (x *workerService) GetWorkerInfo(_ context.Context, req *raypb.GetWorkerInfoRequest) (*raypb.GetWorkerInfoReply, error) {
	x.s.mu.Lock()
	defer x.s.mu.Unlock()
	out := &raypb.GetWorkerInfoReply{Status: okStatus()}
	if w := x.s.workers[string(req.GetWorkerId())]; w != nil {
		out.WorkerTableData = proto.Clone(w).(*raypb.WorkerTableData)
	}
	return out, nil
}

func (x *workerService) GetAllWorkerInfo(_ context.Context, req *raypb.GetAllWorkerInfoRequest) (*raypb.GetAllWorkerInfoReply, error) {
	s := x.s
	s.mu.Lock()
	defer s.mu.Unlock()
	f := req.GetFilters()
	out := &raypb.GetAllWorkerInfoReply{Status: okStatus(), Total: int64(len(s.workerOrd))}
	for _, id := range s.workerOrd {
		w := s.workers[id]
		if f != nil && f.IsAlive != nil && w.GetIsAlive() != f.GetIsAlive() {
			out.NumFiltered++
			continue
		}
		if f != nil && f.ExistPausedThreads != nil && (w.GetNumPausedThreads() > 0) != f.GetExistPausedThreads() {
			out.NumFiltered++
			continue
		}
		if req.Limit != nil && req.GetLimit() > 0 && int64(len(out.WorkerTableData)) >= req.GetLimit() {
			break
		}
		out.WorkerTableData = append(out.WorkerTableData, proto.Clone(w).(*raypb.WorkerTableData))
	}
	return out, nil
}

func (x *workerService) UpdateWorkerDebuggerPort(_ context.Context, req *raypb.UpdateWorkerDebuggerPortRequest) (*raypb.UpdateWorkerDebuggerPortReply, error) {
	x.s.mu.Lock()
	defer x.s.mu.Unlock()
	if w := x.s.workers[string(req.GetWorkerId())]; w != nil {
		p := req.GetDebuggerPort()
		w.DebuggerPort = &p
		x.s.storeWorkerLocked(w)
	}
	return &raypb.UpdateWorkerDebuggerPortReply{Status: okStatus()}, nil
}

func (x *workerService) UpdateWorkerNumPausedThreads(_ context.Context, req *raypb.UpdateWorkerNumPausedThreadsRequest) (*raypb.UpdateWorkerNumPausedThreadsReply, error) {
	x.s.mu.Lock()
	defer x.s.mu.Unlock()
	if w := x.s.workers[string(req.GetWorkerId())]; w != nil {
		n := max(int64(w.GetNumPausedThreads())+int64(req.GetNumPausedThreadsDelta()), 0)
		v := uint32(n)
		w.NumPausedThreads = &v
		x.s.storeWorkerLocked(w)
	}
	return &raypb.UpdateWorkerNumPausedThreadsReply{Status: okStatus()}, nil
}

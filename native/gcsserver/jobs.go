package gcsserver

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"strconv"

	"google.golang.org/protobuf/proto"

	"github.com/gray-cluster/gray/proto/ray/raypb"
)

// Jobs returns a snapshot of the job table in the order jobs were added.
func (s *Server) Jobs() []*raypb.JobTableData {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*raypb.JobTableData, 0, len(s.jobOrder))
	for _, id := range s.jobOrder {
		out = append(out, proto.Clone(s.jobs[id]).(*raypb.JobTableData))
	}
	return out
}

func (s *Server) publishJobLocked(j *raypb.JobTableData) {
	s.storeJobLocked(j)
	s.publish(&raypb.PubMessage{
		ChannelType:  raypb.ChannelType_GCS_JOB_CHANNEL,
		KeyId:        j.GetJobId(),
		InnerMessage: &raypb.PubMessage_JobMessage{JobMessage: proto.Clone(j).(*raypb.JobTableData)},
	})
}

// finishJobLocked marks a job dead, publishes it and ends its non-detached
// actors.
func (s *Server) finishJobLocked(jobID []byte) {
	j := s.jobs[string(jobID)]
	if j == nil || j.GetIsDead() {
		return
	}
	now := s.now()
	j.IsDead = true
	j.EndTime = uint64(now.UnixMilli())
	j.Timestamp = now.UnixMilli()
	s.log.Info("job finished", "job_id", hexID(jobID))
	s.publishJobLocked(j)
	s.onJobFinishedLocked(jobID)
	s.dropJobFunctionsLocked(jobID)
}

// jobDeadLocked reports whether a known job has finished.
func (s *Server) jobDeadLocked(jobID []byte) bool {
	j := s.jobs[string(jobID)]
	return j != nil && j.GetIsDead()
}

type jobService struct {
	raypb.UnimplementedJobInfoGcsServiceServer
	s *Server
}

func (x *jobService) GetNextJobID(ctx context.Context, _ *raypb.GetNextJobIDRequest) (*raypb.GetNextJobIDReply, error) {
	s := x.s
	var n uint32
	if s.cfg.NextJobID != nil {
		var err error
		if n, err = s.cfg.NextJobID(ctx); err != nil {
			return &raypb.GetNextJobIDReply{Status: errStatus(codeIOError, "%v", err)}, nil
		}
	} else {
		s.mu.Lock()
		n = s.nextJob
		s.nextJob++
		s.mu.Unlock()
	}
	return &raypb.GetNextJobIDReply{Status: okStatus(), JobId: int32(n)}, nil
}

func (x *jobService) AddJob(_ context.Context, req *raypb.AddJobRequest) (*raypb.AddJobReply, error) {
	s := x.s
	d := req.GetData()
	if len(d.GetJobId()) == 0 {
		return &raypb.AddJobReply{Status: errStatus(codeInvalid, "AddJob without job_id")}, nil
	}
	d = proto.Clone(d).(*raypb.JobTableData)
	now := s.now()
	if d.StartTime == 0 {
		d.StartTime = uint64(now.UnixMilli())
	}
	if d.Timestamp == 0 {
		d.Timestamp = now.UnixMilli()
	}
	d.IsDead = false
	s.mu.Lock()
	defer s.mu.Unlock()
	id := string(d.GetJobId())
	if _, ok := s.jobs[id]; !ok {
		s.jobOrder = append(s.jobOrder, id)
	}
	s.jobs[id] = d
	s.log.Info("job added", "job_id", hexID(d.GetJobId()), "driver", addrOf(d.GetDriverAddress()), "pid", d.GetDriverPid())
	s.publishJobLocked(d)
	return &raypb.AddJobReply{Status: okStatus()}, nil
}

func (x *jobService) MarkJobFinished(_ context.Context, req *raypb.MarkJobFinishedRequest) (*raypb.MarkJobFinishedReply, error) {
	x.s.mu.Lock()
	defer x.s.mu.Unlock()
	x.s.finishJobLocked(req.GetJobId())
	return &raypb.MarkJobFinishedReply{Status: okStatus()}, nil
}

// jobMatches compares a job with the job_or_submission_id filter: the hex
// job id, its decimal counter, or the Jobs API submission id in metadata.
func jobMatches(j *raypb.JobTableData, filter string) bool {
	id := j.GetJobId()
	if hex.EncodeToString(id) == filter {
		return true
	}
	if len(id) == 4 {
		if n := binary.LittleEndian.Uint32(id); filter == strconv.FormatUint(uint64(n), 10) {
			return true
		}
	}
	return j.GetConfig().GetMetadata()["job_submission_id"] == filter
}

func (x *jobService) GetAllJobInfo(_ context.Context, req *raypb.GetAllJobInfoRequest) (*raypb.GetAllJobInfoReply, error) {
	s := x.s
	s.mu.Lock()
	defer s.mu.Unlock()
	out := &raypb.GetAllJobInfoReply{Status: okStatus()}
	for _, id := range s.jobOrder {
		j := s.jobs[id]
		if req.JobOrSubmissionId != nil && !jobMatches(j, req.GetJobOrSubmissionId()) {
			continue
		}
		if req.Limit != nil && req.GetLimit() > 0 && int32(len(out.JobInfoList)) >= req.GetLimit() {
			break
		}
		c := proto.Clone(j).(*raypb.JobTableData)
		if !req.GetSkipIsRunningTasksField() {
			running := !c.GetIsDead() && s.jobHasLiveActorsLocked(c.GetJobId())
			c.IsRunningTasks = &running
		}
		out.JobInfoList = append(out.JobInfoList, c)
	}
	return out, nil
}

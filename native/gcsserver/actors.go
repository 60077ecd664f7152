package gcsserver

import (
	"github.com/gray-cluster/gray/proto/ray/commonpb"
	"github.com/gray-cluster/gray/proto/ray/raypb"
)

// nameKey identifies a named actor.
type nameKey struct{ namespace, name string }

// actor is one entry of the actor table.
type actor struct {
	data *raypb.ActorTableData
	spec *commonpb.TaskSpec
}

type actorService struct {
	raypb.UnimplementedActorInfoGcsServiceServer
	s *Server
}

func (s *Server) onNodeDeadLocked(id []byte, n *nodeEntry)    {}
func (s *Server) onJobFinishedLocked(jobID []byte)            {}
func (s *Server) jobHasLiveActorsLocked(jobID []byte) bool    { return false }
func (s *Server) onWorkerDeadLocked(f *raypb.WorkerTableData) {}

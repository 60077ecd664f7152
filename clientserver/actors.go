package clientserver

import (
	"github.com/gray-cluster/gray/internal/ids"
	pb "github.com/gray-cluster/gray/proto/rayclientpb"
)

// scheduleActorTask handles ACTOR, METHOD and NAMED_ACTOR requests.
func (s *Server) scheduleActorTask(ss *session, t *pb.ClientTask, data [][]byte, opts options) *pb.ClientTaskTicket {
	switch t.Type {
	case pb.ClientTask_NAMED_ACTOR:
		return s.invalidTicket("builtins", "ValueError", "Failed to look up actor with name '"+t.Name+"'. This could because 1. You are trying to look up a named actor you didn't create. 2. The named actor died. 3. You did not use a namespace matching the namespace of the actor.")
	}
	return s.invalidTicket("builtins", "NotImplementedError", "actors are not supported by this gray pool yet")
}

// releaseActor drops the session's handle on an actor.
func (s *Server) releaseActor(ss *session, id ids.ActorID) bool { return false }

// killActor implements ray.kill.
func (s *Server) killActor(ss *session, a *pb.TerminateRequest_ActorTerminate) bool { return false }

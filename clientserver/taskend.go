package clientserver

import (
	"bytes"

	"github.com/gray-cluster/gray/internal/ids"
)

// errorTypes maps exception class names found in an error value to Ray's
// ErrorType names, most specific first.
var errorTypes = []struct{ class, errorType string }{
	{"TaskCancelledError", "TASK_CANCELLED"},
	{"ActorDiedError", "ACTOR_DIED"},
	{"ActorUnavailableError", "ACTOR_UNAVAILABLE"},
	{"WorkerCrashedError", "WORKER_DIED"},
	{"OutOfMemoryError", "OUT_OF_MEMORY"},
	{"ObjectLostError", "OBJECT_LOST"},
	{"RuntimeEnvSetupError", "RUNTIME_ENV_SETUP_FAILED"},
	{"TaskUnschedulableError", "TASK_UNSCHEDULABLE_ERROR"},
}

// recordEnd tells the task history how a task ended, from its first
// return value (a sealed error value means it failed).
func (s *Server) recordEnd(id ids.TaskID, returns []ids.ObjectID) {
	if s.cfg.Tasks == nil || len(returns) == 0 {
		return
	}
	isErr, ok := s.store.IsError(returns[0])
	if !ok {
		return
	}
	if !isErr {
		s.cfg.Tasks.Ended(id, false, "")
		return
	}
	obj, err := s.store.Get(returns[0])
	if err != nil || obj == nil {
		s.cfg.Tasks.Ended(id, true, "TASK_EXECUTION_EXCEPTION")
		return
	}
	kind := "TASK_EXECUTION_EXCEPTION"
	var head []byte
	if len(obj.Chunks) > 0 {
		head = obj.Chunks[0]
		if len(head) > 4096 {
			head = head[:4096]
		}
	}
	for _, e := range errorTypes {
		if bytes.Contains(head, []byte(e.class)) {
			kind = e.errorType
			break
		}
	}
	s.cfg.Tasks.Ended(id, true, kind)
}

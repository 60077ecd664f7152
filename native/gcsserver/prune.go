package gcsserver

import "github.com/gray-cluster/gray/gcs"

// Bounds on finished entries kept for queries, as Ray's GCS caps its
// caches of destroyed actors and dead nodes and workers.
const (
	maxDeadNodes      = 1000
	maxDeadWorkers    = 1000 // Ray's maximum_gcs_dead_worker_cached_count
	maxDestroyedActor = 100000
)

// pruneLocked drops the oldest finished entries of an ordered table once
// more than limit of them accumulate (with 10% slack, so that the scan is
// amortised). finished tells which ids may go; drop deletes one.
func pruneLocked(order []string, limit int, finished func(string) bool, drop func(string)) []string {
	n := 0
	for _, id := range order {
		if finished(id) {
			n++
		}
	}
	if n <= limit+limit/10 {
		return order
	}
	// A fresh slice: callers may be ranging over the old one (they skip ids
	// that are no longer in the table).
	excess := n - limit
	kept := make([]string, 0, len(order)-excess)
	for _, id := range order {
		if excess > 0 && finished(id) {
			drop(id)
			excess--
			continue
		}
		kept = append(kept, id)
	}
	return kept
}

func (s *Server) pruneNodesLocked() {
	s.nodeOrder = pruneLocked(s.nodeOrder, maxDeadNodes,
		func(id string) bool { return !s.nodes[id].alive() },
		func(id string) { delete(s.nodes, id); s.forgetLocked(gcs.NativeNodesTable, []byte(id)) })
}

func (s *Server) pruneWorkersLocked() {
	s.workerOrd = pruneLocked(s.workerOrd, maxDeadWorkers,
		func(id string) bool { return !s.workers[id].GetIsAlive() },
		func(id string) { delete(s.workers, id); s.forgetLocked(gcs.NativeWorkersTable, []byte(id)) })
}

func (s *Server) pruneActorsLocked() {
	s.actorOrder = pruneLocked(s.actorOrder, maxDestroyedActor,
		func(id string) bool { return s.actors[id].gone },
		func(id string) { delete(s.actors, id); s.forgetLocked(gcs.NativeActorsTable, []byte(id)) })
}

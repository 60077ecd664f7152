package clientserver

import (
	"github.com/gray-cluster/gray/internal/ids"
)

// whenDone runs fn once the work whose return objects are returns has
// finished: its first return is sealed, or every holder released it while
// pending. Work without returns counts as done at once.
func (s *Server) whenDone(returns []ids.ObjectID, fn func()) {
	if len(returns) == 0 {
		fn()
		return
	}
	ch, err := s.store.ReadyChan(returns[0])
	if err != nil {
		fn()
		return
	}
	go func() {
		select {
		case <-ch:
		case <-s.ctx.Done():
		}
		fn()
	}()
}

// pinArgs keeps a submitted task's argument objects alive from submission
// until it finishes, as Ray's submitter keeps the refs of the tasks it
// submitted: the node pins them only once it takes the task, and the client
// may release a temporary argument (f.remote(g.remote())) right away.
func (s *Server) pinArgs(pins []ids.ObjectID) func() {
	if len(pins) == 0 {
		return func() {}
	}
	s.store.Pin(pins)
	return func() { s.store.Unpin(pins) }
}

package nodeserver

import (
	"context"
	"fmt"

	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/internal/nodewire"
	"github.com/gray-cluster/gray/objectstore"
	pb "github.com/gray-cluster/gray/proto/nodepb"
	"github.com/gray-cluster/gray/rayerr"
)

// After a head restart the head's store is empty, but the providers still
// hold the results they produced (and copies they pulled), and still run
// tasks whose results are to come. A restored provider that reconnects
// lists both in its Register; each object a resumed session claims
// (Config.Claim: the session of the object's job) becomes a pending entry
// of the head's store held by that session, which the provider then fills:
// it pushes the held ones back (ReturnObjects.held), and the results to
// come arrive as any. Objects nobody claims are dropped on the provider.
// The head's store stays the one home of an object's value; the
// directory records the provider as a holder, as for any result.

// reclaimKind says how a reclaimed object is to arrive.
type reclaimKind uint8

const (
	reclaimHeld    reclaimKind = iota + 1 // the provider holds it: pushed back
	reclaimPending                        // a result still to come
)

// reclaim claims a restored provider's objects for the resumed sessions
// and tells it which to push back and which to forget.
func (s *Server) reclaim(r *remote, reg *pb.Register) {
	held, err := nodewire.ObjectIDs(reg.HeldObjects)
	if err != nil {
		s.log.Warn("bad held objects from provider", "node", r.id.Hex(), "err", err)
	}
	pending, err := nodewire.ObjectIDs(reg.RunningReturns)
	if err != nil {
		s.log.Warn("bad running returns from provider", "node", r.id.Hex(), "err", err)
	}
	m := &pb.ReturnObjects{}
	claimed := map[ids.ObjectID]reclaimKind{}
	for _, id := range held {
		s.dir.add(id, r.id)
		if s.cfg.Store.Contains(id) {
			continue // the head has it (a restored payload, another provider's copy)
		}
		if !s.claim(id) {
			m.Drop = append(m.Drop, id.Bytes())
			continue
		}
		claimed[id] = reclaimHeld
		m.Held = append(m.Held, id.Bytes())
	}
	for _, id := range pending {
		if _, ok := claimed[id]; ok || s.cfg.Store.Contains(id) || !s.claim(id) {
			continue
		}
		claimed[id] = reclaimPending
		// Its task may have ended since the provider registered, its
		// result already pushed (and dropped: nobody held it yet).
		m.Pending = append(m.Pending, id.Bytes())
	}
	r.mu.Lock()
	if r.reclaimed == nil {
		r.reclaimed = map[ids.ObjectID]reclaimKind{}
	}
	for id, k := range claimed {
		r.reclaimed[id] = k
	}
	r.mu.Unlock()
	if len(m.Held)+len(m.Pending)+len(m.Drop) == 0 {
		return
	}
	s.log.Info("objects a restored provider holds are found again", "node", r.id.Hex(),
		"held", len(m.Held), "results_to_come", len(m.Pending), "dropped", len(m.Drop))
	if err := r.send(&pb.HeadMessage{Msg: &pb.HeadMessage_ReturnObjects{ReturnObjects: m}}); err != nil {
		s.reclaimFailed(r, "the provider went away")
	}
}

// claim makes id a pending entry held by the resumed session that owns
// it; false when none does.
func (s *Server) claim(id ids.ObjectID) bool {
	return s.cfg.Claim != nil && s.cfg.Claim(id)
}

// reclaimMissing answers a held object the provider no longer has.
func (s *Server) reclaimMissing(r *remote, id ids.ObjectID) {
	r.mu.Lock()
	kind := r.reclaimed[id]
	delete(r.reclaimed, id)
	r.mu.Unlock()
	if kind != reclaimHeld {
		return
	}
	s.sealLost(id, rayerr.ObjectLost(fmt.Sprintf("%s: the provider that held it no longer has it", id.Hex())))
}

// reclaimFailed fails what a restored provider still owed the head (it
// died or went away before sending it).
func (s *Server) reclaimFailed(r *remote, why string) {
	r.mu.Lock()
	owed := r.reclaimed
	r.reclaimed = nil
	r.mu.Unlock()
	for id, kind := range owed {
		if s.cfg.Store.Ready(id) {
			continue
		}
		e := rayerr.ObjectLost(fmt.Sprintf("%s: %s", id.Hex(), why))
		if kind == reclaimPending {
			e = rayerr.NodeDied(fmt.Sprintf("The node %s running this task died (%s).", r.id.Hex(), why))
		}
		s.sealLost(id, e)
	}
}

func (s *Server) sealLost(id ids.ObjectID, e rayerr.Exception) {
	v := e.Pickle()
	s.cfg.Store.Seal(&objectstore.Object{ID: id, Chunks: [][]byte{v}, Size: int64(len(v)), IsError: true})
}

// awaitRestoredLocked records the restored providers still to report.
// Called with s.mu held.
func (s *Server) awaitRestoredLocked(id ids.NodeID) {
	if s.awaiting == nil {
		s.awaiting = map[ids.NodeID]bool{}
	}
	if s.awaitDone == nil {
		s.awaitDone = make(chan struct{})
	}
	s.awaiting[id] = true
}

// restoredReported records that a restored provider reconnected (and its
// objects were claimed) or was declared dead.
func (s *Server) restoredReported(id ids.NodeID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.awaiting[id] {
		return
	}
	delete(s.awaiting, id)
	if len(s.awaiting) == 0 {
		close(s.awaitDone)
	}
}

// AwaitRestored waits until every provider known from before a head
// restart has reconnected (what it holds for the resumed sessions is then
// in the head's store, or on its way) or has been declared dead, or ctx
// ends. Until then an object a resumed session names that the store lacks
// may still be found.
func (s *Server) AwaitRestored(ctx context.Context) error {
	s.mu.Lock()
	done := s.awaitDone
	s.mu.Unlock()
	if done == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

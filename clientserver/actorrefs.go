package clientserver

import (
	"bytes"
	"strconv"
	"time"

	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/internal/pickle"
	"github.com/gray-cluster/gray/objectstore"
)

// Actor lifetimes follow Ray's reference counting: a non-detached actor
// lives while anything holds it. Holders are sessions and workers with a
// handle, pending work (a call to the actor, a task or constructor given
// its handle: keys "call:N", "task:N", "create:N") and stored objects whose
// value carries its handle ("obj:<object id>", dropped once the object is
// freed).

// actorStubs lists the actors whose handles (or methods) stubs carry.
func actorStubs(stubs []pickle.Stub) []ids.ActorID {
	var out []ids.ActorID
	seen := map[ids.ActorID]bool{}
	for _, st := range stubs {
		if st.Type != "Actor" && st.Type != "RemoteMethod" {
			continue
		}
		aid, err := ids.ActorFromBytes(st.RefID)
		if err != nil || seen[aid] {
			continue
		}
		seen[aid] = true
		out = append(out, aid)
	}
	return out
}

// holdActors makes pending work a holder of the known actors in list and
// returns the function that drops that hold (killing an actor nobody else
// holds).
func (s *Server) holdActors(list []ids.ActorID, kind string) func() {
	if len(list) == 0 {
		return func() {}
	}
	key := kind + ":" + strconv.FormatUint(s.holdSeq.Add(1), 10)
	var held []ids.ActorID
	for _, id := range list {
		if _, ok := s.cfg.Actors.Get(id); ok {
			s.holdActor(id, key)
			held = append(held, id)
		}
	}
	return func() {
		for _, id := range held {
			s.dropActorHolder(id, key)
		}
	}
}

// anchorMarker starts the value of an anchor: an object a worker puts to
// carry the handles a task result holds (the result contains the anchor, so
// the actors live while the result does). Sessions that get the result hold
// the actors themselves, not the anchor.
var anchorMarker = []byte("gray-actor-anchor")

func isAnchor(chunks [][]byte) bool {
	return len(chunks) > 0 && bytes.Contains(chunks[0][:min(len(chunks[0]), 256)], anchorMarker)
}

// objectHoldsActors records that a stored object's value carries handles:
// the object holds those actors until it is freed.
func (s *Server) objectHoldsActors(oid ids.ObjectID, list []ids.ActorID, anchor bool) {
	key := "obj:" + oid.Hex()
	var held []ids.ActorID
	for _, id := range list {
		if _, ok := s.cfg.Actors.Get(id); ok {
			s.holdActor(id, key)
			held = append(held, id)
		}
	}
	if len(held) == 0 {
		return
	}
	s.mu.Lock()
	s.objActors[oid] = held
	if anchor {
		s.anchors[oid] = true
	}
	s.mu.Unlock()
}

// borrowActors makes a session that receives a value carrying handles a
// holder of their actors, as the stock server registers every handle it
// sends a client. Only values known to carry references are scanned: a put
// with handles (objActors) or a result with contained refs (a task result
// with handles contains their anchor).
func (s *Server) borrowActors(ss *session, o *objectstore.Object) {
	s.mu.Lock()
	_, known := s.objActors[o.ID]
	s.mu.Unlock()
	if !known && len(o.Contained) == 0 {
		return
	}
	stubs, err := scanChunks(o.Chunks)
	if err != nil {
		return
	}
	for _, id := range actorStubs(stubs) {
		if _, ok := s.cfg.Actors.Get(id); ok {
			s.holdActor(id, ss.holder())
		}
	}
}

func (s *Server) isAnchorObject(oid ids.ObjectID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.anchors[oid]
}

// sweepObjectHolds drops the actor holds of objects that were freed.
func (s *Server) sweepObjectHolds() {
	s.mu.Lock()
	var gone []ids.ObjectID
	for oid := range s.objActors {
		if !s.store.Contains(oid) {
			gone = append(gone, oid)
		}
	}
	lists := make([][]ids.ActorID, len(gone))
	for i, oid := range gone {
		lists[i] = s.objActors[oid]
		delete(s.objActors, oid)
		delete(s.anchors, oid)
	}
	s.mu.Unlock()
	for i, oid := range gone {
		for _, id := range lists[i] {
			s.dropActorHolder(id, "obj:"+oid.Hex())
		}
	}
}

// sweepLoop runs sweepObjectHolds until the server stops.
func (s *Server) sweepLoop() {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
			s.sweepObjectHolds()
		}
	}
}

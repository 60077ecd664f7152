package plasma

import (
	"container/list"
	"os"
)

// object is one entry of the store. All fields are guarded by Store.mu.
type object struct {
	id       ObjectID
	owner    Owner
	dataSize int64
	metaSize int64
	device   int32
	source   int32

	offset    int64 // in the segment; -1 while spilled
	allocSize int64 // bytes reserved at offset (aligned)
	spillPath string

	spilling  bool          // a spill write is in flight; the memory stays until it ends
	restoring chan struct{} // non-nil while a restore read is in flight; closed when it ends
	noSpill   bool          // a spill of it failed: keep it in memory

	isSealed      bool
	refs          int   // clients holding it (each counted once)
	creator       *conn // client that created it, until sealed
	pinned        bool
	deletePending bool // delete once nobody holds it
	deleted       bool

	elem *list.Element // in evictable or spillable
	in   *list.List
}

func (o *object) size() int64     { return o.dataSize + o.metaSize }
func (o *object) inMemory() bool  { return o.offset >= 0 }
func (o *object) contained() bool { return o.isSealed && !o.deleted }

func (o *object) spec() spec {
	return spec{present: true, dataOff: uint64(o.offset), dataSize: uint64(o.dataSize),
		metaSize: uint64(o.metaSize), allocSize: uint64(o.size()), deviceNum: o.device}
}

// reindexLocked puts o on the eviction or spill list it belongs to now (or
// on none), as the most recently used entry.
func (s *Store) reindexLocked(o *object) {
	if o.in != nil {
		o.in.Remove(o.elem)
		o.in, o.elem = nil, nil
	}
	if !o.isSealed || o.deleted || !o.inMemory() || o.refs > 0 || o.spilling {
		return
	}
	switch {
	case !o.pinned:
		o.in = s.evictable
	case s.cfg.SpillDir != "" && !o.noSpill:
		o.in = s.spillable
	default:
		return
	}
	o.elem = o.in.PushFront(o)
}

// allocLocked reserves alignUp(size) bytes, evicting objects nobody holds
// as needed. When only spilling can make room it starts spills and returns
// a channel that is closed when one ends (try again then); ok false with a
// nil channel means the room cannot be made.
func (s *Store) allocLocked(size int64) (off int64, ok bool, wait <-chan struct{}) {
	need := alignUp(size)
	if need > s.alloc.capacity {
		return 0, false, nil
	}
	for {
		if off, ok := s.alloc.alloc(need); ok {
			s.used += need
			return off, true, nil
		}
		e := s.evictable.Back()
		if e == nil {
			break
		}
		o := e.Value.(*object)
		s.log.Debug("plasma evict", "object", o.id, "size", o.size())
		s.stats.Evictions++
		s.removeLocked(o)
	}
	for s.spillInFlight < need && !s.closed {
		e := s.spillable.Back()
		if e == nil {
			break
		}
		s.startSpillLocked(e.Value.(*object))
	}
	if s.spillInFlight > 0 {
		return 0, false, s.spillDone
	}
	return 0, false, nil
}

// freeLocked returns o's memory, unless a spill is still reading it (the
// spill frees it when it ends).
func (s *Store) freeLocked(o *object) {
	if !o.inMemory() || o.spilling {
		return
	}
	s.freeMemLocked(o)
}

func (s *Store) freeMemLocked(o *object) {
	s.alloc.release(o.offset, o.allocSize)
	if s.cfg.ReleaseFreedPages {
		s.seg.punch(o.offset, o.allocSize)
	}
	s.used -= o.allocSize
	o.offset = -1
}

// createLocked adds an unsealed object with room for its bytes (see
// allocLocked for wait).
func (s *Store) createLocked(id ObjectID, dataSize, metaSize int64, owner Owner, creator *conn) (*object, <-chan struct{}) {
	o := &object{id: id, owner: owner, dataSize: dataSize, metaSize: metaSize, creator: creator, offset: -1}
	off, ok, wait := s.allocLocked(o.size())
	if !ok {
		return nil, wait
	}
	o.offset, o.allocSize = off, alignUp(o.size())
	s.objects[id] = o
	s.stats.Objects++
	return o, nil
}

// sealLocked makes o readable and wakes everyone waiting for seals.
func (s *Store) sealLocked(o *object) {
	o.isSealed = true
	o.creator = nil
	if !s.closed {
		close(s.sealed)
		s.sealed = make(chan struct{})
	}
	s.events.post(Event{ID: o.id, Kind: Sealed, Size: o.size(), Owner: o.owner})
	s.reindexLocked(o)
}

// removeLocked deletes o now, whatever holds it.
func (s *Store) removeLocked(o *object) {
	if o.in != nil {
		o.in.Remove(o.elem)
		o.in, o.elem = nil, nil
	}
	wasSealed := o.isSealed
	if o.inMemory() {
		s.stats.Objects--
	} else if o.spillPath != "" {
		s.stats.Spilled--
		s.stats.SpilledBytes -= o.size()
	}
	if o.pinned {
		s.stats.Pinned--
		o.pinned = false
	}
	s.freeLocked(o)
	if o.spillPath != "" {
		os.Remove(o.spillPath)
		o.spillPath = ""
	}
	o.deleted = true
	delete(s.objects, o.id)
	if wasSealed {
		s.events.post(Event{ID: o.id, Kind: Deleted, Size: o.size(), Owner: o.owner})
	}
}

// maybeDeleteLocked completes a deferred delete once nothing holds o.
func (s *Store) maybeDeleteLocked(o *object) {
	if o.deletePending && !o.deleted && o.isSealed && o.refs == 0 && !o.pinned {
		s.removeLocked(o)
	}
}

// deleteLocked deletes id now, or marks it to go once released; it reports
// what the wire's delete reply says.
func (s *Store) deleteLocked(id ObjectID, dropPin bool) deleteResult {
	o := s.objects[id]
	if o == nil {
		return deleteNonexistent
	}
	if dropPin && o.pinned {
		o.pinned = false
		s.stats.Pinned--
		s.reindexLocked(o)
	}
	o.deletePending = true
	if !o.isSealed {
		return deleteNotSealed
	}
	if o.refs > 0 || o.pinned {
		return deleteInUse
	}
	s.removeLocked(o)
	return deleteOK
}

type deleteResult int

const (
	deleteOK deleteResult = iota
	deleteNonexistent
	deleteNotSealed
	deleteInUse
)

// holdLocked gives c a reference to o (once per client).
func (s *Store) holdLocked(c *conn, o *object) {
	if _, ok := c.held[o.id]; ok {
		return
	}
	c.held[o.id] = o
	o.refs++
	s.reindexLocked(o)
}

// releaseLocked drops c's reference to o; it reports whether c held it.
func (s *Store) releaseLocked(c *conn, id ObjectID) bool {
	o, ok := c.held[id]
	if !ok {
		return false
	}
	delete(c.held, id)
	o.refs--
	if o.deleted {
		return true
	}
	s.reindexLocked(o)
	s.maybeDeleteLocked(o)
	return true
}

// abortLocked drops an unsealed object its creator gives up on.
func (s *Store) abortLocked(c *conn, o *object) {
	if _, ok := c.held[o.id]; ok {
		delete(c.held, o.id)
		o.refs--
	}
	s.removeLocked(o)
}

package plasma

import (
	"fmt"
	"os"
	"path/filepath"
)

// Spilling and restoring move bytes between the segment and SpillDir
// without holding the store's lock: the object is marked (spilling, or
// restoring) while its file I/O runs, and the store settles its state when
// the I/O ends. Creators that wait for the room get "retry" meanwhile.

// startSpillLocked writes o (sealed, in memory, unheld, pinned) to its
// spill file in the background.
func (s *Store) startSpillLocked(o *object) {
	if o.in != nil {
		o.in.Remove(o.elem)
		o.in, o.elem = nil, nil
	}
	o.spilling = true
	s.spillInFlight += o.allocSize
	// A sequence number keeps a re-created id's file apart from the one an
	// old spill of the same id may still be removing.
	s.spillSeq++
	path := filepath.Join(s.cfg.SpillDir, fmt.Sprintf("%s-%d", o.id, s.spillSeq))
	mem := s.seg.mem[o.offset : o.offset+o.size()] // immutable once sealed
	s.wg.Add(1)
	hook := s.spillHook
	go func() {
		defer s.wg.Done()
		if hook != nil {
			hook(o.id)
		}
		s.finishSpill(o, path, writeSpillFile(path, mem))
	}()
}

func writeSpillFile(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err = f.Write(b); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func (s *Store) finishSpill(o *object, path string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o.spilling = false
	s.spillInFlight -= o.allocSize
	close(s.spillDone)
	s.spillDone = make(chan struct{})
	switch {
	case o.deleted:
		s.freeMemLocked(o)
		os.Remove(path)
	case err != nil:
		s.log.Warn("plasma spill failed; keeping the object in memory", "object", o.id, "err", err)
		os.Remove(path)
		o.noSpill = true
		s.reindexLocked(o)
	case o.refs > 0 || !o.pinned:
		// A client took it (or it was unpinned) while the bytes were
		// written: it stays in memory.
		os.Remove(path)
		s.reindexLocked(o)
	default:
		s.freeMemLocked(o)
		o.spillPath = path
		s.stats.Objects--
		s.stats.Spilled++
		s.stats.SpilledBytes += o.size()
		s.stats.Spills++
		s.log.Debug("plasma spilled", "object", o.id, "size", o.size(), "path", path)
		s.events.post(Event{ID: o.id, Kind: Spilled, Size: o.size(), Owner: o.owner})
	}
}

// restoreLocked makes sure the spilled objects among ids come back into
// memory. It starts the restores it can and returns a channel to wait on
// while any is in flight (or waits for room), nil when nothing is left to
// do; objects that cannot be restored stay spilled (a Get reports them
// absent).
func (s *Store) restoreLocked(ids []ObjectID) <-chan struct{} {
	var wait <-chan struct{}
	for _, id := range ids {
		o := s.objects[id]
		if o == nil || !o.contained() || o.inMemory() {
			continue
		}
		if o.restoring != nil {
			wait = o.restoring
			continue
		}
		off, ok, roomWait := s.allocLocked(o.size())
		if !ok {
			if roomWait != nil {
				wait = roomWait
			} else {
				s.log.Warn("plasma restore: no room", "object", id, "size", o.size(), "used", s.used)
			}
			continue
		}
		s.startRestoreLocked(o, off)
		wait = o.restoring
	}
	return wait
}

func (s *Store) startRestoreLocked(o *object, off int64) {
	o.restoring = make(chan struct{})
	path := o.spillPath
	mem := s.seg.mem[off : off+o.size()]
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.finishRestore(o, off, readSpillFile(path, mem))
	}()
}

func readSpillFile(path string, dst []byte) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if st.Size() != int64(len(dst)) {
		return fmt.Errorf("spill file has %d bytes, want %d", st.Size(), len(dst))
	}
	_, err = f.ReadAt(dst, 0)
	return err
}

func (s *Store) finishRestore(o *object, off int64, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	done := o.restoring
	o.restoring = nil
	defer close(done)
	if o.deleted || err != nil {
		size := alignUp(o.size())
		s.alloc.release(off, size)
		s.used -= size
		if err != nil && !o.deleted {
			s.log.Warn("plasma restore failed; the object is lost", "object", o.id, "err", err)
			s.removeLocked(o)
		}
		return
	}
	os.Remove(o.spillPath)
	o.offset, o.allocSize, o.spillPath = off, alignUp(o.size()), ""
	s.stats.Spilled--
	s.stats.SpilledBytes -= o.size()
	s.stats.Objects++
	s.stats.Restores++
	s.log.Debug("plasma restored", "object", o.id, "size", o.size())
	s.reindexLocked(o)
}

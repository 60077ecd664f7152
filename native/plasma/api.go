package plasma

import (
	"fmt"
	"os"
)

// Contains reports whether id is sealed and present (in memory or spilled).
func (s *Store) Contains(id ObjectID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.objects[id]
	return o != nil && o.contained()
}

// Pin holds the primary copy of a sealed object until Unpin: it is never
// evicted (it may be spilled when Config.SpillDir is set). It reports false
// if id is not sealed here.
func (s *Store) Pin(id ObjectID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.objects[id]
	if o == nil || !o.contained() {
		return false
	}
	if !o.pinned {
		o.pinned = true
		s.stats.Pinned++
		s.reindexLocked(o)
	}
	return true
}

// Unpin undoes Pin; the object becomes evictable once no client holds it.
func (s *Store) Unpin(id ObjectID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.objects[id]
	if o == nil || !o.pinned {
		return
	}
	o.pinned = false
	s.stats.Pinned--
	s.reindexLocked(o)
	s.maybeDeleteLocked(o)
}

// Delete drops id (and its pin) now, or as soon as no client holds it; an
// unsealed object goes once it is sealed and released.
func (s *Store) Delete(id ObjectID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deleteLocked(id, true)
}

// Put creates and seals an object from Go, evicting or spilling others if
// needed (it waits for spills it starts). The object is not pinned and no
// client holds it.
func (s *Store) Put(id ObjectID, data, metadata []byte, owner Owner) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		if s.closed {
			return ErrClosed
		}
		if s.objects[id] != nil {
			return fmt.Errorf("%w: %s", ErrObjectExists, id)
		}
		o, wait := s.createLocked(id, int64(len(data)), int64(len(metadata)), owner, nil)
		if o != nil {
			n := copy(s.seg.mem[o.offset:], data)
			copy(s.seg.mem[o.offset+int64(n):], metadata)
			s.sealLocked(o)
			return nil
		}
		if wait == nil {
			return fmt.Errorf("%w: %s needs %d bytes (capacity %d, %d in use)",
				ErrOutOfMemory, id, len(data)+len(metadata), s.cfg.Capacity, s.used)
		}
		s.mu.Unlock()
		<-wait
		s.mu.Lock()
	}
}

// Read returns a copy of a sealed object's data and metadata (from memory,
// or from its spill file without restoring it).
func (s *Store) Read(id ObjectID) (data, metadata []byte, ok bool) {
	for attempt := 0; attempt < 3; attempt++ {
		s.mu.Lock()
		o := s.objects[id]
		if s.closed || o == nil || !o.contained() {
			s.mu.Unlock()
			return nil, nil, false
		}
		size, dataSize := o.size(), o.dataSize
		if o.inMemory() {
			all := make([]byte, size)
			copy(all, s.seg.mem[o.offset:o.offset+size])
			s.mu.Unlock()
			return all[:dataSize:dataSize], all[dataSize:], true
		}
		path := o.spillPath
		s.mu.Unlock()
		// Read the file unlocked; a restore that finishes meanwhile removes
		// it, and the next attempt finds the object in memory.
		all := make([]byte, size)
		err := readSpillFile(path, all)
		if err == nil {
			return all[:dataSize:dataSize], all[dataSize:], true
		}
		if !os.IsNotExist(err) {
			s.log.Warn("plasma read of a spilled object failed", "object", id, "err", err)
			return nil, nil, false
		}
	}
	return nil, nil, false
}

package plasma

import (
	"errors"
	"fmt"
)

// Go-side object I/O in place, without copying whole objects: a Reader
// hands out slices of a sealed object's bytes in the segment while it holds
// the object (no eviction, spill or delete meanwhile); a Writer fills a new
// object's bytes in the segment and seals it. Both take segMu for reading
// while they touch the mapping, so Close cannot unmap it under them.

// ErrShortWrite: a Writer was sealed before all its data was written, or
// was given more than the object's size.
var ErrShortWrite = errors.New("plasma: object not fully written")

// Reader is a held sealed object.
type Reader struct {
	s        *Store
	o        *object
	meta     []byte
	dataSize int64
	closed   bool
}

// OpenReader holds id for reading in place. ok is false when id is not
// sealed here or not in memory (spilled, or being spilled): use Read.
func (s *Store) OpenReader(id ObjectID) (r *Reader, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.objects[id]
	if s.closed || o == nil || !o.contained() || !o.inMemory() || o.spilling {
		return nil, false
	}
	o.refs++
	s.reindexLocked(o)
	meta := make([]byte, o.metaSize)
	copy(meta, s.seg.mem[o.offset+o.dataSize:o.offset+o.size()])
	return &Reader{s: s, o: o, meta: meta, dataSize: o.dataSize}, true
}

// DataSize is the object's data size; Metadata a copy of its metadata.
func (r *Reader) DataSize() int64  { return r.dataSize }
func (r *Reader) Metadata() []byte { return r.meta }

// View calls fn with the object's data bytes [off, off+n) in the segment.
// fn must not keep the slice.
func (r *Reader) View(off, n int64, fn func([]byte) error) error {
	if off < 0 || n < 0 || off+n > r.dataSize {
		return fmt.Errorf("plasma: view [%d, %d) of a %d-byte object", off, off+n, r.dataSize)
	}
	s := r.s
	s.segMu.RLock()
	defer s.segMu.RUnlock()
	if s.segClosed {
		return ErrClosed
	}
	start := r.o.offset + off
	return fn(s.seg.mem[start : start+n : start+n])
}

// Close lets the object go (a delete asked for meanwhile happens now).
func (r *Reader) Close() {
	s := r.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.closed {
		return
	}
	r.closed = true
	r.o.refs--
	if !r.o.deleted {
		s.reindexLocked(r.o)
		s.maybeDeleteLocked(r.o)
	}
}

// Writer is an unsealed object created from Go.
type Writer struct {
	s    *Store
	o    *object
	next int64 // data bytes written so far
	done bool
}

// Create adds an unsealed object of dataSize data bytes and the given
// metadata (written at once), evicting or spilling others if needed as Put
// does. Clients that Get it wait until Seal.
func (s *Store) Create(id ObjectID, dataSize int64, metadata []byte, owner Owner) (*Writer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		if s.closed {
			return nil, ErrClosed
		}
		if s.objects[id] != nil {
			return nil, fmt.Errorf("%w: %s", ErrObjectExists, id)
		}
		o, wait := s.createLocked(id, dataSize, int64(len(metadata)), owner, nil)
		if o != nil {
			copy(s.seg.mem[o.offset+dataSize:], metadata)
			return &Writer{s: s, o: o}, nil
		}
		if wait == nil {
			return nil, fmt.Errorf("%w: %s needs %d bytes (capacity %d, %d in use)",
				ErrOutOfMemory, id, dataSize+int64(len(metadata)), s.cfg.Capacity, s.used)
		}
		s.mu.Unlock()
		<-wait
		s.mu.Lock()
	}
}

// Write appends p to the object's data.
func (w *Writer) Write(p []byte) (int, error) {
	if w.done {
		return 0, ErrClosed
	}
	if w.next+int64(len(p)) > w.o.dataSize {
		return 0, fmt.Errorf("%w: %d bytes past a %d-byte object", ErrShortWrite, w.next+int64(len(p))-w.o.dataSize, w.o.dataSize)
	}
	s := w.s
	s.segMu.RLock()
	defer s.segMu.RUnlock()
	if s.segClosed {
		return 0, ErrClosed
	}
	n := copy(s.seg.mem[w.o.offset+w.next:w.o.offset+w.o.dataSize], p)
	w.next += int64(n)
	return n, nil
}

// Seal makes the object readable once all its data is written; otherwise
// it is dropped and Seal reports ErrShortWrite.
func (w *Writer) Seal() error {
	if w.done {
		return ErrClosed
	}
	if w.next != w.o.dataSize {
		w.Abort()
		return fmt.Errorf("%w: %d of %d bytes", ErrShortWrite, w.next, w.o.dataSize)
	}
	s := w.s
	s.mu.Lock()
	defer s.mu.Unlock()
	w.done = true
	if s.closed || w.o.deleted {
		return ErrClosed
	}
	s.sealLocked(w.o)
	s.maybeDeleteLocked(w.o)
	return nil
}

// Abort drops the unsealed object (nothing after Seal).
func (w *Writer) Abort() {
	s := w.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if w.done {
		return
	}
	w.done = true
	if !s.closed && !w.o.deleted && !w.o.isSealed {
		s.removeLocked(w.o)
	}
}

// Written is how many data bytes were written so far.
func (w *Writer) Written() int64 { return w.next }

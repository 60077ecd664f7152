package objectstore

// Spilling, after Ray's object spilling: when a value does not fit in
// memory, the least recently used sealed values are written to files in the
// spill directory and dropped from memory (their entry keeps its holders,
// pins and containment exactly as before); a Get reads a spilled value back.
//
// Locking: file I/O never runs under Store.mu. Victims are chosen under mu
// and taken out of the LRU list (so nobody picks them twice),
// written without mu, and swapped to spilled under mu again; an entry freed
// in the meantime is noticed by pointer comparison and its file removed.
// Restores work the same way, and concurrent gets of one spilled value share
// a single read. Freed files are removed after mu is released (Store.unlock).
// Spilling never changes an *Object: a caller that got it from Get keeps a
// whole value even after the entry drops it.

import (
	"container/list"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/gray-cluster/gray/internal/ids"
)

// NewWithSpill returns a store that keeps capacity bytes of values in memory
// and spills the rest to files in dir (made on first use; a directory of its
// own, such as one under the session directory). Values larger than the
// whole capacity are written straight to disk.
func NewWithSpill(capacity int64, dir string) *Store {
	s := New(capacity)
	if dir != "" {
		s.dir = dir
		s.lru = list.New()
		s.spillDone = make(chan struct{})
	}
	return s
}

// SpillDir is the spill directory ("" when the store does not spill).
func (s *Store) SpillDir() string { return s.dir }

// Spilled is the number of values now held on disk only.
func (s *Store) Spilled() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.spilled
}

// SpilledBytes is the size of the values now held on disk only.
func (s *Store) SpilledBytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.spilledBytes
}

// Stats describes the store; the counters run since it was made.
type Stats struct {
	Capacity int64 `json:"capacity"`
	// Used is the bytes of values in memory.
	Used    int64 `json:"used"`
	Objects int   `json:"objects"`
	// SpilledObjects and SpilledBytes are the values now on disk only.
	SpilledObjects int   `json:"spilled_objects"`
	SpilledBytes   int64 `json:"spilled_bytes"`
	// SpillCount and SpillBytesTotal count values written to disk
	// (including those larger than the capacity that went straight there).
	SpillCount      int64 `json:"spill_count"`
	SpillBytesTotal int64 `json:"spill_bytes_total"`
	// RestoreCount and RestoreBytesTotal count values read back into memory.
	RestoreCount      int64 `json:"restore_count"`
	RestoreBytesTotal int64 `json:"restore_bytes_total"`
	// DiskReads counts values read for a get without being kept in memory
	// (there was no room for them).
	DiskReads     int64 `json:"disk_reads"`
	SpillErrors   int64 `json:"spill_errors"`
	RestoreErrors int64 `json:"restore_errors"`
	// RemoveErrors counts spill files that could not be removed.
	RemoveErrors int64 `json:"remove_errors"`
}

// Stats returns the store's sizes and spill counters.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Capacity, st.Used, st.Objects = s.capacity, s.used, len(s.objects)
	st.SpilledObjects, st.SpilledBytes = s.spilled, s.spilledBytes
	st.RemoveErrors = s.removeErrors.Load()
	return st
}

// Close removes the store's spill files. Values that were spilled are lost
// (a Get of one fails with ErrRestore) and nothing is spilled any more.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.unlock()
	s.closed = true
	for _, e := range s.objects {
		if e.file != "" {
			s.garbage = append(s.garbage, e.file)
		}
	}
	return nil
}

// testHooks run (when set, by tests) outside mu just before a spill file is
// written and before one is read.
type testHooks struct {
	write func(ids.ObjectID)
	read  func(ids.ObjectID)
}

func (s *Store) lruAddLocked(e *entry) {
	if s.lru != nil && e.lru == nil {
		e.lru = s.lru.PushBack(e)
	}
}

func (s *Store) lruTouchLocked(e *entry) {
	if e.lru != nil {
		s.lru.MoveToBack(e.lru)
	}
}

func (s *Store) lruRemoveLocked(e *entry) {
	if e.lru != nil {
		s.lru.Remove(e.lru)
		e.lru = nil
	}
}

// victim is a value being spilled.
type victim struct {
	e    *entry
	obj  *Object
	path string
	lens []int
	err  error
}

// makeRoomLocked spills values until size more bytes fit in memory and
// reports whether they do, with mu held (it is released while writing, so
// callers look at the entries they care about again). It gives up on the
// first write error, returning it, unless the room was made all the same.
func (s *Store) makeRoomLocked(size int64) (bool, error) {
	for {
		if s.used+size <= s.capacity {
			return true, nil
		}
		if s.dir == "" || size > s.capacity {
			return false, nil
		}
		if s.closed {
			return false, fmt.Errorf("%w: store closed", ErrSpill)
		}
		vs := s.pickVictimsLocked(s.used + size - s.capacity)
		if len(vs) == 0 {
			if s.inflight == 0 {
				return false, nil
			}
			// Everything spillable is being written by others: their
			// batches end by closing spillDone.
			ch := s.spillDone
			s.unlock()
			<-ch
			s.mu.Lock()
			continue
		}
		s.unlock()
		for _, v := range vs {
			v.path, v.lens, v.err = s.writeFile(v.obj)
		}
		s.mu.Lock()
		if err := s.finishSpillsLocked(vs); err != nil && s.used+size > s.capacity {
			return false, err
		}
	}
}

// pickVictimsLocked takes least recently used values, those not pinned
// first (task arguments, values inside others), until need bytes are
// chosen or none is left, and takes them out of the LRU list (which marks
// them as being spilled). Values a caller is using
// cannot be told apart beyond that; spilling them is safe since a caller's
// *Object is never touched.
func (s *Store) pickVictimsLocked(need int64) []*victim {
	var vs []*victim
	var got int64
	for pass := 0; pass < 2 && got < need; pass++ {
		for el := s.lru.Front(); el != nil && got < need; {
			next := el.Next()
			e := el.Value.(*entry)
			if e.meta.Size > 0 && (pass == 1 || e.pins == 0) {
				s.lru.Remove(el)
				e.lru = nil
				vs = append(vs, &victim{e: e, obj: e.obj})
				got += e.meta.Size
			}
			el = next
		}
	}
	s.inflight += len(vs)
	return vs
}

// finishSpillsLocked swaps written victims to spilled; one whose write
// failed stays in memory (least recently used still) and one freed or
// closed meanwhile loses its file. It returns the first write error.
func (s *Store) finishSpillsLocked(vs []*victim) error {
	var first error
	// Backwards, so that values put back keep their order at the front.
	for i := len(vs) - 1; i >= 0; i-- {
		v := vs[i]
		e := v.e
		s.inflight--
		live := s.objects[v.obj.ID] == e
		switch {
		case v.err != nil:
			s.stats.SpillErrors++
			if first == nil {
				first = v.err
			}
			if live {
				e.lru = s.lru.PushFront(e)
			}
		case !live || s.closed:
			s.garbage = append(s.garbage, v.path)
			if live {
				e.lru = s.lru.PushFront(e)
			}
		default:
			e.obj, e.file, e.lens = nil, v.path, v.lens
			s.used -= e.meta.Size
			s.spilled++
			s.spilledBytes += e.meta.Size
			s.stats.SpillCount++
			s.stats.SpillBytesTotal += e.meta.Size
		}
	}
	close(s.spillDone)
	s.spillDone = make(chan struct{})
	return first
}

// putToDiskLocked stores a value larger than the capacity as a spilled one.
// Called with mu held; releases it while writing.
func (s *Store) putToDiskLocked(obj *Object, holder string) error {
	s.unlock()
	path, lens, err := s.writeFile(obj)
	s.mu.Lock()
	if err != nil {
		s.stats.SpillErrors++
		return s.fullErr(fmt.Sprintf("object of %d bytes", obj.Size), err)
	}
	if s.existsLocked(obj.ID) || s.closed {
		s.garbage = append(s.garbage, path)
		if s.closed {
			return s.fullErr(fmt.Sprintf("object of %d bytes", obj.Size), fmt.Errorf("%w: store closed", ErrSpill))
		}
		return fmt.Errorf("%w: %s", ErrExists, obj.ID.Hex())
	}
	e := s.entryLocked(obj.ID)
	if holder != "" {
		e.holders[holder]++
	}
	s.sealSpilledLocked(e, obj, path, lens)
	return nil
}

// sealToDiskLocked seals a value larger than the capacity as a spilled one,
// or in memory when it cannot be written. Called with mu held; releases it
// while writing.
func (s *Store) sealToDiskLocked(obj *Object) bool {
	s.unlock()
	path, lens, err := s.writeFile(obj)
	s.mu.Lock()
	e, ok := s.objects[obj.ID]
	if !ok || e.sealed() {
		if err == nil {
			s.garbage = append(s.garbage, path)
		}
		return false
	}
	switch {
	case err != nil:
		s.stats.SpillErrors++
		s.sealLocked(e, obj)
	case s.closed:
		s.garbage = append(s.garbage, path)
		s.sealLocked(e, obj)
	default:
		s.sealSpilledLocked(e, obj, path, lens)
	}
	return true
}

func (s *Store) sealSpilledLocked(e *entry, obj *Object, path string, lens []int) {
	e.meta = header(obj)
	e.file, e.lens = path, lens
	s.spilled++
	s.spilledBytes += obj.Size
	s.stats.SpillCount++
	s.stats.SpillBytesTotal += obj.Size
	s.pinContainedLocked(e)
	close(e.ready)
}

// writeFile writes obj's chunks to a new file in the spill directory.
func (s *Store) writeFile(obj *Object) (string, []int, error) {
	if h := s.hooks.write; h != nil {
		h(obj.ID)
	}
	fail := func(err error) (string, []int, error) {
		return "", nil, fmt.Errorf("%w: %s: %w", ErrSpill, obj.ID.Hex(), err)
	}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fail(err)
	}
	var f *os.File
	var path string
	for try := 0; ; try++ {
		// Names are unique within the store; O_EXCL keeps a store from
		// taking another's file should two share the directory.
		path = filepath.Join(s.dir, fmt.Sprintf("%s-%d", obj.ID.Hex(), s.seq.Add(1)))
		var err error
		f, err = os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrExist) || try == 100 {
			return fail(err)
		}
	}
	lens := make([]int, len(obj.Chunks))
	for i, c := range obj.Chunks {
		lens[i] = len(c)
		if _, err := f.Write(c); err != nil {
			_ = f.Close()
			s.removeFile(path)
			return fail(err)
		}
	}
	if err := f.Close(); err != nil {
		s.removeFile(path)
		return fail(err)
	}
	return path, lens, nil
}

// readFile reads a spilled value's chunks back.
func (s *Store) readFile(id ids.ObjectID, path string, lens []int) ([][]byte, error) {
	if h := s.hooks.read; h != nil {
		h(id)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var total int64
	for _, n := range lens {
		total += int64(n)
	}
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() != total {
		return nil, fmt.Errorf("spill file %s has %d bytes, want %d", path, st.Size(), total)
	}
	chunks := make([][]byte, len(lens))
	for i, n := range lens {
		chunks[i] = make([]byte, n)
		if _, err := io.ReadFull(f, chunks[i]); err != nil {
			return nil, err
		}
	}
	return chunks, nil
}

func (s *Store) removeFile(path string) {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.removeErrors.Add(1)
	}
}

// restoreOp is one read of a spilled value, shared by concurrent gets.
type restoreOp struct {
	done chan struct{}
	obj  *Object
	err  error
}

// restore reads spilled e back. Called with mu held; releases it. The value
// is kept in memory when room can be made for it (spilling others), else
// the caller gets it uncached.
func (s *Store) restore(e *entry) (*Object, error) {
	if op := e.restore; op != nil {
		s.mu.Unlock()
		<-op.done
		return op.obj, op.err
	}
	op := &restoreOp{done: make(chan struct{})}
	e.restore = op
	meta := e.meta
	if meta.Size <= s.capacity && !s.closed {
		_, _ = s.makeRoomLocked(meta.Size) // best effort
	}
	path, lens := e.file, e.lens // "" if freed while making room
	s.unlock()

	var chunks [][]byte
	err := fmt.Errorf("%w: %s", ErrNotFound, meta.ID.Hex())
	if path != "" {
		chunks, err = s.readFile(meta.ID, path, lens)
	}
	s.mu.Lock()
	live := s.objects[meta.ID] == e
	switch {
	case err != nil && !live:
		// Freed while we read: the get comes after the free.
		op.err = fmt.Errorf("%w: %s", ErrNotFound, meta.ID.Hex())
	case err != nil:
		s.stats.RestoreErrors++
		op.err = fmt.Errorf("%w: %s: %w", ErrRestore, meta.ID.Hex(), err)
	default:
		op.obj = &Object{ID: meta.ID, Chunks: chunks, Size: meta.Size, IsError: meta.IsError, Contained: meta.Contained}
		if live && !s.closed && s.used+meta.Size <= s.capacity {
			s.garbage = append(s.garbage, e.file)
			e.obj, e.file, e.lens = op.obj, "", nil
			s.used += meta.Size
			s.spilled--
			s.spilledBytes -= meta.Size
			s.lruAddLocked(e)
			s.stats.RestoreCount++
			s.stats.RestoreBytesTotal += meta.Size
		} else {
			s.stats.DiskReads++
		}
	}
	e.restore = nil
	close(op.done)
	s.unlock()
	return op.obj, op.err
}

// Package objectstore holds a node's objects: pickled values kept as the chunks
// they arrived in (never concatenated), with reference tracking by holder
// (client sessions, workers), pins (arguments of running tasks) and containment
// (an object that holds refs keeps them alive), as Ray's reference counting does.
//
// A store made with NewWithSpill spills sealed values to files when memory is
// short, as Ray's object spilling does (see spill.go); one made with New keeps
// everything in memory and refuses what does not fit.
package objectstore

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/gray-cluster/gray/internal/ids"
)

// Sentinel errors.
var (
	ErrNotFound = errors.New("object not found")
	ErrFull     = errors.New("object store full")
	ErrExists   = errors.New("object already exists")
	// ErrSpill wraps a failure to write a value to the spill directory. A Put
	// that needed the room fails with ErrFull as well.
	ErrSpill = errors.New("object spill failed")
	// ErrRestore wraps a failure to read a spilled value back.
	ErrRestore = errors.New("object restore failed")
)

// Object is a sealed value. The store never changes an Object once it has it:
// one returned by Get stays valid (and whole) for its caller even after the
// store spills or frees the value.
type Object struct {
	ID ids.ObjectID
	// Chunks are the pickle bytes in order; their concatenation is the value.
	Chunks [][]byte
	Size   int64
	// IsError marks a value that is a pickled exception (plain cloudpickle)
	// which a get must raise.
	IsError bool
	// Contained are refs held inside the value; they live while it lives.
	Contained []ids.ObjectID
}

// header is obj without its bytes.
func header(obj *Object) *Object {
	return &Object{ID: obj.ID, Size: obj.Size, IsError: obj.IsError, Contained: obj.Contained}
}

// An entry is pending (meta == nil), in memory (obj != nil; being spilled
// while a write of obj is under way) or spilled (obj == nil, file != "").
type entry struct {
	// obj is the value while it is in memory.
	obj *Object
	// meta is the sealed value's header; nil while pending.
	meta    *Object
	ready   chan struct{}
	holders map[string]int
	pins    int
	// pinned are the contained objects this one pinned when it was sealed
	// (those present then); freeing it unpins exactly these.
	pinned []ids.ObjectID

	// file holds the value while it is spilled; lens are its chunks' lengths.
	file string
	lens []int
	// restore is the read of file under way, which other gets join.
	restore *restoreOp
	// lru is the entry's place in Store.lru while it is in memory and not
	// being spilled (spilling stores only): a value in memory that is not
	// in the list is being written out.
	lru *list.Element
}

func (e *entry) free() bool { return len(e.holders) == 0 && e.pins == 0 }

func (e *entry) sealed() bool { return e.meta != nil }

// Store is a concurrency-safe object table.
type Store struct {
	mu       sync.Mutex
	objects  map[ids.ObjectID]*entry
	used     int64 // bytes of values in memory
	capacity int64

	// Spilling (dir != ""); see spill.go.
	dir          string
	lru          *list.List // in-memory entries, least recently used first
	spilled      int        // values on disk
	spilledBytes int64
	inflight     int           // spill writes under way
	spillDone    chan struct{} // closed (and replaced) when a spill batch ends
	garbage      []string      // files to remove once mu is released
	closed       bool
	seq          atomic.Uint64 // spill file names
	stats        Stats         // cumulative counters
	removeErrors atomic.Int64
	hooks        testHooks
}

// New returns a store limited to capacity bytes of sealed values that never
// spills: a Put that does not fit fails with ErrFull.
func New(capacity int64) *Store {
	return &Store{objects: make(map[ids.ObjectID]*entry), capacity: capacity}
}

// Capacity is the configured size limit in bytes.
func (s *Store) Capacity() int64 { return s.capacity }

// Used is the number of bytes of sealed values held in memory (spilled
// values are not counted).
func (s *Store) Used() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.used
}

// Len is the number of objects (pending, in memory and spilled).
func (s *Store) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.objects)
}

// unlock releases mu, then removes the files that became garbage under it
// (unlinking a large file can take a while).
func (s *Store) unlock() {
	g := s.garbage
	s.garbage = nil
	s.mu.Unlock()
	for _, p := range g {
		s.removeFile(p)
	}
}

// Reserve checks that size more bytes would fit. A spilling store makes the
// room (spilling other values), or accepts a value larger than its capacity,
// which a Put would write straight to disk.
func (s *Store) Reserve(size int64) error {
	s.mu.Lock()
	defer s.unlock()
	if s.used+size <= s.capacity {
		return nil
	}
	if s.dir != "" && size > s.capacity && !s.closed {
		return nil
	}
	ok, err := s.makeRoomLocked(size)
	if !ok {
		return s.fullErr(fmt.Sprintf("%d bytes requested", size), err)
	}
	return nil
}

// fullErr is ErrFull, wrapping the spill error that left no room if any.
// Called with mu held.
func (s *Store) fullErr(what string, spillErr error) error {
	if spillErr != nil {
		return fmt.Errorf("%w: %s, %d of %d in use: %w", ErrFull, what, s.used, s.capacity, spillErr)
	}
	return fmt.Errorf("%w: %s, %d of %d in use", ErrFull, what, s.used, s.capacity)
}

// Create registers a pending object (a task return) held by holder.
func (s *Store) Create(id ids.ObjectID, holder string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entryLocked(id)
	if holder != "" {
		e.holders[holder]++
	}
}

// entryLocked returns id's entry, making a pending one if there is none.
func (s *Store) entryLocked(id ids.ObjectID) *entry {
	e, ok := s.objects[id]
	if !ok {
		e = &entry{ready: make(chan struct{}), holders: map[string]int{}}
		s.objects[id] = e
	}
	return e
}

func (s *Store) existsLocked(id ids.ObjectID) bool {
	e, ok := s.objects[id]
	return ok && e.sealed()
}

// Put stores a sealed object held by holder. A spilling store spills other
// values to make room, and writes a value larger than its whole capacity
// straight to disk; it fails with ErrFull only when that cannot be done.
// A failed Put takes no reference.
func (s *Store) Put(obj *Object, holder string) error {
	s.mu.Lock()
	defer s.unlock()
	if s.existsLocked(obj.ID) {
		return fmt.Errorf("%w: %s", ErrExists, obj.ID.Hex())
	}
	if s.used+obj.Size > s.capacity {
		if s.dir != "" && obj.Size > s.capacity && !s.closed {
			return s.putToDiskLocked(obj, holder)
		}
		ok, err := s.makeRoomLocked(obj.Size)
		// mu was released while spilling: look again.
		if s.existsLocked(obj.ID) {
			return fmt.Errorf("%w: %s", ErrExists, obj.ID.Hex())
		}
		if !ok {
			return s.fullErr(fmt.Sprintf("object of %d bytes", obj.Size), err)
		}
	}
	e := s.entryLocked(obj.ID)
	if holder != "" {
		e.holders[holder]++
	}
	s.sealLocked(e, obj)
	return nil
}

// Seal fills a pending object. A value whose object was already freed
// (nobody referenced it any more) is dropped and Seal reports false. A
// spilling store makes room as Put does; when it cannot (a disk error) the
// value is kept in memory beyond the capacity, as a store without spilling
// does.
func (s *Store) Seal(obj *Object) bool {
	s.mu.Lock()
	defer s.unlock()
	e, ok := s.objects[obj.ID]
	if !ok || e.sealed() {
		return false
	}
	if s.dir != "" && s.used+obj.Size > s.capacity && !s.closed {
		if obj.Size > s.capacity {
			return s.sealToDiskLocked(obj)
		}
		_, _ = s.makeRoomLocked(obj.Size)
		// mu was released while spilling: look again.
		if e, ok = s.objects[obj.ID]; !ok || e.sealed() {
			return false
		}
	}
	s.sealLocked(e, obj)
	return true
}

// sealLocked makes e an in-memory value.
func (s *Store) sealLocked(e *entry, obj *Object) {
	e.obj = obj
	e.meta = header(obj)
	s.used += obj.Size
	s.lruAddLocked(e)
	s.pinContainedLocked(e)
	close(e.ready)
}

// pinContainedLocked pins the refs e's value holds that the store has.
func (s *Store) pinContainedLocked(e *entry) {
	for _, c := range e.meta.Contained {
		if ce, ok := s.objects[c]; ok {
			ce.pins++
			e.pinned = append(e.pinned, c)
		}
	}
}

// Get returns the sealed object, or nil if pending; ErrNotFound if unknown.
// A spilled value is read back from disk (and kept in memory again when
// there is room for it; otherwise the caller gets an uncached copy); a
// failed read gives ErrRestore.
func (s *Store) Get(id ids.ObjectID) (*Object, error) {
	s.mu.Lock()
	e, ok := s.objects[id]
	if !ok {
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id.Hex())
	}
	if e.obj != nil || !e.sealed() {
		s.lruTouchLocked(e)
		o := e.obj
		s.mu.Unlock()
		return o, nil
	}
	return s.restore(e) // releases mu
}

// Ready reports whether the object is sealed (in memory or spilled) without
// reading a spilled value back.
func (s *Store) Ready(id ids.ObjectID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.objects[id]
	return ok && e.sealed()
}

// Size reports a sealed object's size without reading a spilled value
// back; ok is false for an unknown or pending object.
func (s *Store) Size(id ids.ObjectID) (int64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.objects[id]
	if !ok || !e.sealed() {
		return 0, false
	}
	return e.meta.Size, true
}

// ReadyChan returns a channel closed when the object is sealed, or freed
// while still pending (Get then reports ErrNotFound).
func (s *Store) ReadyChan(id ids.ObjectID) (<-chan struct{}, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.objects[id]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id.Hex())
	}
	return e.ready, nil
}

// Wait blocks until the object is sealed or ctx ends. An object that is
// already sealed is returned even if ctx has ended; one freed while pending
// gives ErrNotFound.
func (s *Store) Wait(ctx context.Context, id ids.ObjectID) (*Object, error) {
	ch, err := s.ReadyChan(id)
	if err != nil {
		return nil, err
	}
	select {
	case <-ch:
		return s.Get(id)
	case <-ctx.Done():
		// select picks at random when both are ready; a sealed value wins.
		select {
		case <-ch:
			return s.Get(id)
		default:
		}
		return nil, ctx.Err()
	}
}

// Contains reports whether the id is known (pending or sealed).
func (s *Store) Contains(id ids.ObjectID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.objects[id]
	return ok
}

// Hold adds a reference from holder; false if the object is unknown.
func (s *Store) Hold(id ids.ObjectID, holder string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.objects[id]
	if !ok {
		return false
	}
	e.holders[holder]++
	return true
}

// HoldOnce adds holder's reference unless it already holds one.
func (s *Store) HoldOnce(id ids.ObjectID, holder string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.objects[id]
	if !ok {
		return false
	}
	if e.holders[holder] == 0 {
		e.holders[holder] = 1
	}
	return true
}

// Release drops all of holder's references to id (the client refcounts
// locally and releases once).
func (s *Store) Release(id ids.ObjectID, holder string) bool {
	s.mu.Lock()
	defer s.unlock()
	e, ok := s.objects[id]
	if !ok || e.holders[holder] == 0 {
		return false
	}
	delete(e.holders, holder)
	s.maybeFreeLocked(id, e)
	return true
}

// ReleaseAll drops every reference of holder (session end).
func (s *Store) ReleaseAll(holder string) int {
	s.mu.Lock()
	defer s.unlock()
	n := 0
	for id, e := range s.objects {
		if _, ok := e.holders[holder]; ok {
			delete(e.holders, holder)
			n++
			s.maybeFreeLocked(id, e)
		}
	}
	return n
}

// Pin keeps objects alive (arguments of queued or running tasks).
func (s *Store) Pin(list []ids.ObjectID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range list {
		if e, ok := s.objects[id]; ok {
			e.pins++
		}
	}
}

// Unpin undoes Pin.
func (s *Store) Unpin(list []ids.ObjectID) {
	s.mu.Lock()
	defer s.unlock()
	for _, id := range list {
		if e, ok := s.objects[id]; ok && e.pins > 0 {
			e.pins--
			s.maybeFreeLocked(id, e)
		}
	}
}

func (s *Store) maybeFreeLocked(id ids.ObjectID, e *entry) {
	if !e.free() {
		return
	}
	delete(s.objects, id)
	if !e.sealed() {
		// Wake waiters of a pending object nobody references any more; a
		// later Seal finds no entry and drops the value.
		close(e.ready)
		return
	}
	if e.obj == nil {
		// Spilled: the file goes once mu is released. A restore or a spill
		// write under way notices that the entry is gone.
		s.spilled--
		s.spilledBytes -= e.meta.Size
		s.garbage = append(s.garbage, e.file)
		e.file, e.lens = "", nil
	} else {
		s.used -= e.meta.Size
		s.lruRemoveLocked(e)
	}
	for _, c := range e.pinned {
		if ce, ok := s.objects[c]; ok && ce.pins > 0 {
			ce.pins--
			s.maybeFreeLocked(c, ce)
		}
	}
}

// Package objectstore holds a node's objects: pickled values kept as the chunks
// they arrived in (never concatenated), with reference tracking by holder
// (client sessions, workers), pins (arguments of running tasks) and containment
// (an object that holds refs keeps them alive), as Ray's reference counting does.
package objectstore

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/gray-cluster/gray/internal/ids"
)

// Sentinel errors.
var (
	ErrNotFound = errors.New("object not found")
	ErrFull     = errors.New("object store full")
	ErrExists   = errors.New("object already exists")
)

// Object is a sealed value.
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

type entry struct {
	obj     *Object
	ready   chan struct{}
	holders map[string]int
	pins    int
	// pinned are the contained objects this one pinned when it was sealed
	// (those present then); freeing it unpins exactly these.
	pinned []ids.ObjectID
}

func (e *entry) free() bool { return len(e.holders) == 0 && e.pins == 0 }

// Store is a concurrency-safe in-memory object table.
type Store struct {
	mu       sync.Mutex
	objects  map[ids.ObjectID]*entry
	used     int64
	capacity int64
}

// New returns a store limited to capacity bytes of sealed values.
func New(capacity int64) *Store {
	return &Store{objects: make(map[ids.ObjectID]*entry), capacity: capacity}
}

// Capacity is the configured size limit in bytes.
func (s *Store) Capacity() int64 { return s.capacity }

// Used is the number of bytes of sealed values held.
func (s *Store) Used() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.used
}

// Len is the number of objects (pending and sealed).
func (s *Store) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.objects)
}

// Reserve checks that size more bytes would fit.
func (s *Store) Reserve(size int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.used+size > s.capacity {
		return fmt.Errorf("%w: %d bytes requested, %d of %d in use", ErrFull, size, s.used, s.capacity)
	}
	return nil
}

// Create registers a pending object (a task return) held by holder.
func (s *Store) Create(id ids.ObjectID, holder string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.objects[id]
	if !ok {
		e = &entry{ready: make(chan struct{}), holders: map[string]int{}}
		s.objects[id] = e
	}
	if holder != "" {
		e.holders[holder]++
	}
}

// Put stores a sealed object held by holder.
func (s *Store) Put(obj *Object, holder string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.used+obj.Size > s.capacity {
		return fmt.Errorf("%w: object of %d bytes, %d of %d in use", ErrFull, obj.Size, s.used, s.capacity)
	}
	if e, ok := s.objects[obj.ID]; ok && e.obj != nil {
		return fmt.Errorf("%w: %s", ErrExists, obj.ID.Hex())
	}
	e, ok := s.objects[obj.ID]
	if !ok {
		e = &entry{ready: make(chan struct{}), holders: map[string]int{}}
		s.objects[obj.ID] = e
	}
	if holder != "" {
		e.holders[holder]++
	}
	s.sealLocked(e, obj)
	return nil
}

// Seal fills a pending object. A value whose object was already freed
// (nobody referenced it any more) is dropped and Seal reports false.
func (s *Store) Seal(obj *Object) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.objects[obj.ID]
	if !ok || e.obj != nil {
		return false
	}
	s.sealLocked(e, obj)
	return true
}

func (s *Store) sealLocked(e *entry, obj *Object) {
	e.obj = obj
	s.used += obj.Size
	for _, c := range obj.Contained {
		if ce, ok := s.objects[c]; ok {
			ce.pins++
			e.pinned = append(e.pinned, c)
		}
	}
	close(e.ready)
}

// Get returns the sealed object, or nil if pending; ErrNotFound if unknown.
func (s *Store) Get(id ids.ObjectID) (*Object, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.objects[id]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id.Hex())
	}
	return e.obj, nil
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
	defer s.mu.Unlock()
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
	defer s.mu.Unlock()
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
	defer s.mu.Unlock()
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
	if e.obj == nil {
		// Wake waiters of a pending object nobody references any more; a
		// later Seal finds no entry and drops the value.
		close(e.ready)
		return
	}
	s.used -= e.obj.Size
	for _, c := range e.pinned {
		if ce, ok := s.objects[c]; ok && ce.pins > 0 {
			ce.pins--
			s.maybeFreeLocked(c, ce)
		}
	}
}

// Package plasma is gray's plasma object store: the shared-memory store a
// stock Ray 2.60.0 core worker talks to over the unix socket named in
// GcsNodeInfo.object_store_socket_name. The wire protocol (24-byte ipcframe
// headers around plasma.flatbuf flatbuffers, one shared segment fd passed
// once per connection with SCM_RIGHTS) is served byte-compatibly, and the
// raylet uses the same store in process through Contains/Pin/Put/Read and
// friends.
//
// Memory is one segment (a memfd, or an unlinked file in Config.ShmDir) of
// Config.Capacity bytes, carved by a best-fit allocator into 64-byte
// aligned ranges. When a create does not fit, unpinned sealed objects no
// client holds are evicted in LRU order, then pinned ones no client holds
// are spilled to Config.SpillDir (and restored transparently on Get); if
// that is still not enough the client is told to retry, and after
// Config.OOMGrace without success it gets OutOfMemory.
package plasma

import (
	"container/list"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"
)

// ObjectID is a Ray object id (28 bytes).
type ObjectID [28]byte

func (id ObjectID) String() string { return hex.EncodeToString(id[:]) }

// Owner is the owner address a PlasmaCreateRequest carries.
type Owner struct {
	NodeID, WorkerID []byte
	IP               string
	Port             int32
}

// EventKind says what happened to an object.
type EventKind int

const (
	// Sealed: the object became readable.
	Sealed EventKind = iota + 1
	// Deleted: the object is gone (deleted, evicted, or its store closed).
	Deleted
	// Spilled: the object's bytes moved from memory to Config.SpillDir; it
	// is still Contained and readable.
	Spilled
)

func (k EventKind) String() string {
	switch k {
	case Sealed:
		return "sealed"
	case Deleted:
		return "deleted"
	case Spilled:
		return "spilled"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event is one change to an object, delivered to Subscribe callbacks in the
// order the changes happened.
type Event struct {
	ID    ObjectID
	Kind  EventKind
	Size  int64 // data + metadata bytes
	Owner Owner
}

// Usage is a snapshot of the store's occupancy.
type Usage struct {
	Used         int64 // bytes of shared memory allocated to objects
	Capacity     int64
	Objects      int64 // objects in memory (sealed or not)
	Spilled      int64 // objects whose bytes are on disk only
	SpilledBytes int64
	Pinned       int64
	Evictions    int64 // objects evicted since start
	Spills       int64 // spill operations since start
	Restores     int64 // restores since start
	Clients      int64
}

// Config configures a Store.
type Config struct {
	SocketPath string // unix socket to serve (path <= 107 bytes)
	Capacity   int64  // bytes of shared memory (object_store_memory)
	ShmDir     string // "" = memfd_create; else a dir for an unlinked file (e.g. /dev/shm)
	SpillDir   string // where pinned primary copies go when memory is full ("" = no spilling)
	Logger     *slog.Logger
	// OOMGrace is how long a create may wait for space (the client polling
	// with PlasmaCreateRetryRequest) before it gets OutOfMemory; 0 = 3 s.
	OOMGrace time.Duration
	// ReleaseFreedPages gives the pages of freed objects of 1 MiB or more
	// back to the kernel. Off (as in stock Ray's store) freed memory stays
	// committed up to the high-water mark and the next object reuses it
	// without page faults: puts of large objects run about twice as fast.
	ReleaseFreedPages bool
}

var (
	// ErrClosed is an operation on a closed store.
	ErrClosed = errors.New("plasma: store closed")
	// ErrObjectExists is a Put of an id the store already has.
	ErrObjectExists = errors.New("plasma: object already exists")
	// ErrOutOfMemory is an object that does not fit even after eviction
	// and spilling.
	ErrOutOfMemory = errors.New("plasma: object does not fit in the store")
	// ErrConfig is an unusable Config.
	ErrConfig = errors.New("plasma: bad config")
)

const defaultOOMGrace = 3 * time.Second

// pageSize rounds the segment, which clients map whole.
const pageSize = 4096

// Store is a plasma store.
type Store struct {
	cfg Config
	log *slog.Logger

	mu  sync.Mutex
	seg *segment
	// segMu is held for reading while Go code copies to or from the
	// mapping outside mu (Reader, Writer); Close takes it to unmap.
	segMu     sync.RWMutex
	segClosed bool // under segMu
	alloc     *allocator
	objects   map[ObjectID]*object
	evictable *list.List // sealed, in memory, unheld, unpinned; front = most recent
	spillable *list.List // sealed, in memory, unheld, pinned (only with SpillDir)
	used      int64
	sealed    chan struct{} // closed and replaced whenever an object is sealed
	spillDone chan struct{} // closed and replaced whenever a spill ends
	// spillInFlight is the memory that spills in flight will free.
	spillInFlight int64
	spillSeq      uint64
	conns         map[*conn]struct{}
	closed        bool
	nextReq       uint64
	stats         Usage
	events        *dispatcher

	spillHook func(ObjectID) // tests: runs before a spill's write

	ln     net.Listener
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New allocates the shared segment. Serving starts with Start.
func New(cfg Config) (*Store, error) {
	if cfg.Capacity <= 0 {
		return nil, fmt.Errorf("%w: capacity %d", ErrConfig, cfg.Capacity)
	}
	if len(cfg.SocketPath) > 107 {
		return nil, fmt.Errorf("%w: socket path longer than 107 bytes", ErrConfig)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.OOMGrace <= 0 {
		cfg.OOMGrace = defaultOOMGrace
	}
	if cfg.SpillDir != "" {
		if err := os.MkdirAll(cfg.SpillDir, 0o755); err != nil {
			return nil, fmt.Errorf("plasma: spill dir: %w", err)
		}
	}
	size := alignUp(cfg.Capacity)
	seg, err := newSegment((size+pageSize-1)/pageSize*pageSize, cfg.ShmDir)
	if err != nil {
		return nil, err
	}
	s := &Store{
		cfg:       cfg,
		log:       cfg.Logger.With("component", "plasma"),
		seg:       seg,
		alloc:     newAllocator(size),
		objects:   map[ObjectID]*object{},
		evictable: list.New(),
		spillable: list.New(),
		sealed:    make(chan struct{}),
		spillDone: make(chan struct{}),
		conns:     map[*conn]struct{}{},
		events:    newDispatcher(),
	}
	s.stats.Capacity = cfg.Capacity
	return s, nil
}

// Start listens on Config.SocketPath and serves clients in the background
// until Close (or until ctx ends).
func (s *Store) Start(ctx context.Context) error {
	if s.cfg.SocketPath == "" {
		return fmt.Errorf("%w: no socket path", ErrConfig)
	}
	removeStaleSocket(s.cfg.SocketPath)
	ln, err := net.Listen("unix", s.cfg.SocketPath)
	if err != nil {
		return fmt.Errorf("plasma: listen: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		cancel()
		ln.Close()
		return ErrClosed
	}
	s.ln, s.cancel = ln, cancel
	s.mu.Unlock()
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		<-ctx.Done()
		ln.Close()
	}()
	go func() {
		defer s.wg.Done()
		s.acceptLoop(ctx, ln)
	}()
	s.log.Info("plasma store serving", "socket", s.cfg.SocketPath, "capacity", s.cfg.Capacity)
	return nil
}

// removeStaleSocket removes a socket file nobody answers on (left by a
// previous process), so that Listen can bind the path again.
func removeStaleSocket(path string) {
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode()&os.ModeSocket == 0 {
		return
	}
	if c, err := net.DialTimeout("unix", path, 200*time.Millisecond); err == nil {
		c.Close()
		return
	}
	os.Remove(path)
}

func (s *Store) acceptLoop(ctx context.Context, ln net.Listener) {
	for {
		nc, err := ln.Accept()
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				s.log.Warn("plasma accept failed", "err", err)
			}
			return
		}
		c := newConn(s, ctx, nc.(*net.UnixConn))
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			nc.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			c.serve()
		}()
	}
}

// Close stops serving, disconnects every client, removes spill files and
// frees the shared memory. Clients that still map the segment keep their
// mapping; the memory goes when the last one unmaps.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	cancel, ln := s.cancel, s.ln
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	close(s.sealed) // wake in-process waiters; they see closed
	s.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	if ln != nil {
		ln.Close()
	}
	for _, c := range conns {
		c.nc.Close()
	}
	s.wg.Wait()
	s.mu.Lock()
	for _, o := range s.objects {
		if o.spillPath != "" {
			os.Remove(o.spillPath)
		}
	}
	s.objects = map[ObjectID]*object{}
	s.mu.Unlock()
	s.segMu.Lock()
	s.segClosed = true
	err := s.seg.close()
	s.segMu.Unlock()
	s.events.close()
	if s.cfg.SocketPath != "" && ln != nil {
		os.Remove(s.cfg.SocketPath)
	}
	return err
}

// Capacity is Config.Capacity.
func (s *Store) Capacity() int64 { return s.cfg.Capacity }

// Usage reports occupancy.
func (s *Store) Usage() Usage {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.stats
	u.Used = s.used
	u.Clients = int64(len(s.conns))
	return u
}

// Subscribe calls fn for every later event, in order, from one goroutine
// (fn must not block for long, and must not call cancel from inside fn).
// cancel stops the calls; after it returns fn is not running.
func (s *Store) Subscribe(fn func(Event)) (cancel func()) {
	return s.events.subscribe(fn)
}

// WaitSealed returns once n of ids are sealed (in memory or spilled), or
// when ctx ends or the store closes; it returns the sealed ones in the
// order of ids.
func (s *Store) WaitSealed(ctx context.Context, ids []ObjectID, n int) []ObjectID {
	if n > len(ids) {
		n = len(ids)
	}
	for {
		s.mu.Lock()
		var got []ObjectID
		for _, id := range ids {
			if o := s.objects[id]; o != nil && o.isSealed && !o.deleted {
				got = append(got, id)
			}
		}
		wake, closed := s.sealed, s.closed
		s.mu.Unlock()
		if len(got) >= n || closed {
			return got
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return got
		}
	}
}

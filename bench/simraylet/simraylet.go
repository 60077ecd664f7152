// Package simraylet simulates many lightweight provider raylets in one
// process, for scale benchmarks of a gray head's control plane.
//
// Each simulated node does what a real provider (package provider) does on
// the wire, without a raylet or Python workers: it joins the pool with the
// join token (its own P-256 key, so its own node certificate), dials the
// head over its own mutual-TLS QUIC transport, opens the control channel and
// registers its resources, sends heartbeats, and "runs" every task the head
// submits at once by pushing each of its return objects as the pickle of
// Python None, followed by an Available update. It reconnects, like a real
// provider, when its control channel breaks.
package simraylet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gray-cluster/gray/provider"
)

// RegionLabel is Ray's node label for a node's region.
const RegionLabel = "ray.io/availability-region"

// NonePickle is Python None pickled with protocol 5: what every simulated
// task returns.
var NonePickle = []byte{0x80, 0x05, 'N', '.'}

// Config configures a fleet of simulated nodes.
type Config struct {
	// HeadAddr is the head's node (QUIC) address, host:port.
	HeadAddr string
	// Token is the pool's join token, SECRET.CA_SHA256_HEX.
	Token string
	// N is how many nodes to simulate.
	N int
	// CPUsPerNode is each node's "CPU" resource (default 1).
	CPUsPerNode float64
	// MemoryPerNode and ObjectStorePerNode are each node's "memory" and
	// "object_store_memory" resources in bytes (defaults 4 GiB and 1 GiB).
	MemoryPerNode      float64
	ObjectStorePerNode float64
	// Heartbeat is how often an idle node speaks (default 1 s).
	Heartbeat time.Duration
	// JoinConcurrency bounds how many nodes join and register at once
	// (default 32); the rest wait their turn.
	JoinConcurrency int
	// Regions label node i with Regions[i % len(Regions)] (default "sim").
	Regions []string
	// Hostname prefixes the nodes' host names (default "sim"): node i is
	// PREFIX-00000i.
	Hostname string
	// Logger gets the fleet's events; per-node errors go at Debug level
	// (they are counted in Stats). Default slog.Default().
	Logger *slog.Logger
}

func (c *Config) defaults() error {
	if c.HeadAddr == "" {
		return errors.New("simraylet: head address is required")
	}
	if _, _, err := provider.ParseToken(c.Token); err != nil {
		return err
	}
	if c.N < 0 {
		return fmt.Errorf("simraylet: N must not be negative, got %d", c.N)
	}
	if c.CPUsPerNode <= 0 {
		c.CPUsPerNode = 1
	}
	if c.MemoryPerNode <= 0 {
		c.MemoryPerNode = 4 << 30
	}
	if c.ObjectStorePerNode <= 0 {
		c.ObjectStorePerNode = 1 << 30
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = time.Second
	}
	if c.JoinConcurrency <= 0 {
		c.JoinConcurrency = 32
	}
	if len(c.Regions) == 0 {
		c.Regions = []string{"sim"}
	}
	if c.Hostname == "" {
		c.Hostname = "sim"
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// Stats are the fleet's counters.
type Stats struct {
	// Joined counts nodes holding a certificate; Registered nodes the head
	// has answered Register for at least once; Connected nodes whose
	// control channel is up now.
	Joined, Registered, Connected int64
	// Sessions counts control channels opened (more than Registered means
	// reconnects).
	Sessions int64
	// TasksRun counts tasks whose results were all pushed; Pushes the
	// objects pushed; Submits the Submit commands received.
	Submits, TasksRun, Pushes int64
	// Heartbeats and AvailableUpdates count those messages sent.
	Heartbeats, AvailableUpdates int64
	// Unsupported counts commands a simulated node cannot carry out
	// (actors); Errors every failed join, dial, send or push.
	Unsupported, Errors int64
	// LastError is the text of the latest error, "" if none.
	LastError string
}

func (s Stats) String() string {
	out := fmt.Sprintf("joined=%d registered=%d connected=%d sessions=%d submits=%d tasks=%d pushes=%d heartbeats=%d available=%d unsupported=%d errors=%d",
		s.Joined, s.Registered, s.Connected, s.Sessions, s.Submits, s.TasksRun, s.Pushes, s.Heartbeats, s.AvailableUpdates, s.Unsupported, s.Errors)
	if s.LastError != "" {
		out += fmt.Sprintf(" last_error=%q", s.LastError)
	}
	return out
}

// counters are the live, atomically updated Stats.
type counters struct {
	joined, registered, connected, sessions          atomic.Int64
	submits, tasksRun, pushes, heartbeats, available atomic.Int64
	unsupported, errors                              atomic.Int64
	lastError                                        atomic.Pointer[string]
}

// Fleet is a set of simulated nodes.
type Fleet struct {
	cfg Config
	log *slog.Logger
	c   counters

	joinSem    chan struct{}
	registered chan struct{} // closed once all N registered
	regOnce    sync.Once
}

// New validates the configuration and returns an idle fleet.
func New(cfg Config) (*Fleet, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	f := &Fleet{
		cfg: cfg, log: cfg.Logger.With("component", "simraylet"),
		joinSem: make(chan struct{}, cfg.JoinConcurrency), registered: make(chan struct{}),
	}
	if cfg.N == 0 {
		f.regOnce.Do(func() { close(f.registered) })
	}
	return f, nil
}

// Run starts N simulated nodes and keeps them until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	f, err := New(cfg)
	if err != nil {
		return err
	}
	return f.Run(ctx)
}

// Run runs the fleet until ctx ends, then closes every node's connection
// (the head sees them disconnect) and returns ctx's error.
func (f *Fleet) Run(ctx context.Context) error {
	f.log.Info("starting simulated nodes", "n", f.cfg.N, "head", f.cfg.HeadAddr,
		"cpus", f.cfg.CPUsPerNode, "heartbeat", f.cfg.Heartbeat, "join_concurrency", f.cfg.JoinConcurrency)
	var wg sync.WaitGroup
	for i := range f.cfg.N {
		n := newNode(f, i)
		wg.Go(func() { n.run(ctx) })
	}
	<-ctx.Done()
	wg.Wait()
	return ctx.Err()
}

// Registered is closed once every node has registered with the head.
func (f *Fleet) Registered() <-chan struct{} { return f.registered }

// Stats returns the fleet's counters now.
func (f *Fleet) Stats() Stats {
	s := Stats{
		Joined: f.c.joined.Load(), Registered: f.c.registered.Load(), Connected: f.c.connected.Load(),
		Sessions: f.c.sessions.Load(), Submits: f.c.submits.Load(), TasksRun: f.c.tasksRun.Load(),
		Pushes: f.c.pushes.Load(), Heartbeats: f.c.heartbeats.Load(), AvailableUpdates: f.c.available.Load(),
		Unsupported: f.c.unsupported.Load(), Errors: f.c.errors.Load(),
	}
	if p := f.c.lastError.Load(); p != nil {
		s.LastError = *p
	}
	return s
}

// fail counts an error of node i.
func (f *Fleet) fail(i int, what string, err error) {
	f.c.errors.Add(1)
	msg := fmt.Sprintf("node %d: %s: %v", i, what, err)
	f.c.lastError.Store(&msg)
	f.log.Debug("simulated node error", "node", i, "what", what, "err", err)
}

// nodeRegistered counts a node's first registration.
func (f *Fleet) nodeRegistered() {
	if f.c.registered.Add(1) == int64(f.cfg.N) {
		f.regOnce.Do(func() { close(f.registered) })
		f.log.Info("all simulated nodes registered", "n", f.cfg.N)
	}
}

// backoff waits before another try; false when ctx ended first.
func backoff(ctx context.Context, attempt int) bool {
	d := min(time.Duration(1<<min(attempt, 6))*100*time.Millisecond, 5*time.Second)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

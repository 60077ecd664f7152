package membership

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// Membership is one node's view of the cluster. Create it with New, then
// Start it; all methods are safe for concurrent use.
type Membership struct {
	cfg   Config
	log   *slog.Logger
	clock Clock
	hooks *hooks
	q     *eventQueue

	// Set by Start.
	mc     *memberlist.Config
	ml     *memberlist.Memberlist
	cancel context.CancelFunc
	wg     sync.WaitGroup // monitor and ctx watcher

	metaMu   sync.Mutex
	meta     Meta
	metaWire []byte // encoded meta (+ leaving flag), served to NodeMeta
	leaving  bool

	mu      sync.Mutex // guards the fields below and every *peer
	started bool
	closed  bool
	peers   map[string]*peer

	pingHook func(name string, rtt time.Duration) // tests: observes probe acks (set under mu)
}

// New validates cfg and prepares a Membership; nothing is bound until Start.
func New(cfg Config) (*Membership, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	wire, err := encodeMeta(cfg.Meta, false)
	if err != nil {
		return nil, err
	}
	m := &Membership{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "membership", "node", cfg.Name),
		clock:    cfg.Clock,
		q:        newEventQueue(),
		meta:     cfg.Meta,
		metaWire: wire,
		peers:    map[string]*peer{},
	}
	m.hooks = &hooks{m: m}
	mc, err := cfg.memberlistConfig(m.hooks, m.log)
	if err != nil {
		return nil, err
	}
	m.mc = mc
	return m, nil
}

// Start binds the gossip listeners and starts the background loops. ctx
// bounds the membership's lifetime: cancelling it is equivalent to Close (no
// graceful Leave).
func (m *Membership) Start(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	switch {
	case m.closed:
		m.mu.Unlock()
		return ErrClosed
	case m.started:
		m.mu.Unlock()
		return ErrAlreadyStarted
	}
	m.started = true
	m.mu.Unlock()

	go m.q.run(m.cfg.OnEvent)
	ml, err := memberlist.Create(m.mc)
	if err != nil {
		m.q.close()
		m.mu.Lock()
		m.closed = true
		m.mu.Unlock()
		return fmt.Errorf("membership: start memberlist on %s:%d: %w", m.cfg.BindAddr, m.cfg.BindPort, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	m.mu.Lock()
	m.ml, m.cancel = ml, cancel
	closed := m.closed
	m.mu.Unlock()
	if closed { // Close raced with Start
		cancel()
		_ = ml.Shutdown()
		return ErrClosed
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		m.monitor(ctx)
	}()
	go func() {
		<-ctx.Done()
		_ = m.Close()
	}()
	m.log.Info("membership started", "addr", m.Addr(), "profile", m.cfg.Profile.String(),
		"role", m.cfg.Meta.Role, "dead_after", m.cfg.DeadAfter)
	return nil
}

// memberlist returns the running memberlist, or an error when not running.
func (m *Membership) memberlist() (*memberlist.Memberlist, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case m.closed:
		return nil, ErrClosed
	case m.ml == nil:
		return nil, ErrNotStarted
	}
	return m.ml, nil
}

// Addr returns the local gossip address (host:port) peers should Join, or ""
// before Start.
func (m *Membership) Addr() string {
	ml, err := m.memberlist()
	if err != nil {
		return ""
	}
	return ml.LocalNode().Address()
}

// Name returns the local node name.
func (m *Membership) Name() string { return m.cfg.Name }

// Join contacts the given gossip addresses ("host:port"; the port defaults
// to 7946) and merges state with them. It returns how many were contacted;
// the error, wrapping ErrJoin, is set only if none could be (a peer with a
// different SecretKey cannot be contacted).
func (m *Membership) Join(addrs []string) (int, error) {
	ml, err := m.memberlist()
	if err != nil {
		return 0, err
	}
	if len(addrs) == 0 {
		return 0, fmt.Errorf("%w: no addresses", ErrJoin)
	}
	n, err := ml.Join(addrs)
	if err != nil && n == 0 {
		return 0, fmt.Errorf("%w: %s: %w", ErrJoin, strings.Join(addrs, ","), err)
	}
	if err != nil {
		m.log.Warn("join partially failed", "contacted", n, "err", err)
	}
	return n, nil
}

// Local returns the local member.
func (m *Membership) Local() Member {
	addr := m.Addr()
	m.metaMu.Lock()
	meta := m.meta.Clone()
	m.metaMu.Unlock()
	return Member{Name: m.cfg.Name, Meta: meta, Addr: addr, State: StateAlive, Local: true}
}

// Members returns the local member and every Alive or Suspect peer, sorted
// by name. Dead and Left peers are reported by events and then dropped.
func (m *Membership) Members() []Member {
	out := []Member{m.Local()}
	m.mu.Lock()
	for _, p := range m.peers {
		out = append(out, p.snapshot())
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Member returns the named peer (or the local member) if it is Alive or
// Suspect.
func (m *Membership) Member(name string) (Member, bool) {
	if name == m.cfg.Name {
		return m.Local(), true
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	p, ok := m.peers[name]
	if !ok {
		return Member{}, false
	}
	return p.snapshot(), true
}

// UpdateMeta replaces the local metadata and gossips it (memberlist
// UpdateNode), waiting up to Config.BroadcastTimeout for the broadcast. On
// ErrBroadcastTimeout the new metadata is in effect locally and still
// spreads through anti-entropy. Meta.NodeID defaults to the current one and
// cannot change.
func (m *Membership) UpdateMeta(meta Meta) error {
	meta = meta.Clone()
	m.metaMu.Lock()
	if meta.NodeID == "" {
		meta.NodeID = m.meta.NodeID
	}
	if meta.NodeID != m.meta.NodeID {
		m.metaMu.Unlock()
		return fmt.Errorf("%w: NodeID cannot change (%q → %q)", ErrInvalidMeta, m.meta.NodeID, meta.NodeID)
	}
	m.metaMu.Unlock()
	if err := meta.validate(); err != nil {
		return err
	}
	ml, err := m.memberlist()
	if err != nil {
		return err
	}
	wire, err := encodeMeta(meta, false)
	if err != nil {
		return err
	}
	m.metaMu.Lock()
	if m.leaving {
		m.metaMu.Unlock()
		return ErrLeft
	}
	m.meta, m.metaWire = meta, wire
	m.metaMu.Unlock()
	if err := ml.UpdateNode(m.cfg.BroadcastTimeout); err != nil {
		return fmt.Errorf("%w: update meta: %w", ErrBroadcastTimeout, err)
	}
	return nil
}

// Leave announces a graceful departure so peers report Left rather than
// Suspect/Dead, waiting up to timeout. The node keeps answering gossip until
// Close. Leave first re-advertises the metadata with the hidden leaving flag
// (half the timeout), then broadcasts memberlist's leave.
func (m *Membership) Leave(timeout time.Duration) error {
	ml, err := m.memberlist()
	if err != nil {
		return err
	}
	if timeout <= 0 {
		timeout = m.cfg.BroadcastTimeout
	}
	deadline := time.Now().Add(timeout)
	m.metaMu.Lock()
	already := m.leaving
	if !already {
		wire, err := encodeMeta(m.meta, true)
		if err != nil {
			m.metaMu.Unlock()
			return err
		}
		m.leaving, m.metaWire = true, wire
	}
	m.metaMu.Unlock()
	if !already {
		if err := ml.UpdateNode(timeout / 2); err != nil {
			// Peers that missed the flag fall back to Suspect → Dead.
			m.log.Warn("leave: leaving flag not fully broadcast", "err", err)
		}
	}
	rest := time.Until(deadline)
	if rest < 10*time.Millisecond {
		rest = 10 * time.Millisecond
	}
	if err := ml.Leave(rest); err != nil {
		return fmt.Errorf("%w: leave: %w", ErrBroadcastTimeout, err)
	}
	m.log.Info("left the cluster")
	return nil
}

// Close stops gossip without a Leave (peers will see the node fail), stops
// the timers and delivers the events already queued. It is idempotent.
func (m *Membership) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	started := m.started
	ml, cancel := m.ml, m.cancel
	for _, p := range m.peers {
		p.stopTimer()
	}
	m.mu.Unlock()

	if cancel != nil {
		cancel()
	}
	var err error
	if ml != nil {
		if err = ml.Shutdown(); err != nil {
			err = fmt.Errorf("membership: shutdown: %w", err)
		}
	}
	m.wg.Wait()
	m.q.close()
	if started {
		<-m.q.done
	}
	return err
}

// flush waits until every event emitted so far has been delivered.
func (m *Membership) flush(ctx context.Context) error {
	select {
	case <-m.q.flush():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

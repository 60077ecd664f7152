package tunnel

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/gray-cluster/gray/transport"
)

// Defaults for HubConfig and AgentConfig.
const (
	DefaultHeaderTimeout = 10 * time.Second
	DefaultOpenTimeout   = 10 * time.Second
	DefaultDialTimeout   = 10 * time.Second
	DefaultPingInterval  = 15 * time.Second
)

// HubConfig configures a Hub.
type HubConfig struct {
	// Resolve maps a target's host to the node that owns it: a provider's
	// node id (its certificate's CommonName) for its virtual IP, or "" for
	// the head itself (the head's own IPs), which the hub dials directly.
	// ok false: no route. Required.
	Resolve func(host string) (nodeID string, ok bool)
	// Allow, if set, vets every tunnel stream's peer by node id; refused
	// peers get ErrRefused. Peers without a certificate are always refused.
	Allow func(nodeID string) bool
	// AllowTarget, if set, vets every dial a provider asks for (from is its
	// node id, target "ip:port"): the head decides which of its own ports
	// and which of the other providers' ports a provider may reach.
	// Refused dials get ErrRefused. The head's own Dial is not vetted.
	AllowTarget func(from, target string) bool
	// DialLocal dials the head's own targets. Default: a net.Dialer.
	DialLocal func(ctx context.Context, network, addr string) (net.Conn, error)
	// Peer, if set, names where the provider owning a host takes direct
	// tunnel streams from other providers (its node id and peer address);
	// ok false: it takes none. Agents ask (resolve) before a dial, for
	// targets AllowTarget lets them reach.
	Peer func(host string) (nodeID, peerAddr string, ok bool)
	// HeaderTimeout bounds reading a stream's header or status and writing
	// a record. Default DefaultHeaderTimeout.
	HeaderTimeout time.Duration
	// OpenTimeout bounds the wait for a provider's back stream after an
	// open record. Default DefaultOpenTimeout.
	OpenTimeout time.Duration
	// DialTimeout bounds a local TCP dial. Default DefaultDialTimeout.
	DialTimeout time.Duration
	// PingInterval is how often an idle listen stream gets a ping record;
	// agents give up on a listen stream silent for AgentConfig.IdleTimeout.
	// Default DefaultPingInterval.
	PingInterval time.Duration
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Hub is the head's end of the tunnels: it serves tunnel streams (Handle)
// and dials targets for the head's own code (Dial).
type Hub struct {
	cfg    HubConfig
	log    *slog.Logger
	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // Handle calls and their goroutines
	conns  connSet        // every stream and TCP conn the hub holds

	mu sync.Mutex
	// guarded by mu:
	closed   bool
	sessions map[string]*session // by node id: its current listen stream
	pending  map[uint64]*pendingOpen
	nextID   uint64
}

// session is one provider's listen stream.
type session struct {
	node    string
	conn    net.Conn
	timeout time.Duration
	wmu     sync.Mutex    // serialises records
	done    chan struct{} // closed when the stream has ended
}

func (s *session) send(h header) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	_ = s.conn.SetWriteDeadline(time.Now().Add(s.timeout))
	defer s.conn.SetWriteDeadline(time.Time{})
	_, err := s.conn.Write(h.frame())
	return err
}

// pendingOpen is an open record waiting for its back stream.
type pendingOpen struct {
	node string
	ch   chan backResult // buffered: the one result
}

type backResult struct {
	conn net.Conn
	err  error
}

// NewHub returns a hub; feed it streams with Handle (see Mux).
func NewHub(cfg HubConfig) *Hub {
	if cfg.HeaderTimeout <= 0 {
		cfg.HeaderTimeout = DefaultHeaderTimeout
	}
	if cfg.OpenTimeout <= 0 {
		cfg.OpenTimeout = DefaultOpenTimeout
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.PingInterval <= 0 {
		cfg.PingInterval = DefaultPingInterval
	}
	if cfg.DialLocal == nil {
		cfg.DialLocal = (&net.Dialer{}).DialContext
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Hub{
		cfg: cfg, log: cfg.Logger, ctx: ctx, cancel: cancel,
		sessions: make(map[string]*session), pending: make(map[uint64]*pendingOpen),
	}
}

// enter counts a Handle call in, unless the hub is closed.
func (h *Hub) enter() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	h.wg.Add(1)
	return true
}

// Handle serves one tunnel stream (which starts with Magic) until it ends;
// c must come from a transport (its peer's node id names the provider).
// It closes c. Streams that are not tunnel streams are answered with
// ErrBadRequest and closed.
func (h *Hub) Handle(c net.Conn) {
	if !h.enter() {
		_ = c.Close()
		return
	}
	defer h.wg.Done()
	if !h.conns.add(c) {
		return
	}
	owned := true
	defer func() {
		if owned {
			_ = c.Close()
			h.conns.remove(c)
		}
	}()
	_ = c.SetDeadline(time.Now().Add(h.cfg.HeaderTimeout))
	hdr, err := readStreamHeader(c)
	if err != nil {
		h.log.Debug("tunnel: bad stream header", "remote", c.RemoteAddr(), "err", err)
		_ = writeStatus(c, stBadRequest, fmt.Sprintf("%v", err))
		return
	}
	_ = c.SetDeadline(time.Time{})
	peer, _ := transport.PeerOf(c)
	if peer.NodeID == "" || (h.cfg.Allow != nil && !h.cfg.Allow(peer.NodeID)) {
		h.log.Warn("tunnel: refused peer", "node", peer.NodeID, "remote", c.RemoteAddr())
		h.reply(c, fmt.Errorf("%w: peer %q may not use tunnels", ErrRefused, peer.NodeID))
		return
	}
	switch hdr.op {
	case opDial:
		h.serveDial(c, peer.NodeID, hdr.target)
	case opListen:
		h.serveListen(c, peer.NodeID)
	case opBack:
		owned = !h.serveBack(c, peer.NodeID, hdr.id)
	case opResolve:
		h.serveResolve(c, peer.NodeID, hdr.target)
	default:
		h.reply(c, fmt.Errorf("%w: op %d does not open a stream", ErrBadRequest, hdr.op))
	}
}

// reply writes err (nil: OK) as c's status, bounded by HeaderTimeout.
func (h *Hub) reply(c net.Conn, err error) error {
	_ = c.SetWriteDeadline(time.Now().Add(h.cfg.HeaderTimeout))
	defer c.SetWriteDeadline(time.Time{})
	if err == nil {
		return writeStatus(c, stOK, "")
	}
	return writeErrStatus(c, err)
}

// serveDial connects a provider's dial stream to its target.
func (h *Hub) serveDial(c net.Conn, from, target string) {
	if h.cfg.AllowTarget != nil && !h.cfg.AllowTarget(from, target) {
		h.log.Warn("tunnel: dial refused", "from", from, "target", target)
		_ = h.reply(c, fmt.Errorf("%w: %s may not reach %s", ErrRefused, from, target))
		return
	}
	conn, err := h.dial(h.ctx, target)
	if err != nil {
		h.log.Debug("tunnel: dial failed", "from", from, "target", target, "err", err)
		_ = h.reply(c, err)
		return
	}
	if !h.conns.add(conn) {
		return
	}
	defer h.conns.remove(conn)
	if err := h.reply(c, nil); err != nil {
		_ = conn.Close()
		return
	}
	pipe(c, conn)
}

// Dial connects to target ("ip:port") for the head's own code, e.g. as a
// gRPC ContextDialer: the head's own hosts directly, a provider's through
// its listen stream. Errors wrap ErrNoRoute, ErrUnreachable, ErrRefused,
// ErrTimeout, ErrBadRequest or ErrClosed, or ctx's error.
func (h *Hub) Dial(ctx context.Context, target string) (net.Conn, error) {
	conn, err := h.dial(ctx, target)
	if err != nil {
		return nil, err
	}
	tc, ok := track(&h.conns, conn)
	if !ok {
		return nil, fmt.Errorf("dial %s: %w", target, ErrClosed)
	}
	return tc, nil
}

// dial connects to target: locally, or through its provider's tunnel.
func (h *Hub) dial(ctx context.Context, target string) (net.Conn, error) {
	host, _, err := splitTarget(target)
	if err != nil {
		return nil, err
	}
	node, ok := h.cfg.Resolve(host)
	if !ok {
		return nil, fmt.Errorf("%w: no node owns %s", ErrNoRoute, host)
	}
	if node != "" {
		return h.open(ctx, node, target)
	}
	ctx, cancel := context.WithTimeout(ctx, h.cfg.DialTimeout)
	defer cancel()
	conn, err := h.cfg.DialLocal(ctx, "tcp", target)
	if err != nil {
		return nil, fmt.Errorf("%w: head: %w", ErrUnreachable, err)
	}
	return conn, nil
}

// Connected reports whether node has a listen stream up.
func (h *Hub) Connected(node string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.sessions[node] != nil
}

// Close ends every tunnel: listen streams (their pending opens fail),
// relayed and dialled conns. It waits for the Handle calls to return.
func (h *Hub) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return ErrClosed
	}
	h.closed = true
	h.mu.Unlock()
	h.cancel()
	h.conns.closeAll()
	h.wg.Wait()
	return nil
}

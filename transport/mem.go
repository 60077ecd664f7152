package transport

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
)

// Network is an in-memory network for tests, in the spirit of Tailscale's
// memnet: Listen registers an address, and Dial returns one end of a
// net.Pipe whose other end comes out of that listener's Accept. Every
// transport on it is a host with an address of its own; Partition cuts two
// hosts apart.
type Network struct {
	mu sync.Mutex
	// guarded by mu:
	listeners  map[string]*memListener
	partitions map[[2]string]bool // host pairs, sorted
	pipes      map[*memPipe]bool
}

// NewNetwork returns an empty network.
func NewNetwork() *Network {
	return &Network{
		listeners:  make(map[string]*memListener),
		partitions: make(map[[2]string]bool),
		pipes:      make(map[*memPipe]bool),
	}
}

// NewTransport returns a transport on n for the host at address host, whose
// conns report nodeID to their peers. Its dials come from host, and
// Listen(ctx, "") listens at host.
func (n *Network) NewTransport(host, nodeID string) *Mem {
	return &Mem{net: n, host: host, nodeID: nodeID}
}

// Partition makes dials between hosts a and b (either way) fail with
// ErrUnreachable and closes the conns already open between them, until Heal.
func (n *Network) Partition(a, b string) {
	n.mu.Lock()
	n.partitions[hostPair(a, b)] = true
	var cut []*memPipe
	for p := range n.pipes {
		if hostPair(p.dialer.host, p.listener.host) == hostPair(a, b) {
			cut = append(cut, p)
		}
	}
	n.mu.Unlock()
	for _, p := range cut {
		p.close()
	}
}

// Heal undoes Partition(a, b).
func (n *Network) Heal(a, b string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.partitions, hostPair(a, b))
}

func hostPair(a, b string) [2]string {
	if a > b {
		a, b = b, a
	}
	return [2]string{a, b}
}

// Mem is a Transport on a Network. Its conns report a zero RTT and no
// certificate.
type Mem struct {
	net    *Network
	host   string
	nodeID string

	mu     sync.Mutex
	closed bool // guarded by mu
}

// Addr is the transport's host address: the source of its dials, and where
// Listen(ctx, "") listens.
func (t *Mem) Addr() string { return t.host }

// Listen registers a listener at addr ("" means the host address).
func (t *Mem) Listen(ctx context.Context, addr string) (Listener, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if addr == "" {
		addr = t.host
	}
	if t.isClosed() {
		return nil, fmt.Errorf("listen %s: %w", addr, ErrClosed)
	}
	n := t.net
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.listeners[addr] != nil {
		return nil, fmt.Errorf("%w: %s", ErrAddrInUse, addr)
	}
	l := &memListener{t: t, addr: memAddr(addr), notify: make(chan struct{}, 1), done: make(chan struct{})}
	n.listeners[addr] = l
	return l, nil
}

// Dial connects to the listener at addr.
func (t *Mem) Dial(ctx context.Context, addr string) (net.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, ctxError(addr, err)
	}
	if t.isClosed() {
		return nil, fmt.Errorf("dial %s: %w", addr, ErrClosed)
	}
	n := t.net
	n.mu.Lock()
	l := n.listeners[addr]
	if l == nil {
		n.mu.Unlock()
		return nil, fmt.Errorf("%w: nothing listens at %s", ErrUnreachable, addr)
	}
	if n.partitions[hostPair(t.host, l.t.host)] {
		n.mu.Unlock()
		return nil, fmt.Errorf("%w: %s is partitioned from %s", ErrUnreachable, addr, t.host)
	}
	p := newMemPipe(n, t, l)
	n.pipes[p] = true
	n.mu.Unlock()

	if !l.enqueue(p.server) {
		p.close()
		return nil, fmt.Errorf("%w: listener at %s closed", ErrUnreachable, addr)
	}
	return p.client, nil
}

// Close closes the transport's listeners and every conn it dialled or
// accepted, as if its process had exited.
func (t *Mem) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return ErrClosed
	}
	t.closed = true
	t.mu.Unlock()

	n := t.net
	n.mu.Lock()
	var lns []*memListener
	for _, l := range n.listeners {
		if l.t == t {
			lns = append(lns, l)
		}
	}
	var pipes []*memPipe
	for p := range n.pipes {
		if p.dialer == t || p.listener == t {
			pipes = append(pipes, p)
		}
	}
	n.mu.Unlock()
	for _, l := range lns {
		_ = l.Close()
	}
	for _, p := range pipes {
		p.close()
	}
	return nil
}

func (t *Mem) isClosed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.closed
}

// memListener queues dialled conns until Accept takes them. The queue is
// unbounded: tests dial and accept in any order.
type memListener struct {
	t      *Mem
	addr   memAddr
	notify chan struct{} // a token when pending grows
	done   chan struct{} // closed by Close

	mu sync.Mutex
	// guarded by mu:
	closed  bool
	pending []net.Conn
}

func (l *memListener) enqueue(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.pending = append(l.pending, c)
	select {
	case l.notify <- struct{}{}:
	default:
	}
	return true
}

func (l *memListener) Accept() (net.Conn, error) {
	for {
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			return nil, fmt.Errorf("accept: %w", ErrClosed)
		}
		if len(l.pending) > 0 {
			c := l.pending[0]
			l.pending = l.pending[1:]
			l.mu.Unlock()
			return c, nil
		}
		l.mu.Unlock()
		select {
		case <-l.notify:
		case <-l.done:
		}
	}
}

// Close unregisters the address: later dials fail with ErrUnreachable and
// conns not yet accepted are closed. Accepted conns live on.
func (l *memListener) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	l.closed = true
	pending := l.pending
	l.pending = nil
	l.mu.Unlock()
	close(l.done)

	n := l.t.net
	n.mu.Lock()
	if n.listeners[string(l.addr)] == l {
		delete(n.listeners, string(l.addr))
	}
	n.mu.Unlock()
	for _, c := range pending {
		_ = c.Close()
	}
	return nil
}

func (l *memListener) Addr() net.Addr { return l.addr }

type memAddr string

func (a memAddr) Network() string { return "mem" }
func (a memAddr) String() string  { return string(a) }

// memPipe is one dialled connection: both ends of a net.Pipe.
type memPipe struct {
	net              *Network
	dialer, listener *Mem
	client, server   *memConn
	once             sync.Once
}

func newMemPipe(n *Network, dialer *Mem, l *memListener) *memPipe {
	a, b := net.Pipe()
	p := &memPipe{net: n, dialer: dialer, listener: l.t}
	serverInfo := PeerInfo{NodeID: l.t.nodeID}
	clientInfo := PeerInfo{NodeID: dialer.nodeID}
	p.client = &memConn{Conn: a, pipe: p, peer: serverInfo, local: memAddr(dialer.host),
		remote: &peerAddr{Addr: l.addr, peer: func() PeerInfo { return serverInfo }}}
	p.server = &memConn{Conn: b, pipe: p, peer: clientInfo, local: l.addr,
		remote: &peerAddr{Addr: memAddr(dialer.host), peer: func() PeerInfo { return clientInfo }}}
	return p
}

// close closes both ends (Partition, Transport.Close): both sides' I/O fails.
func (p *memPipe) close() {
	p.once.Do(func() {
		_ = p.client.Conn.Close()
		_ = p.server.Conn.Close()
		p.net.mu.Lock()
		delete(p.net.pipes, p)
		p.net.mu.Unlock()
	})
}

// memConn is one end of a memPipe.
type memConn struct {
	net.Conn
	pipe   *memPipe
	peer   PeerInfo
	local  net.Addr
	remote *peerAddr
	closed atomic.Bool // this end's Close was called
}

func (c *memConn) Peer() PeerInfo       { return c.peer }
func (c *memConn) LocalAddr() net.Addr  { return c.local }
func (c *memConn) RemoteAddr() net.Addr { return c.remote }

func (c *memConn) Read(b []byte) (int, error)  { return c.ioResult(c.Conn.Read(b)) }
func (c *memConn) Write(b []byte) (int, error) { return c.ioResult(c.Conn.Write(b)) }

// ioResult reports I/O on an end we closed ourselves as net.ErrClosed, as
// the QUIC conns do; net.Pipe says io.ErrClosedPipe.
func (c *memConn) ioResult(n int, err error) (int, error) {
	if err != nil && err != io.EOF && c.closed.Load() {
		err = net.ErrClosed
	}
	return n, err
}

// Close closes this end only: the peer reads io.EOF and its writes fail.
func (c *memConn) Close() error {
	if c.closed.Swap(true) {
		return net.ErrClosed
	}
	err := c.Conn.Close()
	if c.pipe.client.closed.Load() && c.pipe.server.closed.Load() {
		c.pipe.close()
	}
	return err
}

package linkemu

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// socketBuffer is what we ask the kernel for on every socket, so that bursts
// are not lost before the emulator has seen them (the kernel caps it at
// net.core.rmem_max / wmem_max).
const socketBuffer = 4 << 20

// UDPProxy listens on a UDP address and forwards datagrams to a target,
// keeping one upstream socket per client address: several QUIC connections
// through one proxy work, and the target sees a distinct source port for each
// client. Config.Up shapes client→target traffic, Config.Down the replies.
// Both directions are each one link shared by all sessions.
//
// Goroutines: one reads the listening socket, one per session reads its
// upstream socket, one per direction delivers, one expires idle sessions.
type UDPProxy struct {
	cfg    Config
	log    *slog.Logger
	ln     *net.UDPConn
	target *net.UDPAddr
	clk    clock

	up, down     *shaper
	upQ, downQ   *delayLine
	partitioned  atomic.Bool
	done         chan struct{} // closed by Close
	wg           sync.WaitGroup
	closeOnce    sync.Once
	stopWatching func() bool // ends Start's context watch

	mu sync.Mutex
	// guarded by mu:
	started, closed bool
	sessions        map[netip.AddrPort]*udpSession
}

// udpSession is one client address and its upstream socket.
type udpSession struct {
	client netip.AddrPort
	conn   *net.UDPConn // connected to the target
	last   atomic.Int64 // clock time of the last packet either way
	closed atomic.Bool
}

func (s *udpSession) touch(now time.Duration) { s.last.Store(int64(now)) }

func (s *udpSession) close() {
	s.closed.Store(true)
	_ = s.conn.Close()
}

// NewUDPProxy binds listen (e.g. "127.0.0.1:0") and prepares to forward to
// target. Nothing is forwarded before Start.
func NewUDPProxy(listen, target string, cfg Config) (*UDPProxy, error) {
	if err := cfg.normalize(); err != nil {
		return nil, err
	}
	taddr, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		return nil, fmt.Errorf("linkemu: target %q: %w", target, err)
	}
	laddr, err := net.ResolveUDPAddr("udp", listen)
	if err != nil {
		return nil, fmt.Errorf("linkemu: listen %q: %w", listen, err)
	}
	ln, err := net.ListenUDP("udp", laddr)
	if err != nil {
		return nil, fmt.Errorf("linkemu: %w", err)
	}
	_ = ln.SetReadBuffer(socketBuffer)
	_ = ln.SetWriteBuffer(socketBuffer)
	p := &UDPProxy{
		cfg: cfg, ln: ln, target: taddr, clk: newClock(),
		up:       newShaper(cfg.Up, cfg.Seed, 0),
		down:     newShaper(cfg.Down, cfg.Seed, 1),
		upQ:      newDelayLine(cfg.MaxInFlightBytes),
		downQ:    newDelayLine(cfg.MaxInFlightBytes),
		done:     make(chan struct{}),
		sessions: make(map[netip.AddrPort]*udpSession),
	}
	p.log = cfg.Logger.With("component", "linkemu", "proto", "udp", "listen", ln.LocalAddr().String(), "target", taddr.String())
	return p, nil
}

// Addr is the address clients send to.
func (p *UDPProxy) Addr() net.Addr { return p.ln.LocalAddr() }

// Start starts forwarding. It returns at once; the proxy runs until Close, or
// until ctx is done (which closes it).
func (p *UDPProxy) Start(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.closed:
		return net.ErrClosed
	case p.started:
		return errors.New("linkemu: proxy already started")
	}
	p.started = true
	p.wg.Add(4)
	go p.readClients()
	go p.expireIdle()
	go func() {
		defer p.wg.Done()
		p.upQ.run(p.done, p.clk, p.deliverUp)
	}()
	go func() {
		defer p.wg.Done()
		p.downQ.run(p.done, p.clk, p.deliverDown)
	}()
	p.stopWatching = context.AfterFunc(ctx, func() { _ = p.Close() })
	p.log.Debug("link emulator up", "up", p.cfg.Up.String(), "down", p.cfg.Down.String())
	return nil
}

// Close stops forwarding, closes every socket and waits for every goroutine
// of the proxy to end. Packets still in flight are discarded. Calling it
// again waits the same way and returns nil.
func (p *UDPProxy) Close() error {
	p.closeOnce.Do(func() {
		p.mu.Lock()
		p.closed = true
		sessions := p.sessions
		p.sessions = nil
		stop := p.stopWatching
		p.mu.Unlock()
		if stop != nil {
			stop()
		}
		close(p.done)
		_ = p.ln.Close()
		for _, s := range sessions {
			s.close()
		}
	})
	p.wg.Wait()
	p.upQ.drain()
	p.downQ.drain()
	return nil
}

// SetPartitioned drops every packet both ways while on: those that arrive,
// and those in flight that come due. Turning it off heals the link; sessions
// survive a partition (unless it outlasts IdleTimeout).
func (p *UDPProxy) SetPartitioned(on bool) {
	if p.partitioned.Swap(on) != on {
		p.log.Info("partition", "on", on)
	}
}

// Stats returns the traffic counters.
func (p *UDPProxy) Stats() Stats {
	p.mu.Lock()
	n := len(p.sessions)
	p.mu.Unlock()
	return Stats{Up: p.up.c.snapshot(), Down: p.down.c.snapshot(), Sessions: n}
}

// readClients reads the listening socket: client→target.
func (p *UDPProxy) readClients() {
	defer p.wg.Done()
	buf := make([]byte, maxDatagram)
	for {
		n, from, err := p.ln.ReadFromUDPAddrPort(buf)
		if err != nil {
			if p.isDone() || errors.Is(err, net.ErrClosed) {
				return
			}
			p.log.Debug("read from clients", "err", err)
			continue
		}
		p.up.c.receive(n)
		if p.partitioned.Load() {
			p.up.c.drop(dropPartition, n)
			continue
		}
		s := p.session(from)
		if s == nil {
			p.up.c.drop(dropError, n)
			continue
		}
		p.forward(p.up, p.upQ, buf[:n], s)
	}
}

// readTarget reads one session's upstream socket: target→client.
func (p *UDPProxy) readTarget(s *udpSession) {
	defer p.wg.Done()
	buf := make([]byte, maxDatagram)
	for {
		n, err := s.conn.Read(buf)
		if err != nil {
			if s.closed.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			// Typically ECONNREFUSED: an ICMP error for an earlier
			// datagram, because nothing listens at the target (yet).
			p.log.Debug("read from target", "client", s.client, "err", err)
			continue
		}
		p.down.c.receive(n)
		if p.partitioned.Load() {
			p.down.c.drop(dropPartition, n)
			continue
		}
		p.forward(p.down, p.downQ, buf[:n], s)
	}
}

// forward puts a received datagram through the link model into a delay line.
func (p *UDPProxy) forward(sh *shaper, q *delayLine, data []byte, s *udpSession) {
	now := p.clk.now()
	s.touch(now)
	due, why := sh.admit(len(data), now)
	if why != keep {
		sh.c.drop(why, len(data))
		return
	}
	pk := newPacket(data, due, s)
	if !q.push(pk) {
		sh.c.drop(dropQueue, len(data))
		pk.release()
	}
}

func (p *UDPProxy) deliverUp(pk *packet) {
	defer pk.release()
	n := len(pk.data)
	if p.partitioned.Load() {
		p.up.c.drop(dropPartition, n)
		return
	}
	if _, err := pk.sess.conn.Write(pk.data); err != nil {
		// The session expired meanwhile, or an ICMP error for an earlier
		// datagram surfaced here.
		p.up.c.drop(dropError, n)
		return
	}
	p.up.c.forward(n)
}

func (p *UDPProxy) deliverDown(pk *packet) {
	defer pk.release()
	n := len(pk.data)
	if p.partitioned.Load() {
		p.down.c.drop(dropPartition, n)
		return
	}
	if _, err := p.ln.WriteToUDPAddrPort(pk.data, pk.sess.client); err != nil {
		p.down.c.drop(dropError, n)
		return
	}
	p.down.c.forward(n)
}

// session returns client's session, making one (and its upstream socket) if
// there is none. nil if the proxy is closed, full, or the socket failed.
func (p *UDPProxy) session(client netip.AddrPort) *udpSession {
	p.mu.Lock()
	s, ok := p.sessions[client]
	full := len(p.sessions) >= p.cfg.MaxSessions
	p.mu.Unlock()
	if ok {
		return s
	}
	if full {
		p.log.Warn("too many sessions; dropping datagram", "client", client, "max", p.cfg.MaxSessions)
		return nil
	}
	// Only readClients makes sessions, so no one else can be making this one.
	conn, err := net.DialUDP("udp", nil, p.target)
	if err != nil {
		p.log.Warn("upstream socket", "client", client, "err", err)
		return nil
	}
	_ = conn.SetReadBuffer(socketBuffer)
	_ = conn.SetWriteBuffer(socketBuffer)
	s = &udpSession{client: client, conn: conn}
	s.touch(p.clk.now())
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		_ = conn.Close()
		return nil
	}
	p.sessions[client] = s
	p.wg.Add(1)
	p.mu.Unlock()
	go p.readTarget(s)
	p.log.Debug("session", "client", client, "upstream", conn.LocalAddr())
	return s
}

// expireIdle closes sessions that have been idle for IdleTimeout.
func (p *UDPProxy) expireIdle() {
	defer p.wg.Done()
	idle := p.cfg.IdleTimeout
	tick := time.NewTicker(min(max(idle/4, time.Millisecond), 10*time.Second))
	defer tick.Stop()
	for {
		select {
		case <-p.done:
			return
		case <-tick.C:
		}
		cutoff := int64(p.clk.now() - idle)
		var expired []*udpSession
		p.mu.Lock()
		for addr, s := range p.sessions {
			if s.last.Load() < cutoff {
				delete(p.sessions, addr)
				expired = append(expired, s)
			}
		}
		p.mu.Unlock()
		for _, s := range expired {
			s.close()
			p.log.Debug("session expired", "client", s.client, "upstream", s.conn.LocalAddr())
		}
	}
}

func (p *UDPProxy) isDone() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

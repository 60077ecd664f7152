package linkemu

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// TCPProxy accepts TCP connections and relays each to a new connection to the
// target, delaying and rate-limiting the bytes each way: Config.Up shapes
// client→target, Config.Down target→client, each one link shared by all
// connections. It models delay, jitter and bandwidth only; Link.Loss is
// ignored (see Link). Data is never reordered.
//
// Limits of the model: the client's connect completes locally at once (the
// handshake round trip is not emulated, so a first request sees one round
// trip, not two); a FIN travels with the data's delay; an RST is relayed as a
// FIN after the data already read.
//
// A partition holds traffic instead of dropping it: nothing is delivered
// while partitioned, new connections wait to reach the target, and everything
// held is delivered on healing (no earlier than it was due). The peers see
// stalled connections, as they would on a real partition before their own
// timeouts fire.
//
// Goroutines: one accepts; each connection has one reader and one writer per
// direction.
type TCPProxy struct {
	cfg    Config
	log    *slog.Logger
	ln     *net.TCPListener
	target string
	clk    clock

	up, down     *shaper
	ctx          context.Context // cancelled by Close; bounds dials
	cancel       context.CancelFunc
	wg           sync.WaitGroup
	closeOnce    sync.Once
	stopWatching func() bool

	pmu         sync.Mutex
	partitioned bool
	healed      chan struct{} // closed when a partition heals

	mu sync.Mutex
	// guarded by mu:
	started, closed bool
	conns           map[*tcpConn]struct{}
}

// NewTCPProxy listens on listen (e.g. "127.0.0.1:0") and prepares to relay
// to target. Connections are accepted by the kernel at once but relayed only
// after Start.
func NewTCPProxy(listen, target string, cfg Config) (*TCPProxy, error) {
	if err := cfg.normalize(); err != nil {
		return nil, err
	}
	if _, _, err := net.SplitHostPort(target); err != nil {
		return nil, fmt.Errorf("linkemu: target %q: %w", target, err)
	}
	laddr, err := net.ResolveTCPAddr("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("linkemu: listen %q: %w", listen, err)
	}
	ln, err := net.ListenTCP("tcp", laddr)
	if err != nil {
		return nil, fmt.Errorf("linkemu: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &TCPProxy{
		cfg: cfg, ln: ln, target: target, clk: newClock(),
		up:   newShaper(cfg.Up, cfg.Seed, 0),
		down: newShaper(cfg.Down, cfg.Seed, 1),
		ctx:  ctx, cancel: cancel,
		conns: make(map[*tcpConn]struct{}),
	}
	p.log = cfg.Logger.With("component", "linkemu", "proto", "tcp", "listen", ln.Addr().String(), "target", target)
	if cfg.Up.Loss > 0 || cfg.Down.Loss > 0 {
		p.log.Warn("packet loss is not emulated for TCP; only delay, jitter and bandwidth")
	}
	return p, nil
}

// Addr is the address clients connect to.
func (p *TCPProxy) Addr() net.Addr { return p.ln.Addr() }

// Start starts relaying. It returns at once; the proxy runs until Close, or
// until ctx is done (which closes it).
func (p *TCPProxy) Start(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.closed:
		return net.ErrClosed
	case p.started:
		return errors.New("linkemu: proxy already started")
	}
	p.started = true
	p.wg.Add(1)
	go p.accept()
	p.stopWatching = context.AfterFunc(ctx, func() { _ = p.Close() })
	p.log.Debug("link emulator up", "up", p.cfg.Up.String(), "down", p.cfg.Down.String())
	return nil
}

// Close stops accepting, closes every connection both ways without waiting
// for data in flight, and waits for every goroutine of the proxy to end.
// Calling it again waits the same way and returns nil.
func (p *TCPProxy) Close() error {
	p.closeOnce.Do(func() {
		p.mu.Lock()
		p.closed = true
		conns := p.conns
		p.conns = nil
		stop := p.stopWatching
		p.mu.Unlock()
		if stop != nil {
			stop()
		}
		p.cancel()
		_ = p.ln.Close()
		for c := range conns {
			c.teardown()
		}
	})
	p.wg.Wait()
	return nil
}

// SetPartitioned holds all traffic while on (see TCPProxy); turning it off
// releases it.
func (p *TCPProxy) SetPartitioned(on bool) {
	p.pmu.Lock()
	defer p.pmu.Unlock()
	if on == p.partitioned {
		return
	}
	p.partitioned = on
	if on {
		p.healed = make(chan struct{})
	} else {
		close(p.healed)
	}
	p.log.Info("partition", "on", on)
}

// waitHealed returns once no partition is on (true), or when stop is closed
// (false).
func (p *TCPProxy) waitHealed(stop <-chan struct{}) bool {
	p.pmu.Lock()
	on, healed := p.partitioned, p.healed
	p.pmu.Unlock()
	if !on {
		return true
	}
	select {
	case <-healed:
		return true
	case <-stop:
		return false
	}
}

// Stats returns the traffic counters; a packet is a chunk read from a
// connection.
func (p *TCPProxy) Stats() Stats {
	p.mu.Lock()
	n := len(p.conns)
	p.mu.Unlock()
	return Stats{Up: p.up.c.snapshot(), Down: p.down.c.snapshot(), Sessions: n}
}

func (p *TCPProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.AcceptTCP()
		if err != nil {
			if p.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			p.log.Warn("accept", "err", err)
			continue
		}
		tc := &tcpConn{p: p, client: c, done: make(chan struct{})}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			_ = c.Close()
			return
		}
		p.conns[tc] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		go tc.run()
	}
}

// tcpConn is one relayed connection.
type tcpConn struct {
	p        *TCPProxy
	client   *net.TCPConn
	done     chan struct{} // closed by teardown
	once     sync.Once
	finished atomic.Int32 // directions whose FIN has been delivered

	mu     sync.Mutex
	server *net.TCPConn // guarded by mu; nil until dialled
}

// chunk is data read from one side, due for writing to the other.
type chunk struct {
	due  time.Duration
	data []byte // nil with eof
	eof  bool
}

func (c *tcpConn) run() {
	p := c.p
	defer p.wg.Done()
	if !p.waitHealed(c.done) {
		return
	}
	var d net.Dialer
	conn, err := d.DialContext(p.ctx, "tcp", p.target)
	if err != nil {
		if p.ctx.Err() == nil {
			p.log.Warn("dial target", "client", c.client.RemoteAddr(), "err", err)
		}
		c.teardown()
		return
	}
	server := conn.(*net.TCPConn)
	c.mu.Lock()
	c.server = server
	c.mu.Unlock()
	select {
	case <-c.done: // torn down while dialling; teardown may have missed server
		_ = server.Close()
		return
	default:
	}
	p.log.Debug("connection", "client", c.client.RemoteAddr(), "upstream", server.LocalAddr())
	slots := max(16, p.cfg.MaxInFlightBytes/chunkSize(p.cfg.Up))
	upQ := make(chan chunk, slots)
	slots = max(16, p.cfg.MaxInFlightBytes/chunkSize(p.cfg.Down))
	downQ := make(chan chunk, slots)
	p.wg.Add(4)
	go c.read(c.client, p.up, upQ)
	go c.write(server, p.up, upQ)
	go c.read(server, p.down, downQ)
	go c.write(c.client, p.down, downQ)
}

// chunkSize is how much a reader takes at once: about a millisecond's worth
// at the link's rate, so bandwidth-limited data flows in small steps, within
// [1460 B, 16 KiB].
func chunkSize(l Link) int {
	const lo, hi = 1460, 16 << 10
	if l.Bandwidth <= 0 {
		return hi
	}
	return int(min(max(l.Bandwidth/8/1000, lo), hi))
}

// read stamps what src sends with due times and queues it for write.
func (c *tcpConn) read(src *net.TCPConn, sh *shaper, q chan<- chunk) {
	defer c.p.wg.Done()
	buf := make([]byte, chunkSize(sh.link))
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var last time.Duration // due time of the previous chunk: never go below it
	for {
		n, err := src.Read(buf)
		if n > 0 {
			sh.c.receive(n)
			due, ok := c.reserve(sh, n, timer)
			if !ok {
				return
			}
			last = max(last, due)
			data := make([]byte, n)
			copy(data, buf[:n])
			select {
			case q <- chunk{due: last, data: data}:
			case <-c.done:
				return
			}
		}
		if err != nil {
			if err != io.EOF && !c.isDone() {
				c.p.log.Debug("read", "from", src.RemoteAddr(), "err", err)
			}
			// The FIN travels like a byte of data, after the data.
			sh.mu.Lock()
			fin := c.p.clk.now() + sh.propagation()
			sh.mu.Unlock()
			select {
			case q <- chunk{due: max(last, fin), eof: true}:
			case <-c.done:
			}
			return
		}
	}
}

// reserve books n bytes on the link, waiting while its queue is full.
func (c *tcpConn) reserve(sh *shaper, n int, timer *time.Timer) (time.Duration, bool) {
	for {
		due, wait := sh.reserve(n, c.p.clk.now())
		if wait <= 0 {
			return due, true
		}
		timer.Reset(wait)
		select {
		case <-timer.C:
		case <-c.done:
			return 0, false
		}
	}
}

// write delivers queued chunks to dst as they come due.
func (c *tcpConn) write(dst *net.TCPConn, sh *shaper, q <-chan chunk) {
	defer c.p.wg.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		var ch chunk
		select {
		case ch = <-q:
		case <-c.done:
			return
		}
		if wait := ch.due - c.p.clk.now(); wait > 0 {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-c.done:
				return
			}
		}
		if !c.p.waitHealed(c.done) {
			return
		}
		if ch.eof {
			_ = dst.CloseWrite()
			if c.finished.Add(1) == 2 {
				c.teardown()
			}
			return
		}
		if _, err := dst.Write(ch.data); err != nil {
			if !c.isDone() {
				c.p.log.Debug("write", "to", dst.RemoteAddr(), "err", err)
				sh.c.drop(dropError, len(ch.data))
			}
			c.teardown()
			return
		}
		sh.c.forward(len(ch.data))
	}
}

// teardown closes both sides at once and forgets the connection.
func (c *tcpConn) teardown() {
	c.once.Do(func() {
		close(c.done)
		_ = c.client.Close()
		c.mu.Lock()
		server := c.server
		c.mu.Unlock()
		if server != nil {
			_ = server.Close()
		}
		p := c.p
		p.mu.Lock()
		delete(p.conns, c) // no-op once Close has taken the map
		p.mu.Unlock()
		p.log.Debug("connection closed", "client", c.client.RemoteAddr())
	})
}

func (c *tcpConn) isDone() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

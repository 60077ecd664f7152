package tunnel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/gray-cluster/gray/transport"
)

// Defaults for AgentConfig.
const (
	DefaultIdleTimeout = 3 * DefaultPingInterval
	DefaultMinBackoff  = 100 * time.Millisecond
	DefaultMaxBackoff  = 10 * time.Second
)

// AgentConfig configures an Agent. The zero value works.
type AgentConfig struct {
	// Hosts the head may have this agent connect to: the provider's
	// virtual IP. 127.0.0.1 and ::1 are always allowed; nothing else is.
	Hosts []string
	// DialLocal dials the provider's own targets. Default: a net.Dialer.
	DialLocal func(ctx context.Context, network, addr string) (net.Conn, error)
	// HeaderTimeout bounds waiting for the head's status on a stream.
	// Default DefaultHeaderTimeout.
	HeaderTimeout time.Duration
	// DialTimeout bounds Dial when its ctx has no deadline, and a local TCP
	// dial. Default DefaultDialTimeout.
	DialTimeout time.Duration
	// IdleTimeout drops a listen stream that heard nothing (not even a
	// ping) for this long, and reconnects. Default DefaultIdleTimeout.
	IdleTimeout time.Duration
	// MinBackoff and MaxBackoff bound the wait between attempts to bring
	// the listen stream back. Defaults DefaultMinBackoff, DefaultMaxBackoff.
	MinBackoff, MaxBackoff time.Duration
	// DirectTransport, if set, dials other providers directly (their peer
	// listeners) before relaying through the head; see HandleDirect.
	DirectTransport transport.Transport
	// DirectAllow vets the direct dials other providers make into this one
	// (from is the peer's node id, target "ip:port" on one of Hosts); nil
	// refuses them all.
	DirectAllow func(from, target string) bool
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Agent is a provider's end of the tunnels. It only dials out to the head:
// it keeps a listen stream there, answers the head's open records with back
// streams, and dials other nodes' targets through the head (Dial).
type Agent struct {
	tr       transport.Transport
	headAddr string
	cfg      AgentConfig
	log      *slog.Logger
	allowed  map[string]bool
	own      map[string]bool // Hosts: what direct streams may open
	direct   directRoutes
	ctx      context.Context // cancelled by Close
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	conns    connSet

	mu sync.Mutex
	// guarded by mu:
	started bool
	closed  bool
	up      bool
	change  chan struct{} // closed and replaced whenever up changes
}

// NewAgent returns an agent that reaches the head's tunnel hub at headAddr
// on tr. It does nothing until Start (Dial works without it).
func NewAgent(tr transport.Transport, headAddr string, cfg AgentConfig) *Agent {
	if cfg.HeaderTimeout <= 0 {
		cfg.HeaderTimeout = DefaultHeaderTimeout
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(DefaultMaxBackoff, cfg.MinBackoff)
	}
	if cfg.DialLocal == nil {
		cfg.DialLocal = (&net.Dialer{}).DialContext
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	allowed := map[string]bool{"127.0.0.1": true, "::1": true}
	own := map[string]bool{}
	for _, h := range cfg.Hosts {
		allowed[h], own[h] = true, true
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Agent{tr: tr, headAddr: headAddr, cfg: cfg, log: cfg.Logger, allowed: allowed, own: own,
		ctx: ctx, cancel: cancel, change: make(chan struct{})}
}

// Start keeps a listen stream up to the head until ctx is done or Close,
// reconnecting with backoff when it drops. It returns at once.
func (a *Agent) Start(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return ErrClosed
	}
	if a.started {
		return nil
	}
	a.started = true
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		stop := context.AfterFunc(ctx, a.cancel)
		defer stop()
		a.run()
	}()
	return nil
}

// WaitReady waits until the listen stream is up (the head can reach this
// provider's targets).
func (a *Agent) WaitReady(ctx context.Context) error {
	for {
		a.mu.Lock()
		up, change := a.up, a.change
		a.mu.Unlock()
		if up {
			return nil
		}
		select {
		case <-change:
		case <-ctx.Done():
			return ctx.Err()
		case <-a.ctx.Done():
			return ErrClosed
		}
	}
}

func (a *Agent) setUp(up bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.up != up {
		a.up = up
		close(a.change)
		a.change = make(chan struct{})
	}
}

// run brings the listen stream up again and again until the agent stops.
func (a *Agent) run() {
	backoff := a.cfg.MinBackoff
	for a.ctx.Err() == nil {
		c, err := a.connect(opListen, 0)
		if err != nil {
			a.log.Warn("tunnel: listen stream to head failed", "head", a.headAddr, "err", err, "retry_in", backoff)
		} else {
			a.log.Info("tunnel: listen stream up", "head", a.headAddr)
			a.setUp(true)
			a.listen(c)
			a.setUp(false)
			a.log.Info("tunnel: listen stream down", "head", a.headAddr)
			backoff = a.cfg.MinBackoff
		}
		// Always wait a little, so a head that drops us at once is no busy
		// loop; jitter spreads a pool's reconnects.
		wait := backoff/2 + rand.N(backoff/2+1)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-a.ctx.Done():
		}
		t.Stop()
		backoff = min(2*backoff, a.cfg.MaxBackoff)
	}
}

// connect opens a stream to the head with the given op and waits for OK.
func (a *Agent) connect(op byte, id uint64, extra ...byte) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(a.ctx, a.cfg.DialTimeout)
	defer cancel()
	return a.open(ctx, header{op: op, id: id}, extra)
}

// open dials the head, sends hdr (and extra after it) and reads the status.
func (a *Agent) open(ctx context.Context, hdr header, extra []byte) (net.Conn, error) {
	c, err := a.tr.Dial(ctx, a.headAddr)
	if err != nil {
		return nil, fmt.Errorf("%w: head %s: %w", ErrNoRoute, a.headAddr, err)
	}
	if !a.conns.add(c) {
		return nil, ErrClosed
	}
	// A dial's status comes once the head has reached the target: ctx
	// bounds it. Other statuses come at once.
	var deadline time.Time
	if hdr.op != opDial {
		deadline = time.Now().Add(a.cfg.HeaderTimeout)
	}
	if d, ok := ctx.Deadline(); ok && (deadline.IsZero() || d.Before(deadline)) {
		deadline = d
	}
	_ = c.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	_, err = c.Write(append(hdr.streamHeader(), extra...))
	if err == nil {
		err = readStatus(c)
	}
	stopped := stop()
	if err == nil && !stopped {
		err = ctx.Err()
	}
	if err != nil {
		_ = c.Close()
		a.conns.remove(c)
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", ctx.Err(), err)
		}
		return nil, err
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// listen reads open records from the listen stream c until it fails.
func (a *Agent) listen(c net.Conn) {
	defer func() {
		_ = c.Close()
		a.conns.remove(c)
	}()
	for {
		_ = c.SetReadDeadline(time.Now().Add(a.cfg.IdleTimeout))
		rec, err := readFrame(c)
		if err != nil {
			if a.ctx.Err() == nil {
				a.log.Warn("tunnel: listen stream", "err", err)
			}
			return
		}
		switch rec.op {
		case opPing:
		case opOpen:
			a.wg.Add(1)
			go func() {
				defer a.wg.Done()
				a.answer(rec.id, rec.target)
			}()
		default:
			a.log.Warn("tunnel: unexpected record on listen stream", "op", rec.op)
			return
		}
	}
}

// answer dials target locally for open id and carries it on a back stream;
// a refusal or a failed dial is reported on the back stream instead.
func (a *Agent) answer(id uint64, target string) {
	var local net.Conn
	var derr error
	host, _, _ := splitTarget(target) // validated by readFrame
	if !a.allowed[host] {
		derr = fmt.Errorf("%w: %s is not this provider's to open", ErrRefused, target)
	} else {
		ctx, cancel := context.WithTimeout(a.ctx, a.cfg.DialTimeout)
		local, derr = a.cfg.DialLocal(ctx, "tcp", target)
		cancel()
		if derr != nil {
			derr = fmt.Errorf("%w: provider: %w", ErrUnreachable, derr)
		}
	}
	status := []byte{stOK, 0, 0}
	if derr != nil {
		a.log.Debug("tunnel: open failed", "target", target, "err", derr)
		var b statusBuf
		_ = writeErrStatus(&b, derr)
		status = b
	}
	back, err := a.connect(opBack, id, status...)
	switch {
	case err != nil && derr == nil:
		a.log.Warn("tunnel: back stream refused", "id", id, "target", target, "err", err)
		_ = local.Close()
		return
	case derr != nil:
		if back != nil {
			_ = back.Close()
			a.conns.remove(back)
		}
		return
	}
	if !a.conns.add(local) {
		_ = back.Close()
		a.conns.remove(back)
		return
	}
	pipe(back, local)
	a.conns.remove(back)
	a.conns.remove(local)
}

// statusBuf collects a status for sending after a header.
type statusBuf []byte

func (b *statusBuf) Write(p []byte) (int, error) { *b = append(*b, p...); return len(p), nil }

// Dial connects to target ("ip:port" of another node): directly to the
// provider that owns it when there is a direct path (DirectTransport),
// else through the head, which relays it to the node that owns target. ctx bounds the dial (or
// DialTimeout if it has no deadline). Errors wrap ErrNoRoute,
// ErrUnreachable, ErrRefused, ErrTimeout, ErrBadRequest or ErrClosed, or
// are ctx's error.
func (a *Agent) Dial(ctx context.Context, target string) (net.Conn, error) {
	if _, _, err := splitTarget(target); err != nil {
		return nil, err
	}
	if a.ctx.Err() != nil {
		return nil, fmt.Errorf("dial %s: %w", target, ErrClosed)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, a.cfg.DialTimeout+DefaultOpenTimeout)
		defer cancel()
	}
	ctx, cancel := mergeCancel(ctx, a.ctx)
	defer cancel()
	if c, ok := a.dialDirect(ctx, target); ok {
		tc, ok := track(&a.conns, c)
		if !ok {
			_ = c.Close()
			return nil, fmt.Errorf("dial %s: %w", target, ErrClosed)
		}
		return tc, nil
	}
	c, err := a.open(ctx, header{op: opDial, target: target}, nil)
	if err != nil {
		if errors.Is(err, ErrClosed) || a.ctx.Err() != nil {
			return nil, fmt.Errorf("dial %s: %w", target, ErrClosed)
		}
		return nil, fmt.Errorf("dial %s: %w", target, err)
	}
	tc, ok := track(&a.conns, c)
	a.conns.remove(c)
	if !ok {
		_ = c.Close()
		return nil, fmt.Errorf("dial %s: %w", target, ErrClosed)
	}
	return tc, nil
}

// mergeCancel returns ctx, also cancelled when other is.
func mergeCancel(ctx, other context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(other, cancel)
	return ctx, func() { stop(); cancel() }
}

// Close stops the listen stream and cuts every tunnel conn of this agent,
// then waits for its goroutines.
func (a *Agent) Close() error {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return ErrClosed
	}
	a.closed = true
	a.mu.Unlock()
	a.cancel()
	a.conns.closeAll()
	a.wg.Wait()
	return nil
}

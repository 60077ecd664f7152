package tunnel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
)

// Forwarder listens on local TCP addresses and pipes each accepted
// connection to a target dialled through dial (Hub.Dial), for stock
// processes on the head that have no proxy in their environment: a driver
// connecting to a provider's 127.64.x.y:port reaches the head's listener at
// that same address.
type Forwarder struct {
	dial func(ctx context.Context, target string) (net.Conn, error)
	log  *slog.Logger
	ctx  context.Context
	stop context.CancelFunc
	wg   sync.WaitGroup

	mu sync.Mutex
	// guarded by mu:
	closed bool
	fwds   map[string]*forward // by listen address as given
}

type forward struct {
	l      net.Listener
	mu     sync.Mutex
	target string // guarded by mu
	conns  connSet
}

func (f *forward) getTarget() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.target
}

// NewForwarder returns a forwarder dialling through dial; logger may be nil.
func NewForwarder(dial func(ctx context.Context, target string) (net.Conn, error), logger *slog.Logger) *Forwarder {
	if logger == nil {
		logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Forwarder{dial: dial, log: logger, ctx: ctx, stop: cancel, fwds: make(map[string]*forward)}
}

// Forward listens on listenAddr ("ip:port") and forwards its connections to
// target until Stop(listenAddr) or Close; ctx bounds only the setup. It
// returns the bound address (useful with port 0). Calling it again for the
// same listenAddr keeps the listener and points new connections at target.
func (fw *Forwarder) Forward(ctx context.Context, listenAddr, target string) (string, error) {
	if _, _, err := splitTarget(target); err != nil {
		return "", err
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	fw.mu.Lock()
	defer fw.mu.Unlock()
	if fw.closed {
		return "", ErrClosed
	}
	if f := fw.fwds[listenAddr]; f != nil {
		f.mu.Lock()
		f.target = target
		f.mu.Unlock()
		return f.l.Addr().String(), nil
	}
	l, err := (&net.ListenConfig{}).Listen(ctx, "tcp", listenAddr)
	if err != nil {
		return "", fmt.Errorf("tunnel: forward %s: %w", listenAddr, err)
	}
	f := &forward{l: l, target: target}
	fw.fwds[listenAddr] = f
	fw.wg.Add(1)
	go fw.serve(f)
	return l.Addr().String(), nil
}

func (fw *Forwarder) serve(f *forward) {
	defer fw.wg.Done()
	for {
		c, err := f.l.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				fw.log.Warn("tunnel: forward accept", "addr", f.l.Addr(), "err", err)
				_ = f.l.Close()
			}
			return
		}
		if !f.conns.add(c) {
			continue
		}
		fw.wg.Add(1)
		go func() {
			defer fw.wg.Done()
			defer f.conns.remove(c)
			target := f.getTarget()
			ctx, cancel := context.WithTimeout(fw.ctx, DefaultDialTimeout+DefaultOpenTimeout)
			conn, err := fw.dial(ctx, target)
			cancel()
			if err != nil {
				fw.log.Debug("tunnel: forward dial", "target", target, "err", err)
				abort(c)
				return
			}
			if !f.conns.add(conn) {
				_ = c.Close()
				return
			}
			defer f.conns.remove(conn)
			pipe(c, conn)
		}()
	}
}

// Stop closes the listener at listenAddr (as given to Forward) and its
// connections. Stopping an address not forwarded is a no-op.
func (fw *Forwarder) Stop(listenAddr string) {
	fw.mu.Lock()
	f := fw.fwds[listenAddr]
	delete(fw.fwds, listenAddr)
	fw.mu.Unlock()
	if f != nil {
		_ = f.l.Close()
		f.conns.closeAll()
	}
}

// Close stops every forward and waits for their goroutines.
func (fw *Forwarder) Close() error {
	fw.mu.Lock()
	if fw.closed {
		fw.mu.Unlock()
		return ErrClosed
	}
	fw.closed = true
	fwds := fw.fwds
	fw.fwds = nil
	fw.mu.Unlock()
	fw.stop()
	for _, f := range fwds {
		_ = f.l.Close()
		f.conns.closeAll()
	}
	fw.wg.Wait()
	return nil
}

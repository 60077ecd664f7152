package head

import (
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/gray-cluster/gray/gcs"
)

// standbyProxy is a standby head's Ray Client port while another head is
// active: each connection is forwarded, as bytes (TLS stays end to end),
// to the Ray Client address the active head published beside the lease.
// A stock client knows one address; one given the standby's reaches the
// active head now and, after a failover, reconnects to the same address
// and finds this head serving its session. Closed (with its connections)
// when this head takes the lease, before its own Ray Client server binds
// the port.
type standbyProxy struct {
	ln    net.Listener
	lease *gcs.Lease
	log   logger

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// logger is the part of slog.Logger the proxy uses.
type logger interface {
	Info(msg string, args ...any)
	Warn(msg string, args ...any)
}

// errNoLeaderAddr: the active head has not published its address yet.
var errNoLeaderAddr = errors.New("the active head has published no Ray Client address")

// startStandbyProxy listens on addr and forwards to the lease's leader.
func startStandbyProxy(addr string, lease *gcs.Lease, log logger) (*standbyProxy, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	p := &standbyProxy{ln: ln, lease: lease, log: log, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

func (p *standbyProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(c) {
			_ = c.Close()
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer p.untrack(c)
			if err := p.forward(c); err != nil {
				p.log.Warn("standby head: cannot forward a Ray Client connection to the active head", "from", c.RemoteAddr().String(), "err", err)
			}
		}()
	}
}

// forward relays c to the leader until either side closes.
func (p *standbyProxy) forward(c net.Conn) error {
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	target, err := p.lease.LeaderClientAddr(ctx)
	cancel()
	if err != nil {
		return err
	}
	if target == "" {
		return errNoLeaderAddr
	}
	up, err := net.DialTimeout("tcp", target, 5*time.Second)
	if err != nil {
		return err
	}
	if !p.track(up) {
		_ = up.Close()
		return nil
	}
	defer p.untrack(up)
	defer up.Close()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go pipe(up, c)
	go pipe(c, up)
	<-done
	<-done
	return nil
}

func (p *standbyProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *standbyProxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// Close stops listening and cuts every forwarded connection (their clients
// reconnect, to this head once it serves), then waits for the relays.
func (p *standbyProxy) Close() {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	_ = p.ln.Close()
	p.wg.Wait()
}

// dialableAddr is addr with an unspecified host replaced by ip, so that
// another machine can dial it.
func dialableAddr(addr net.Addr, ip string) string {
	ta, ok := addr.(*net.TCPAddr)
	if !ok {
		return addr.String()
	}
	host := ta.IP.String()
	if ta.IP == nil || ta.IP.IsUnspecified() {
		host = ip
	}
	return net.JoinHostPort(host, strconv.Itoa(ta.Port))
}

// Package localpeer keeps a TCP listener to peers on this machine. Native
// Ray must listen on the node IP (a stock driver given 127.0.0.1 dials the
// node IP instead), but a head started for this machine only (its Ray
// Client port on loopback) must not become reachable from the network that
// way: connections from any other host are closed as they are accepted.
package localpeer

import (
	"log/slog"
	"net"
	"sync"
	"time"
)

// Listener passes on connections from this machine's own addresses only.
type Listener struct {
	net.Listener
	log *slog.Logger

	mu      sync.Mutex
	local   map[string]bool
	checked time.Time
}

// Wrap filters l.
func Wrap(l net.Listener, log *slog.Logger) *Listener {
	if log == nil {
		log = slog.Default()
	}
	return &Listener{Listener: l, log: log}
}

// Accept returns the next connection from a local peer; others are closed
// with a log line.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if a, ok := c.RemoteAddr().(*net.TCPAddr); ok && l.isLocal(a.IP) {
			return c, nil
		}
		l.log.Warn("refused a connection from another host (this node serves native Ray to local drivers only; start the head with --host set to a reachable address to open it)",
			"remote", c.RemoteAddr().String(), "listener", l.Addr().String())
		_ = c.Close()
	}
}

func (l *Listener) isLocal(ip net.IP) bool {
	if ip.IsLoopback() {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.local[ip.String()] {
		return true
	}
	// Interfaces change (DHCP, VPNs): look again, at most once a second.
	if time.Since(l.checked) < time.Second && l.local != nil {
		return false
	}
	l.checked = time.Now()
	l.local = map[string]bool{}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				l.local[n.IP.String()] = true
			}
		}
	}
	return l.local[ip.String()]
}

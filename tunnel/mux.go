package tunnel

import (
	"errors"
	"net"
	"sync"
	"time"
)

// DefaultPeekTimeout is how long Mux waits for a new stream's first bytes.
const DefaultPeekTimeout = 10 * time.Second

// MuxListener is the listener Mux returns: it yields the streams that are
// not tunnel streams, their first bytes replayed.
type MuxListener struct {
	l       net.Listener
	handle  func(net.Conn)
	timeout time.Duration
	conns   chan net.Conn
	done    chan struct{}
	wg      sync.WaitGroup

	mu     sync.Mutex
	err    error // why accepting stopped; guarded by mu
	closed bool  // guarded by mu
}

// Mux splits l: streams that start with Magic go to handle, each in its
// own goroutine, with Magic replayed (Hub.Handle fits); all others (gRPC's
// HTTP/2 preface) come out of the returned listener's Accept with their
// first bytes replayed. Accept never waits on a slow peer: each stream is
// peeked in its own goroutine, for at most peekTimeout (0 means
// DefaultPeekTimeout); one that sends too little in time is closed. Closing
// the returned listener closes l and waits for the peeks and for the
// handlers, which must return once their conn is closed (closing the Hub
// does that).
func Mux(l net.Listener, handle func(net.Conn), peekTimeout time.Duration) *MuxListener {
	if peekTimeout <= 0 {
		peekTimeout = DefaultPeekTimeout
	}
	m := &MuxListener{l: l, handle: handle, timeout: peekTimeout, conns: make(chan net.Conn), done: make(chan struct{})}
	m.wg.Add(1)
	go m.acceptLoop()
	return m
}

func (m *MuxListener) acceptLoop() {
	defer m.wg.Done()
	for {
		c, err := m.l.Accept()
		if err != nil {
			m.stop(err)
			return
		}
		m.wg.Add(1)
		go m.route(c)
	}
}

// route peeks at c until its first bytes tell a tunnel stream from others.
func (m *MuxListener) route(c net.Conn) {
	tunnel := false
	defer func() {
		m.wg.Done()
		if tunnel {
			m.handle(c)
		}
	}()
	_ = c.SetReadDeadline(time.Now().Add(m.timeout))
	buf := make([]byte, len(Magic))
	n := 0
	for n < len(Magic) {
		k, err := c.Read(buf[n:])
		n += k
		if string(buf[:n]) != Magic[:n] {
			break // not a tunnel stream
		}
		if err != nil {
			_ = c.Close()
			return
		}
	}
	_ = c.SetReadDeadline(time.Time{})
	pc := &prefixConn{Conn: c, prefix: buf[:n]}
	if n == len(Magic) && string(buf) == Magic {
		c, tunnel = pc, true // handled once this peek is done
		return
	}
	select {
	case m.conns <- pc:
	case <-m.done:
		_ = c.Close()
	}
}

// Accept returns the next stream that is not a tunnel stream.
func (m *MuxListener) Accept() (net.Conn, error) {
	select {
	case c := <-m.conns:
		return c, nil
	case <-m.done:
		m.mu.Lock()
		defer m.mu.Unlock()
		return nil, m.err
	}
}

func (m *MuxListener) stop(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err == nil {
		m.err = err
		close(m.done)
	}
}

// Close closes the listener underneath and waits for the peeks in flight.
func (m *MuxListener) Close() error {
	m.mu.Lock()
	first := !m.closed
	m.closed = true
	m.mu.Unlock()
	if !first {
		return net.ErrClosed
	}
	err := m.l.Close()
	m.stop(net.ErrClosed)
	m.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// Addr is the address of the listener underneath.
func (m *MuxListener) Addr() net.Addr { return m.l.Addr() }

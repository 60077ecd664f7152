package tunnel

import (
	"errors"
	"io"
	"net"
	"sync"

	"github.com/gray-cluster/gray/transport"
)

// closeWriter is a conn that can half-close: net.TCPConn, QUIC stream conns.
type closeWriter interface{ CloseWrite() error }

var bufPool = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// errNoHalfClose: the copy saw EOF but its destination cannot half-close.
var errNoHalfClose = errors.New("tunnel: destination cannot half-close")

// copyHalf copies src to dst until src's EOF, then half-closes dst.
func copyHalf(dst, src net.Conn) error {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	// The wrappers hide ReaderFrom/WriterTo so the pooled buffer is used.
	if _, err := io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, *bp); err != nil {
		return err
	}
	cw, ok := dst.(closeWriter)
	if !ok {
		return errNoHalfClose
	}
	return cw.CloseWrite()
}

// pipe copies a↔b until both directions end, then closes both. An EOF in
// one direction half-closes the other side, so each end reads what is left;
// an error in either direction closes both at once (TCP ends with a reset).
// Where a side cannot half-close, the first EOF closes both.
func pipe(a, b net.Conn) {
	errc := make(chan error, 2)
	go func() { errc <- copyHalf(b, a) }()
	go func() { errc <- copyHalf(a, b) }()
	for range 2 {
		switch err := <-errc; {
		case err == nil:
		case errors.Is(err, errNoHalfClose):
			_ = a.Close()
			_ = b.Close()
		default:
			abort(a)
			abort(b)
		}
	}
	_ = a.Close()
	_ = b.Close()
}

// abort closes c; a TCP conn is reset, so its peer sees an error, not EOF.
func abort(c net.Conn) {
	if tc, ok := c.(interface{ SetLinger(int) error }); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// prefixConn replays bytes already read from Conn before reading on. It
// keeps what callers look for on the conn underneath: the transport peer
// (transport.PeerOf) and CloseWrite.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// Peer reports the transport identity of the conn underneath.
func (c *prefixConn) Peer() transport.PeerInfo {
	p, _ := transport.PeerOf(c.Conn)
	return p
}

// CloseWrite half-closes the conn underneath; see closeWriter.
func (c *prefixConn) CloseWrite() error {
	if cw, ok := c.Conn.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return errNoHalfClose
}

// connSet tracks live conns so that Close can cut them all.
type connSet struct {
	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{}
}

// add tracks c; it reports false (and closes c) once the set is closed.
func (s *connSet) add(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		_ = c.Close()
		return false
	}
	if s.conns == nil {
		s.conns = make(map[net.Conn]struct{})
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *connSet) remove(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// closeAll closes every tracked conn and refuses new ones.
func (s *connSet) closeAll() {
	s.mu.Lock()
	s.closed = true
	conns := s.conns
	s.conns = nil
	s.mu.Unlock()
	for c := range conns {
		_ = c.Close()
	}
}

// trackedConn leaves its set when closed; handed to callers of Dial.
type trackedConn struct {
	net.Conn
	set  *connSet
	once sync.Once
}

func track(s *connSet, c net.Conn) (net.Conn, bool) {
	tc := &trackedConn{Conn: c, set: s}
	if !s.add(tc) {
		return nil, false
	}
	return tc, true
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.set.remove(c) })
	return err
}

// Peer reports the transport identity of the conn underneath.
func (c *trackedConn) Peer() transport.PeerInfo {
	p, _ := transport.PeerOf(c.Conn)
	return p
}

// CloseWrite half-closes the conn underneath; see closeWriter.
func (c *trackedConn) CloseWrite() error {
	if cw, ok := c.Conn.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return errNoHalfClose
}

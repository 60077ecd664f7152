package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/quic-go/quic-go"
)

var errDraining = errors.New("listener closed")

// quicListener accepts QUIC connections on its own UDP socket and hands out
// every stream the peers open as a conn.
//
// Close drains rather than kills: new connections are refused
// (CONNECTION_REFUSED), clients get a GOAWAY on the control stream, new
// streams are reset, and each connection is closed once the streams already
// accepted on it are closed. The socket goes when the last connection does.
// grpc.Server.GracefulStop depends on this: it closes its listeners before
// it lets the RPCs in flight finish.
type quicListener struct {
	t        *QUIC
	tr       *quic.Transport
	ln       *quic.Listener
	accepted chan net.Conn
	ctx      context.Context // cancelled by shutdown
	cancel   context.CancelFunc

	closing      chan struct{} // closed by Close or shutdown
	closeOnce    sync.Once
	shutdownOnce sync.Once

	mu sync.Mutex
	// guarded by mu:
	draining bool
	conns    map[*quic.Conn]*serverConn
}

// serverConn is one accepted QUIC connection.
type serverConn struct {
	qc     *quic.Conn
	peer   *peerIdent
	active int // accepted streams not yet closed; guarded by quicListener.mu
}

// Listen binds a UDP socket at addr and accepts QUIC connections on it.
// Use "127.0.0.1:0" or ":0" for an ephemeral port; Addr reports the port.
func (t *QUIC) Listen(ctx context.Context, addr string) (Listener, error) {
	if t.cfg.Certificate == nil {
		return nil, fmt.Errorf("%w: Config.Certificate is required to listen", ErrInvalidConfig)
	}
	pc, err := (&net.ListenConfig{}).ListenPacket(ctx, "udp", addr)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("%w: %w", ErrAddrInUse, err)
		}
		return nil, fmt.Errorf("transport: listen %s: %w", addr, err)
	}
	lctx, cancel := context.WithCancel(t.ctx)
	l := &quicListener{
		t: t, ctx: lctx, cancel: cancel,
		accepted: make(chan net.Conn),
		closing:  make(chan struct{}),
		conns:    make(map[*quic.Conn]*serverConn),
	}
	l.tr = &quic.Transport{Conn: pc, ConnContext: l.admitConn, StatelessResetKey: t.resetKey}
	l.ln, err = l.tr.Listen(t.serverTLS, t.quicConf)
	if err != nil {
		cancel()
		_ = pc.Close()
		return nil, fmt.Errorf("transport: listen %s: %w", addr, err)
	}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		l.shutdown()
		return nil, fmt.Errorf("listen %s: %w", addr, ErrClosed)
	}
	t.listeners[l] = struct{}{}
	t.wg.Add(1)
	t.mu.Unlock()
	go l.acceptConns()
	t.log.Debug("listening", "addr", l.Addr())
	return l, nil
}

func (l *quicListener) Addr() net.Addr { return l.tr.Conn.LocalAddr() }

func (l *quicListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.accepted:
		return c, nil
	case <-l.closing:
		return nil, fmt.Errorf("accept: %w", ErrClosed)
	}
}

// Close starts draining (see quicListener). It does not wait.
func (l *quicListener) Close() error {
	if !l.markClosing() {
		return ErrClosed
	}
	l.mu.Lock()
	l.draining = true
	var idle []*quic.Conn
	for qc, sc := range l.conns {
		if sc.active == 0 {
			idle = append(idle, qc)
		}
	}
	empty := len(l.conns) == 0
	l.mu.Unlock()
	for _, qc := range idle {
		_ = qc.CloseWithError(codeOK, "listener closed")
	}
	if empty {
		l.shutdown()
	}
	return nil
}

func (l *quicListener) markClosing() (first bool) {
	l.closeOnce.Do(func() { close(l.closing); first = true })
	return first
}

// shutdown closes everything at once: connections, listener and socket.
func (l *quicListener) shutdown() {
	l.shutdownOnce.Do(func() {
		l.markClosing()
		l.cancel()
		l.mu.Lock()
		l.draining = true
		qcs := make([]*quic.Conn, 0, len(l.conns))
		for qc := range l.conns {
			qcs = append(qcs, qc)
		}
		l.mu.Unlock()
		for _, qc := range qcs {
			_ = qc.CloseWithError(codeShuttingDown, "listener shut down")
		}
		_ = l.ln.Close()
		_ = l.tr.Close()
		_ = l.tr.Conn.Close()
		l.t.mu.Lock()
		delete(l.t.listeners, l)
		l.t.mu.Unlock()
		l.t.log.Debug("listener shut down", "addr", l.Addr())
	})
}

// admitConn refuses new connections once the listener is draining; quic-go
// answers them with CONNECTION_REFUSED, so such dials fail fast.
func (l *quicListener) admitConn(ctx context.Context, _ *quic.ClientInfo) (context.Context, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.draining {
		return nil, errDraining
	}
	return ctx, nil
}

func (l *quicListener) acceptConns() {
	defer l.t.wg.Done()
	for {
		qc, err := l.ln.Accept(l.ctx)
		if err != nil {
			return
		}
		sc := &serverConn{qc: qc, peer: newPeerIdent(qc)}
		l.mu.Lock()
		draining := l.draining
		if !draining {
			l.conns[qc] = sc
			l.t.wg.Add(1)
		}
		l.mu.Unlock()
		if draining {
			_ = qc.CloseWithError(codeRefused, "listener closed")
			continue
		}
		go l.serveConn(sc)
	}
}

// serveConn welcomes the client, then accepts its streams until the
// connection ends.
func (l *quicListener) serveConn(sc *serverConn) {
	defer l.t.wg.Done()
	defer l.dropConn(sc)
	ctrl, err := sc.qc.OpenUniStream()
	if err == nil {
		_, err = ctrl.Write([]byte{ctrlWelcome})
	}
	if err != nil {
		_ = sc.qc.CloseWithError(codeShuttingDown, "control stream failed")
		return
	}
	l.t.log.Debug("accepted connection", "remote", sc.qc.RemoteAddr(), "peer", sc.peer.nodeID)
	l.t.wg.Add(1)
	go func() { // GOAWAY once the listener closes
		defer l.t.wg.Done()
		select {
		case <-l.closing:
			_, _ = ctrl.Write([]byte{ctrlGoAway})
			_ = ctrl.Close()
		case <-sc.qc.Context().Done():
		}
	}()
	for {
		st, err := sc.qc.AcceptStream(l.ctx)
		if err != nil {
			return
		}
		l.t.wg.Add(1)
		go l.admitStream(sc, st)
	}
}

// admitStream reads the stream's preamble and hands it to Accept.
func (l *quicListener) admitStream(sc *serverConn, st *quic.Stream) {
	defer l.t.wg.Done()
	_ = st.SetReadDeadline(time.Now().Add(l.t.cfg.HandshakeTimeout))
	var b [1]byte
	if _, err := io.ReadFull(st, b[:]); err != nil || b[0] != streamPreamble {
		refuseStream(st, codeBadPreamble)
		return
	}
	_ = st.SetReadDeadline(time.Time{})
	l.mu.Lock()
	draining := l.draining
	if !draining {
		sc.active++
	}
	l.mu.Unlock()
	if draining {
		refuseStream(st, codeRefused)
		return
	}
	c := newStreamConn(st, sc.peer, func() { l.release(sc) })
	select {
	case l.accepted <- c:
	case <-l.closing:
		refuseStream(st, codeRefused)
		l.release(sc)
	}
}

func refuseStream(st *quic.Stream, code quic.StreamErrorCode) {
	st.CancelRead(code)
	st.CancelWrite(code)
}

// release is called when an accepted stream is closed; a draining listener
// closes the connection once its last stream is gone.
func (l *quicListener) release(sc *serverConn) {
	l.mu.Lock()
	sc.active--
	idle := l.draining && sc.active == 0
	l.mu.Unlock()
	if idle {
		_ = sc.qc.CloseWithError(codeOK, "listener closed")
	}
}

func (l *quicListener) dropConn(sc *serverConn) {
	l.mu.Lock()
	delete(l.conns, sc.qc)
	done := l.draining && len(l.conns) == 0
	l.mu.Unlock()
	if done {
		l.shutdown()
	}
}

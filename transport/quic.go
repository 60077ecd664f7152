package transport

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
)

// Flow-control windows sized for long fat pipes: 32 MiB per stream covers
// about 1.3 Gbit/s at 200 ms RTT on a single stream; the connection window
// lets four such streams run at once. quic-go grows windows from the initial
// value as the reader keeps up, so idle streams cost nothing.
const (
	initialStreamWindow = 4 << 20
	maxStreamWindow     = 32 << 20
	initialConnWindow   = 8 << 20
	maxConnWindow       = 128 << 20
	maxIncomingStreams  = 10000
	keepAlivePeriod     = 10 * time.Second

	defaultMaxIdleTimeout   = 60 * time.Second
	defaultHandshakeTimeout = 5 * time.Second
)

// Config configures a QUIC transport.
type Config struct {
	// Certificate is this node's certificate and key, signed by the pool's
	// CA (see CA.NewNodeCert); its CommonName is the node id peers see.
	// Required to Listen. A node that has not joined yet may Dial without
	// one, and is then accepted only by listeners with AllowUnauthenticated.
	Certificate *tls.Certificate
	// CA verifies peers: a dialer accepts only servers whose certificate it
	// signed, a listener only such clients. Required, except for a node that
	// is joining and knows only CAPin.
	CA *x509.CertPool
	// CAPin is the SHA-256 of the pool CA's certificate (DER), as a join
	// token carries it. A dialer with CAPin and no CA accepts a server whose
	// chain includes a CA certificate with that hash which signed its leaf
	// (the head sends its CA certificate after its own).
	CAPin []byte
	// AllowUnauthenticated lets clients without a certificate connect (their
	// PeerInfo.NodeID is empty), for the join RPC. A certificate that is
	// presented must still verify.
	AllowUnauthenticated bool
	// MaxIdleTimeout closes a connection that heard nothing from its peer
	// for this long (keep-alives are sent every 10 s). Default 60 s.
	MaxIdleTimeout time.Duration
	// HandshakeTimeout bounds how long a handshake may go without a packet
	// from the peer; a whole connection attempt gets twice as long. It is
	// what a Dial to an address where nobody listens takes to fail.
	// Default 5 s.
	HandshakeTimeout time.Duration
	// ResetKeyFrom is the private key the stateless reset key is derived
	// from (default: Certificate's). A node whose certificate is new with
	// every process (the head's) names a key it keeps (the pool CA's), so
	// that peers learn of its restart from the first packet the new process
	// answers.
	ResetKeyFrom crypto.PrivateKey
	// Logger receives refusals and connection errors. Default slog.Default().
	Logger *slog.Logger
}

// QUIC is a Transport over QUIC (quic-go), authenticated with mutual TLS 1.3.
// It keeps one QUIC connection per dialled address; each Dial opens a new
// stream on it, re-dialling when it has closed. Dials leave from one
// ephemeral UDP socket per QUIC value; each Listen binds its own socket.
type QUIC struct {
	cfg       Config
	log       *slog.Logger
	quicConf  *quic.Config
	serverTLS *tls.Config
	clientTLS *tls.Config

	// resetKey lets a restarted node tell peers, by a stateless reset, that
	// it lost their connections, so they reconnect at once instead of after
	// MaxIdleTimeout. Derived from the node's private key, it survives a
	// restart that keeps the key; nil without a certificate.
	resetKey *quic.StatelessResetKey

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // background goroutines, waited for by Close

	mu sync.Mutex
	// guarded by mu:
	closed    bool
	dialer    *quic.Transport          // lazily bound
	conns     map[string]*clientConn   // the conn new Dials to addr use
	all       map[*clientConn]struct{} // every live client conn, draining ones too
	listeners map[*quicListener]struct{}
}

// clientConn is one dialled QUIC connection; ready is closed once the
// handshake and the server's welcome are through (or failed, see err).
type clientConn struct {
	addr  string
	ready chan struct{}
	qc    *quic.Conn // set before ready is closed, nil if err
	peer  *peerIdent
	err   error
}

// NewQUIC returns a QUIC transport. It binds no socket until Listen or the
// first Dial.
func NewQUIC(cfg Config) (*QUIC, error) {
	if cfg.CA == nil && len(cfg.CAPin) == 0 {
		return nil, fmt.Errorf("%w: Config.CA (or CAPin) is required", ErrInvalidConfig)
	}
	if cfg.MaxIdleTimeout <= 0 {
		cfg.MaxIdleTimeout = defaultMaxIdleTimeout
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = defaultHandshakeTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Logger = cfg.Logger.With("component", "transport")
	ctx, cancel := context.WithCancel(context.Background())
	t := &QUIC{
		cfg: cfg, log: cfg.Logger, ctx: ctx, cancel: cancel,
		conns:     make(map[string]*clientConn),
		all:       make(map[*clientConn]struct{}),
		listeners: make(map[*quicListener]struct{}),
		quicConf: &quic.Config{
			HandshakeIdleTimeout:           cfg.HandshakeTimeout,
			MaxIdleTimeout:                 cfg.MaxIdleTimeout,
			KeepAlivePeriod:                keepAlivePeriod,
			InitialStreamReceiveWindow:     initialStreamWindow,
			MaxStreamReceiveWindow:         maxStreamWindow,
			InitialConnectionReceiveWindow: initialConnWindow,
			MaxConnectionReceiveWindow:     maxConnWindow,
			MaxIncomingStreams:             maxIncomingStreams,
			MaxIncomingUniStreams:          1, // the server's control stream
		},
	}
	t.serverTLS, t.clientTLS = tlsConfigs(&t.cfg)
	switch {
	case cfg.ResetKeyFrom != nil:
		t.resetKey = statelessResetKey(cfg.ResetKeyFrom)
	case cfg.Certificate != nil:
		t.resetKey = statelessResetKey(cfg.Certificate.PrivateKey)
	}
	return t, nil
}

func statelessResetKey(key crypto.PrivateKey) *quic.StatelessResetKey {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil // unusual key type: peers fall back to the idle timeout
	}
	k := quic.StatelessResetKey(sha256.Sum256(append([]byte("gray/1 stateless reset key\x00"), der...)))
	return &k
}

// Dial opens a new stream to addr, connecting first if there is no usable
// connection to addr yet. Concurrent first Dials share one handshake.
func (t *QUIC) Dial(ctx context.Context, addr string) (net.Conn, error) {
	// A cached connection can die between our check and OpenStreamSync
	// (idle timeout, peer restart); one retry on a fresh connection covers it.
	for attempt := 0; ; attempt++ {
		cc, err := t.conn(ctx, addr)
		if err != nil {
			return nil, err
		}
		st, err := cc.qc.OpenStreamSync(ctx)
		if err == nil {
			if _, err = st.Write([]byte{streamPreamble}); err == nil {
				return newStreamConn(st, cc.peer, nil), nil
			}
			st.CancelRead(codeOK)
			st.CancelWrite(codeOK)
		}
		if ctx.Err() != nil {
			return nil, ctxError(addr, ctx.Err())
		}
		t.markDraining(cc)
		if attempt == 1 {
			return nil, dialError(addr, err)
		}
	}
}

// conn returns the connection new streams to addr should use, starting a
// connection attempt if there is none.
func (t *QUIC) conn(ctx context.Context, addr string) (*clientConn, error) {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil, fmt.Errorf("dial %s: %w", addr, ErrClosed)
	}
	cc := t.conns[addr]
	if cc == nil {
		cc = &clientConn{addr: addr, ready: make(chan struct{})}
		t.conns[addr] = cc
		t.all[cc] = struct{}{}
		t.wg.Add(1)
		go t.connect(cc)
	}
	t.mu.Unlock()

	select {
	case <-cc.ready:
		if cc.err != nil {
			return nil, cc.err
		}
		return cc, nil
	case <-ctx.Done():
		return nil, ctxError(addr, ctx.Err())
	}
}

// ctxError reports a dial cut short by the caller's context. A deadline
// means the peer did not answer in time, so it also counts as unreachable.
func ctxError(addr string, err error) error {
	if err == context.DeadlineExceeded {
		return fmt.Errorf("%w: dial %s: %w", ErrUnreachable, addr, err)
	}
	return fmt.Errorf("dial %s: %w", addr, err)
}

// connect dials cc.addr, waits for the server's welcome, then watches the
// control stream until the connection drains or dies. It runs detached from
// any one caller's context, so a caller giving up does not fail the others
// waiting on the same connection.
func (t *QUIC) connect(cc *clientConn) {
	defer t.wg.Done()
	defer t.forget(cc)
	qc, ctrl, err := t.handshake(cc.addr)
	if err != nil && t.ctx.Err() != nil {
		err = ErrClosed
	}
	if err == nil {
		// Publish under mu, so that Close either sees this conn or we see
		// that Close ran during the handshake.
		t.mu.Lock()
		if !t.closed {
			cc.qc, cc.peer = qc, newPeerIdent(qc)
			close(cc.ready)
		}
		t.mu.Unlock()
		if cc.qc == nil {
			_ = qc.CloseWithError(codeShuttingDown, "transport closed")
			err = ErrClosed
		}
	}
	if err != nil {
		cc.err = dialError(cc.addr, err)
		t.markDraining(cc)
		close(cc.ready)
		t.log.Debug("dial failed", "addr", cc.addr, "err", err)
		return
	}
	t.log.Debug("connected", "addr", cc.addr, "peer", cc.peer.nodeID)

	// Any byte (GOAWAY), EOF or error ends the connection's use for new
	// streams; the streams already open run on until the server closes it.
	_, _ = ctrl.Read(make([]byte, 1))
	t.markDraining(cc)
	<-qc.Context().Done()
}

func (t *QUIC) handshake(addr string) (*quic.Conn, *quic.ReceiveStream, error) {
	ctx, cancel := context.WithTimeout(t.ctx, 2*t.cfg.HandshakeTimeout)
	defer cancel()
	tr, err := t.dialTransport()
	if err != nil {
		return nil, nil, err
	}
	udpAddr, err := resolveUDP(ctx, addr)
	if err != nil {
		return nil, nil, err
	}
	qc, err := tr.Dial(ctx, udpAddr, t.clientTLS, t.quicConf)
	if err != nil {
		return nil, nil, err
	}
	ctrl, err := qc.AcceptUniStream(ctx)
	if err == nil {
		b := make([]byte, 1)
		if _, err = ctrl.Read(b); err == nil && b[0] != ctrlWelcome {
			err = fmt.Errorf("unexpected control byte %#x", b[0])
		}
	}
	if err != nil {
		// If the server refused us, quic-go reports that on the connection;
		// prefer it over "context deadline exceeded" or a stream error.
		if cause := context.Cause(qc.Context()); qc.Context().Err() != nil && cause != nil {
			err = cause
		}
		_ = qc.CloseWithError(codeOK, "handshake failed")
		return nil, nil, err
	}
	return qc, ctrl, nil
}

// dialTransport returns the transport all dials leave from, binding its
// ephemeral UDP socket on first use.
func (t *QUIC) dialTransport() (*quic.Transport, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, ErrClosed
	}
	if t.dialer == nil {
		udp, err := net.ListenUDP("udp", &net.UDPAddr{})
		if err != nil {
			return nil, fmt.Errorf("bind dial socket: %w", err)
		}
		t.dialer = &quic.Transport{Conn: udp}
	}
	return t.dialer, nil
}

func resolveUDP(ctx context.Context, addr string) (*net.UDPAddr, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	p, err := net.DefaultResolver.LookupPort(ctx, "udp", port)
	if err != nil {
		return nil, err
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, err
	}
	return net.UDPAddrFromAddrPort(netip.AddrPortFrom(ips[0].Unmap(), uint16(p))), nil
}

// markDraining stops new Dials from using cc.
func (t *QUIC) markDraining(cc *clientConn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.conns[cc.addr] == cc {
		delete(t.conns, cc.addr)
	}
}

func (t *QUIC) forget(cc *clientConn) {
	t.markDraining(cc)
	t.mu.Lock()
	delete(t.all, cc)
	t.mu.Unlock()
}

// Close closes every listener and connection at once (peers see the close
// immediately, not after an idle timeout) and waits for the goroutines of
// this transport to end.
func (t *QUIC) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return ErrClosed
	}
	t.closed = true
	var qcs []*quic.Conn
	for cc := range t.all {
		select {
		case <-cc.ready:
			if cc.qc != nil {
				qcs = append(qcs, cc.qc)
			}
		default: // still dialling; cancelling t.ctx stops it
		}
	}
	lns := make([]*quicListener, 0, len(t.listeners))
	for l := range t.listeners {
		lns = append(lns, l)
	}
	dialer := t.dialer
	t.mu.Unlock()

	t.cancel()
	for _, l := range lns {
		l.shutdown()
	}
	for _, qc := range qcs {
		// quic.Transport.Close drops connections without telling the
		// peer; CloseWithError sends CONNECTION_CLOSE first.
		_ = qc.CloseWithError(codeShuttingDown, "transport closed")
	}
	if dialer != nil {
		_ = dialer.Close()
		_ = dialer.Conn.Close()
	}
	t.wg.Wait()
	return nil
}

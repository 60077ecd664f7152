package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/gray-cluster/gray/internal/testlog"
)

func newTestCA(t *testing.T) *CA {
	t.Helper()
	ca, err := NewCA("gray test CA")
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func nodeCert(t *testing.T, ca *CA, id string) *tls.Certificate {
	t.Helper()
	c, err := ca.NewNodeCert(id)
	if err != nil {
		t.Fatal(err)
	}
	return &c
}

// newTestQUIC returns a QUIC transport with a certificate for id from ca
// (none if id is ""), trusting ca; mod may change the config.
func newTestQUIC(t *testing.T, ca *CA, id string, mod func(*Config)) *QUIC {
	t.Helper()
	cfg := Config{CA: ca.Pool(), HandshakeTimeout: 2 * time.Second, Logger: testlog.New(t)}
	if id != "" {
		cfg.Certificate = nodeCert(t, ca, id)
	}
	if mod != nil {
		mod(&cfg)
	}
	q, err := NewQUIC(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = q.Close() })
	return q
}

// echoServer listens on srv and echoes; accepted conns are also sent on the
// returned channel (buffered, dropped when full).
func echoServer(t *testing.T, ctx context.Context, srv Transport) (Listener, <-chan net.Conn) {
	l := listen(t, ctx, srv, "127.0.0.1:0")
	accepted := make(chan net.Conn, 16)
	serve(t, l, func(c net.Conn) {
		select {
		case accepted <- c:
		default:
		}
		echo(c)
	})
	return l, accepted
}

func TestQUICAuthentication(t *testing.T) {
	t.Parallel()
	ca, otherCA := newTestCA(t), newTestCA(t)
	cases := []struct {
		name      string
		allowAnon bool
		client    func(t *testing.T) *QUIC
		wantErr   error  // nil: accepted
		wantPeer  string // NodeID the server sees
	}{
		{"signed client", false, func(t *testing.T) *QUIC { return newTestQUIC(t, ca, "raylet-1", nil) }, nil, "raylet-1"},
		{"no certificate", false, func(t *testing.T) *QUIC { return newTestQUIC(t, ca, "", nil) }, ErrUnauthenticated, ""},
		{"no certificate, join allowed", true, func(t *testing.T) *QUIC { return newTestQUIC(t, ca, "", nil) }, nil, ""},
		{"other CA", false, func(t *testing.T) *QUIC {
			return newTestQUIC(t, ca, "", func(c *Config) { c.Certificate = nodeCert(t, otherCA, "intruder") })
		}, ErrUnauthenticated, ""},
		{"other CA, join allowed", true, func(t *testing.T) *QUIC {
			return newTestQUIC(t, ca, "", func(c *Config) { c.Certificate = nodeCert(t, otherCA, "intruder") })
		}, ErrUnauthenticated, ""},
		{"server from other CA", false, func(t *testing.T) *QUIC {
			return newTestQUIC(t, otherCA, "raylet-1", nil) // trusts only otherCA
		}, ErrUnauthenticated, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			srv := newTestQUIC(t, ca, "head", func(c *Config) { c.AllowUnauthenticated = tc.allowAnon })
			l, accepted := echoServer(t, ctx, srv)
			c, err := tc.client(t).Dial(ctx, l.Addr().String())
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Dial = %v, want %v", err, tc.wantErr)
				}
				t.Logf("refused as expected: %v", err)
				return
			}
			if err != nil {
				t.Fatalf("Dial: %v", err)
			}
			defer c.Close()
			if err := roundTrip(c, []byte("ping")); err != nil {
				t.Fatal(err)
			}
			sc := <-accepted
			p, _ := PeerOf(sc)
			if p.NodeID != tc.wantPeer {
				t.Errorf("server sees NodeID %q, want %q", p.NodeID, tc.wantPeer)
			}
			if (p.Certificate != nil) != (tc.wantPeer != "") {
				t.Errorf("server sees certificate %v for peer %q", p.Certificate != nil, tc.wantPeer)
			}
			if cp, _ := PeerOf(c); cp.NodeID != "head" || cp.Certificate == nil || cp.RTT <= 0 {
				t.Errorf("client sees %+v, want NodeID head with certificate and RTT", cp)
			}
		})
	}
}

func TestQUICConfigErrors(t *testing.T) {
	t.Parallel()
	if _, err := NewQUIC(Config{}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("NewQUIC without CA = %v, want ErrInvalidConfig", err)
	}
	q := newTestQUIC(t, newTestCA(t), "", nil)
	if _, err := q.Listen(testCtx(t), "127.0.0.1:0"); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("Listen without certificate = %v, want ErrInvalidConfig", err)
	}
	ca := newTestCA(t)
	a, b := newTestQUIC(t, ca, "a", nil), newTestQUIC(t, ca, "b", nil)
	l := listen(t, testCtx(t), a, "127.0.0.1:0")
	if _, err := b.Listen(testCtx(t), l.Addr().String()); !errors.Is(err, ErrAddrInUse) {
		t.Errorf("Listen on a bound port = %v, want ErrAddrInUse", err)
	}
}

// Dials to one address share one QUIC connection, and a new one is made
// when it has closed.
func TestQUICConnectionReuse(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	ca := newTestCA(t)
	srv, cli := newTestQUIC(t, ca, "head", nil), newTestQUIC(t, ca, "raylet", nil)
	l, _ := echoServer(t, ctx, srv)
	addr := l.Addr().String()
	for range 10 {
		c := dial(t, ctx, cli, addr)
		if err := roundTrip(c, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	ql := l.(*quicListener)
	ql.mu.Lock()
	n := len(ql.conns)
	var server *quic.Conn
	for qc := range ql.conns {
		server = qc
	}
	ql.mu.Unlock()
	if n != 1 {
		t.Fatalf("server has %d connections from one client, want 1", n)
	}

	cli.mu.Lock()
	client := cli.conns[addr].qc
	cli.mu.Unlock()
	_ = server.CloseWithError(0, "test: drop connection")
	select {
	case <-client.Context().Done():
	case <-ctx.Done():
		t.Fatal("client did not see the connection close")
	}
	c := dial(t, ctx, cli, addr)
	if err := roundTrip(c, []byte("after reconnect")); err != nil {
		t.Fatal(err)
	}
}

// While a listener drains, new connections are refused at once with
// CONNECTION_REFUSED, rather than timing out.
func TestQUICDrainingListenerRefuses(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	ca := newTestCA(t)
	srv := newTestQUIC(t, ca, "head", nil)
	l, _ := echoServer(t, ctx, srv)
	c := dial(t, ctx, newTestQUIC(t, ca, "a", nil), l.Addr().String())
	if err := roundTrip(c, []byte("x")); err != nil {
		t.Fatal(err)
	}
	_ = l.Close()

	_, err := newTestQUIC(t, ca, "b", nil).Dial(ctx, l.Addr().String())
	if !errors.Is(err, ErrUnreachable) {
		t.Fatalf("Dial to draining listener = %v, want ErrUnreachable", err)
	}
	if te, ok := errors.AsType[*quic.TransportError](err); !ok || te.ErrorCode != quic.ConnectionRefused {
		t.Errorf("Dial to draining listener = %v, want CONNECTION_REFUSED", err)
	}
	if err := roundTrip(c, []byte("still draining")); err != nil {
		t.Fatal(err)
	}
	_ = c.Close()
	select {
	case <-l.(*quicListener).ctx.Done(): // socket released after the last stream
	case <-ctx.Done():
		t.Fatal("listener did not shut down after its last stream closed")
	}
}

// A peer that opens a stream and writes garbage gets the stream reset; the
// listener carries on.
func TestQUICBadPreamble(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	ca := newTestCA(t)
	srv, cli := newTestQUIC(t, ca, "head", nil), newTestQUIC(t, ca, "raylet", nil)
	l, _ := echoServer(t, ctx, srv)
	cc, err := cli.conn(ctx, l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	st, err := cc.qc.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = st.Write([]byte("GET / HTTP/1.1\r\n"))
	_, err = io.ReadAll(st)
	if se, ok := errors.AsType[*quic.StreamError](err); !ok || se.ErrorCode != codeBadPreamble {
		t.Fatalf("read on bad stream = %v, want reset with codeBadPreamble", err)
	}
	c := dial(t, ctx, cli, l.Addr().String())
	if err := roundTrip(c, []byte("still serving")); err != nil {
		t.Fatal(err)
	}
}

// A Write blocked on flow control is released by Close from another
// goroutine (net.Conn allows that; quic-go's Stream.Close alone does not).
func TestQUICCloseUnblocksWrite(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	ca := newTestCA(t)
	srv, cli := newTestQUIC(t, ca, "head", nil), newTestQUIC(t, ca, "raylet", nil)
	l := listen(t, ctx, srv, "127.0.0.1:0")
	serve(t, l, func(c net.Conn) { <-ctx.Done() }) // never reads
	c, err := cli.Dial(ctx, l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(make([]byte, 256<<20)) // far beyond the windows
		werr <- err
	}()
	_ = c.Close()
	select {
	case err := <-werr:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Write after Close = %v, want net.ErrClosed", err)
		}
	case <-ctx.Done():
		t.Fatal("Write still blocked after Close")
	}
}

// CloseWrite half-closes a stream: the peer reads io.EOF after the data,
// and can still answer on the other direction.
func TestQUICCloseWrite(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	ca := newTestCA(t)
	srv, cli := newTestQUIC(t, ca, "head", nil), newTestQUIC(t, ca, "raylet", nil)
	l := listen(t, ctx, srv, "127.0.0.1:0")
	serve(t, l, func(c net.Conn) {
		got, err := io.ReadAll(c) // until the client's FIN
		if err != nil {
			t.Errorf("server ReadAll: %v", err)
			return
		}
		_, _ = c.Write(append([]byte("got "), got...))
	})
	c := dial(t, ctx, cli, l.Addr().String())
	if _, err := c.Write([]byte("request")); err != nil {
		t.Fatal(err)
	}
	cw, ok := c.(interface{ CloseWrite() error })
	if !ok {
		t.Fatal("QUIC conn has no CloseWrite")
	}
	if err := cw.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	reply, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if string(reply) != "got request" {
		t.Fatalf("reply %q, want %q", reply, "got request")
	}
	if _, err := c.Write([]byte("more")); err == nil {
		t.Error("Write after CloseWrite succeeded")
	}
}

// A node that crashes and comes back on the same address with the same key
// answers its old connections with a stateless reset, so peers notice at once
// (not after MaxIdleTimeout) and the next Dial reconnects.
func TestQUICPeerRestart(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	ca := newTestCA(t)
	cert := nodeCert(t, ca, "head")
	withCert := func(c *Config) { c.Certificate = cert }
	old := newTestQUIC(t, ca, "", withCert)
	l, _ := echoServer(t, ctx, old)
	addr := l.Addr().String()
	cli := newTestQUIC(t, ca, "raylet", nil)
	c := dial(t, ctx, cli, addr)
	if err := roundTrip(c, []byte("before")); err != nil {
		t.Fatal(err)
	}

	// Crash: the socket goes away and the peer is told nothing.
	_ = l.(*quicListener).tr.Conn.Close()
	restarted := newTestQUIC(t, ca, "", withCert)
	serve(t, listen(t, ctx, restarted, addr), echo)

	_ = c.SetDeadline(time.Now().Add(testTimeout / 2)) // well below MaxIdleTimeout
	// quic-go answers only packets over 42 bytes with a reset (a reset must
	// be smaller than what triggered it), so send more than a ping's worth.
	err := roundTrip(c, make([]byte, 1024))
	if _, ok := errors.AsType[*quic.StatelessResetError](err); !ok {
		t.Fatalf("round trip on a connection to a restarted peer = %v, want a stateless reset", err)
	}
	cli.mu.Lock()
	stale := cli.conns[addr]
	cli.mu.Unlock()
	if stale != nil {
		select {
		case <-stale.qc.Context().Done():
		case <-ctx.Done():
			t.Fatal("stale connection still open")
		}
	}
	if err := roundTrip(dial(t, ctx, cli, addr), []byte("after restart")); err != nil {
		t.Fatal(err)
	}
}

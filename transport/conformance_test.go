package transport

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"
)

// env is a server and a client transport that can reach each other.
type env struct {
	server, client     Transport
	listenAddr         string // what the server passes to Listen
	serverID, clientID string
}

// impl builds an env for one implementation; the suite below runs on each.
type impl struct {
	name string
	new  func(t *testing.T) env
}

var impls = []impl{
	{"mem", newMemEnv},
	{"quic", newQUICEnv},
}

func newMemEnv(t *testing.T) env {
	n := NewNetwork()
	srv, cli := n.NewTransport("10.0.0.1", "server"), n.NewTransport("10.0.0.2", "client")
	t.Cleanup(func() { _ = srv.Close(); _ = cli.Close() })
	return env{server: srv, client: cli, listenAddr: "", serverID: "server", clientID: "client"}
}

func newQUICEnv(t *testing.T) env {
	ca := newTestCA(t)
	srv := newTestQUIC(t, ca, "server", nil)
	cli := newTestQUIC(t, ca, "client", nil)
	return env{server: srv, client: cli, listenAddr: "127.0.0.1:0", serverID: "server", clientID: "client"}
}

func TestConformance(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		run  func(t *testing.T, e env)
	}{
		{"EchoManyStreams", testEchoManyStreams},
		{"LargeTransfer", testLargeTransfer},
		{"ServerSpeaksFirst", testServerSpeaksFirst},
		{"DialClosedListener", testDialClosedListener},
		{"ListenerCloseKeepsAcceptedConns", testListenerCloseKeepsConns},
		{"CloseUnblocksPeerRead", testCloseUnblocksPeerRead},
		{"TransportCloseBreaksConns", testTransportCloseBreaksConns},
		{"ClosedTransport", testClosedTransport},
		{"PeerIdentity", testPeerIdentity},
	}
	for _, im := range impls {
		t.Run(im.name, func(t *testing.T) {
			t.Parallel()
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					t.Parallel()
					tc.run(t, im.new(t))
				})
			}
		})
	}
}

func testEchoManyStreams(t *testing.T, e env) {
	ctx := testCtx(t)
	l := listen(t, ctx, e.server, e.listenAddr)
	serve(t, l, echo)

	const streams, msgs = 64, 16
	var wg sync.WaitGroup
	errs := make(chan error, streams)
	for i := range streams {
		wg.Go(func() {
			c, err := e.client.Dial(ctx, l.Addr().String())
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			rng := rand.New(rand.NewPCG(uint64(i), 1))
			for j := range msgs {
				msg := make([]byte, 1+rng.IntN(32<<10))
				for k := range msg {
					msg[k] = byte(i + j + k)
				}
				if err := roundTrip(c, msg); err != nil {
					errs <- fmt.Errorf("stream %d msg %d: %w", i, j, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// testLargeTransfer sends 64 MiB one way; the server answers with the
// SHA-256 of what it read.
func testLargeTransfer(t *testing.T, e env) {
	ctx := testCtx(t)
	const size = 64 << 20
	l := listen(t, ctx, e.server, e.listenAddr)
	serve(t, l, func(c net.Conn) {
		h := sha256.New()
		if _, err := io.CopyN(h, c, size); err != nil {
			t.Errorf("server read: %v", err)
			return
		}
		_, _ = c.Write(h.Sum(nil))
		_, _ = io.Copy(io.Discard, c) // until the client closes
	})

	data := make([]byte, size)
	_, _ = rand.NewChaCha8([32]byte{1}).Read(data)
	want := sha256.Sum256(data)

	c := dial(t, ctx, e.client, l.Addr().String())
	if deadline, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(deadline)
	}
	start := time.Now()
	if _, err := c.Write(data); err != nil {
		t.Fatalf("Write: %v", err)
	}
	var got [sha256.Size]byte
	if _, err := io.ReadFull(c, got[:]); err != nil {
		t.Fatalf("read digest: %v", err)
	}
	elapsed := time.Since(start)
	if got != want {
		t.Fatalf("digest mismatch")
	}
	p, _ := PeerOf(c)
	t.Logf("64 MiB in %v: %.0f MiB/s (%.2f Gbit/s), rtt %v", elapsed.Round(time.Millisecond),
		float64(size)/(1<<20)/elapsed.Seconds(), float64(size)*8/1e9/elapsed.Seconds(), p.RTT)
}

func testServerSpeaksFirst(t *testing.T, e env) {
	ctx := testCtx(t)
	l := listen(t, ctx, e.server, e.listenAddr)
	serve(t, l, func(c net.Conn) {
		_, _ = c.Write([]byte("hello"))
		_, _ = io.Copy(io.Discard, c)
	})
	c := dial(t, ctx, e.client, l.Addr().String())
	got := make([]byte, 5)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "hello" {
		t.Fatalf("read greeting = %q, %v", got, err)
	}
}

func testDialClosedListener(t *testing.T, e env) {
	ctx := testCtx(t)
	l, err := e.server.Listen(ctx, e.listenAddr)
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := l.Close(); !errors.Is(err, ErrClosed) {
		t.Errorf("second Close = %v, want ErrClosed", err)
	}
	_, err = e.client.Dial(ctx, addr)
	if !errors.Is(err, ErrUnreachable) {
		t.Fatalf("Dial to closed listener = %v, want ErrUnreachable", err)
	}
}

func testListenerCloseKeepsConns(t *testing.T, e env) {
	ctx := testCtx(t)
	l := listen(t, ctx, e.server, e.listenAddr)
	serve(t, l, echo)
	addr := l.Addr().String()
	c := dial(t, ctx, e.client, addr)
	if err := roundTrip(c, []byte("before")); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := roundTrip(c, []byte("after close, still up")); err != nil {
		t.Fatalf("accepted conn broke when its listener closed: %v", err)
	}
	dialFails(t, ctx, e.client, addr)
	_ = c.Close()
	dialFails(t, ctx, e.client, addr)
}

func testCloseUnblocksPeerRead(t *testing.T, e env) {
	ctx := testCtx(t)
	l := listen(t, ctx, e.server, e.listenAddr)
	serverRead := make(chan error, 1)
	serve(t, l, func(c net.Conn) {
		_, err := c.Read(make([]byte, 1))
		serverRead <- err
	})

	// Client closes: the server's Read ends.
	c := dial(t, ctx, e.client, l.Addr().String())
	_ = c.Close()
	select {
	case err := <-serverRead:
		if err == nil {
			t.Fatal("server Read returned no error after the client closed")
		}
	case <-ctx.Done():
		t.Fatal("server Read still blocked after the client closed")
	}
	if err := c.Close(); err == nil {
		t.Error("second Close returned nil")
	}

	// Server closes (the handler returns): the client's Read gets io.EOF.
	c2 := dial(t, ctx, e.client, l.Addr().String())
	if _, err := c2.Write([]byte{1}); err != nil {
		t.Fatal(err)
	}
	<-serverRead
	if _, err := c2.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("client Read after server close = %v, want io.EOF", err)
	}
}

func testTransportCloseBreaksConns(t *testing.T, e env) {
	ctx := testCtx(t)
	l := listen(t, ctx, e.server, e.listenAddr)
	accepted, serverRead := make(chan struct{}), make(chan error, 1)
	serve(t, l, func(c net.Conn) {
		close(accepted)
		_, err := io.Copy(io.Discard, c)
		if err == nil {
			err = io.EOF
		}
		serverRead <- err
	})
	c := dial(t, ctx, e.client, l.Addr().String())
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-accepted:
	case <-ctx.Done():
		t.Fatal("no conn accepted")
	}
	if err := e.client.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-serverRead: // the peer learnt at once, not after an idle timeout
	case <-ctx.Done():
		t.Fatal("server conn still open after the client transport closed")
	}
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("Read on a conn of a closed transport succeeded")
	}
}

func testClosedTransport(t *testing.T, e env) {
	ctx := testCtx(t)
	l := listen(t, ctx, e.server, e.listenAddr)
	if err := e.client.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.client.Close(); !errors.Is(err, ErrClosed) {
		t.Errorf("second Close = %v, want ErrClosed", err)
	}
	if _, err := e.client.Dial(ctx, l.Addr().String()); !errors.Is(err, ErrClosed) {
		t.Errorf("Dial after Close = %v, want ErrClosed", err)
	}
	if err := e.server.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Accept(); !errors.Is(err, ErrClosed) || !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after transport Close = %v, want ErrClosed and net.ErrClosed", err)
	}
	if _, err := e.server.Listen(ctx, e.listenAddr); !errors.Is(err, ErrClosed) {
		t.Errorf("Listen after Close = %v, want ErrClosed", err)
	}
}

func testPeerIdentity(t *testing.T, e env) {
	ctx := testCtx(t)
	l := listen(t, ctx, e.server, e.listenAddr)
	accepted := make(chan net.Conn, 1)
	serve(t, l, func(c net.Conn) {
		accepted <- c
		_, _ = io.Copy(io.Discard, c)
	})
	c := dial(t, ctx, e.client, l.Addr().String())
	check := func(side string, c net.Conn, want string) {
		p, ok := PeerOf(c)
		if !ok || p.NodeID != want {
			t.Errorf("%s: PeerOf = %+v, %v; want NodeID %q", side, p, ok, want)
		}
		a, ok := c.RemoteAddr().(peerer)
		if !ok || a.Peer().NodeID != want {
			t.Errorf("%s: RemoteAddr %v does not carry the peer %q", side, c.RemoteAddr(), want)
		}
	}
	check("client", c, e.serverID)
	select {
	case sc := <-accepted:
		check("server", sc, e.clientID)
		if sc.RemoteAddr().String() == "" || sc.LocalAddr().String() == "" {
			t.Errorf("empty addresses: local %v remote %v", sc.LocalAddr(), sc.RemoteAddr())
		}
	case <-ctx.Done():
		t.Fatal("no conn accepted")
	}
	foreign, other := net.Pipe()
	defer foreign.Close()
	defer other.Close()
	if _, ok := PeerOf(foreign); ok {
		t.Error("PeerOf reported a peer for a foreign conn")
	}
}

package tunnel

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/gray-cluster/gray/transport"
)

// checkHealth makes a gRPC health call to the head's node port: gRPC
// streams still pass the Mux.
func checkHealth(t *testing.T, ctx context.Context, c *cluster, tr transport.Transport) {
	t.Helper()
	cc, err := transport.NewClient(tr, c.headAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatalf("health check through the mux: %v", err)
	}
	if resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health = %v", resp.Status)
	}
}

// rawListen plays a provider's agent by hand: a listen stream from tr, whose
// open records come out of the returned channel (pings are dropped).
func rawListen(t *testing.T, ctx context.Context, c *cluster, tr transport.Transport, node string) (net.Conn, <-chan header) {
	t.Helper()
	listen := rawStream(t, ctx, tr, c.headAddr, header{op: opListen}.streamHeader())
	if err := readStatus(listen); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, node+" listening", func() bool { return c.hub.Connected(node) })
	opens := make(chan header, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			rec, err := readFrame(listen)
			if err != nil {
				return
			}
			if rec.op == opOpen {
				opens <- rec
			}
		}
	}()
	t.Cleanup(func() {
		_ = listen.Close()
		<-done
	})
	return listen, opens
}

// Malformed stream headers are answered with ErrBadRequest and closed;
// the hub, the agents and gRPC keep working.
func TestMalformedHeader(t *testing.T) {
	t.Parallel()
	eachKind(t, func(t *testing.T, kind string) {
		ctx := testCtx(t)
		c := newCluster(t, kind, clusterOpts{})
		a := c.provs[nodeA]
		bad := map[string][]byte{
			"short frame":    append([]byte(Magic), 0, 3, opDial, 0, 0),
			"huge frame":     append([]byte(Magic), 0xff, 0xff),
			"unknown op":     append([]byte(Magic), header{op: 99}.frame()...),
			"bad target":     header{op: opDial, target: "nohost"}.streamHeader(),
			"listen+target":  header{op: opListen, target: "1.2.3.4:5"}.streamHeader(),
			"open as stream": header{op: opOpen, target: "1.2.3.4:5"}.streamHeader(),
		}
		for name, b := range bad {
			s := rawStream(t, ctx, a.tr, c.headAddr, b)
			err := readStatus(s)
			if !errors.Is(err, ErrBadRequest) {
				t.Errorf("%s: status %v, want ErrBadRequest", name, err)
			}
			if _, err := io.Copy(io.Discard, s); err != nil && !isClosedErr(err) {
				t.Logf("%s: stream ended with %v", name, err)
			}
		}
		checkHealth(t, ctx, c, a.tr)
		conn, err := a.agent.Dial(ctx, echoServer(t, vipB))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if err := roundTrip(conn, []byte("fine")); err != nil {
			t.Fatal(err)
		}
	})
}

func isClosedErr(err error) bool { return errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) }

// A back stream for an id the hub never asked, or asked of another node,
// is refused; the real answer still gets through.
func TestBackStreamRefused(t *testing.T) {
	t.Parallel()
	eachKind(t, func(t *testing.T, kind string) {
		ctx := testCtx(t)
		c := newCluster(t, kind, clusterOpts{noAgents: true})
		a, b := c.provs[nodeA], c.provs[nodeB]
		okStatus := []byte{stOK, 0, 0}

		s := rawStream(t, ctx, a.tr, c.headAddr, append(header{op: opBack, id: 12345}.streamHeader(), okStatus...))
		if err := readStatus(s); !errors.Is(err, ErrRefused) {
			t.Fatalf("back stream with an id never asked: %v, want ErrRefused", err)
		}

		// B plays its agent by hand: a listen stream, then the open.
		_, opens := rawListen(t, ctx, c, b.tr, nodeB)
		type dialResult struct {
			conn net.Conn
			err  error
		}
		res := make(chan dialResult, 1)
		go func() {
			conn, err := c.hub.Dial(ctx, vipB+":7000")
			res <- dialResult{conn, err}
		}()
		open := <-opens
		if open.target != vipB+":7000" {
			t.Fatalf("open target %q", open.target)
		}
		// A answers B's open: refused, it was not asked of A.
		s = rawStream(t, ctx, a.tr, c.headAddr, append(header{op: opBack, id: open.id}.streamHeader(), okStatus...))
		if err := readStatus(s); !errors.Is(err, ErrRefused) {
			t.Fatalf("back stream from the wrong node: %v, want ErrRefused", err)
		}
		// B's answer is accepted and carries bytes.
		back := rawStream(t, ctx, b.tr, c.headAddr, append(header{op: opBack, id: open.id}.streamHeader(), okStatus...))
		if err := readStatus(back); err != nil {
			t.Fatalf("B's back stream: %v", err)
		}
		r := <-res
		if r.err != nil {
			t.Fatalf("hub.Dial: %v", r.err)
		}
		defer r.conn.Close()
		go func() { _, _ = r.conn.Write([]byte("over the back stream")) }()
		got := make([]byte, len("over the back stream"))
		if _, err := io.ReadFull(back, got); err != nil || string(got) != "over the back stream" {
			t.Fatalf("read %q, %v", got, err)
		}
		// Answering the same id twice is refused too.
		s = rawStream(t, ctx, b.tr, c.headAddr, append(header{op: opBack, id: open.id}.streamHeader(), okStatus...))
		if err := readStatus(s); !errors.Is(err, ErrRefused) {
			t.Fatalf("second back stream for one open: %v, want ErrRefused", err)
		}
	})
}

// Opens fail with ErrTimeout when the provider never answers, and with
// ErrNoRoute when its listen stream drops while they wait.
func TestOpenFailures(t *testing.T) {
	t.Parallel()
	eachKind(t, func(t *testing.T, kind string) {
		ctx := testCtx(t)
		c := newCluster(t, kind, clusterOpts{noAgents: true, hub: func(cfg *HubConfig) { cfg.OpenTimeout = 200 * time.Millisecond }})
		b := c.provs[nodeB]
		rawListen(t, ctx, c, b.tr, nodeB)
		if _, err := c.hub.Dial(ctx, vipB+":7000"); !errors.Is(err, ErrTimeout) {
			t.Fatalf("unanswered open: %v, want ErrTimeout", err)
		}

		c2 := newCluster(t, kind, clusterOpts{noAgents: true})
		b = c2.provs[nodeB]
		listen, opens := rawListen(t, ctx, c2, b.tr, nodeB)
		errc := make(chan error, 1)
		go func() {
			_, err := c2.hub.Dial(ctx, vipB+":7000")
			errc <- err
		}()
		<-opens
		_ = listen.Close()
		if err := <-errc; !errors.Is(err, ErrNoRoute) {
			t.Fatalf("open when the listen stream dropped: %v, want ErrNoRoute", err)
		}
	})
}

// Peers without a certificate (the head lets them join) may not use
// tunnels.
func TestUnauthenticatedRefused(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	c := newCluster(t, "mem", clusterOpts{})
	anon := c.newTr(t, "")
	for _, op := range []header{{op: opDial, target: "127.0.0.1:80"}, {op: opListen}} {
		s := rawStream(t, ctx, anon, c.headAddr, op.streamHeader())
		if err := readStatus(s); !errors.Is(err, ErrRefused) {
			t.Errorf("op %d from an anonymous peer: %v, want ErrRefused", op.op, err)
		}
	}
	ag := NewAgent(anon, c.headAddr, AgentConfig{})
	defer ag.Close()
	if _, err := ag.Dial(ctx, echoServer(t, vipA)); !errors.Is(err, ErrRefused) {
		t.Errorf("anonymous Agent.Dial: %v, want ErrRefused", err)
	}
}

// A peer that opens a stream and sends nothing (or half the magic) does not
// hold up gRPC, and is dropped after the peek timeout.
func TestMuxSlowPeer(t *testing.T) {
	t.Parallel()
	eachKind(t, func(t *testing.T, kind string) {
		ctx := testCtx(t)
		c := newCluster(t, kind, clusterOpts{peekDelay: 300 * time.Millisecond})
		a := c.provs[nodeA]
		silent := rawStream(t, ctx, a.tr, c.headAddr, []byte(Magic[:3]))
		checkHealth(t, ctx, c, a.tr)
		if _, err := io.Copy(io.Discard, silent); err != nil && !isClosedErr(err) {
			t.Logf("silent stream ended with %v", err)
		}
		// Garbage that is not gRPC reaches the gRPC server, which drops it.
		junk := rawStream(t, ctx, a.tr, c.headAddr, []byte("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")) // longer than the preface
		_, _ = io.Copy(io.Discard, junk)
		checkHealth(t, ctx, c, a.tr)
	})
}

package tunnel

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/gray-cluster/gray/internal/testlog"
	"github.com/gray-cluster/gray/transport"
)

// testTimeout bounds every test; nothing waits on a clock below it, the
// tests wait on events.
const testTimeout = 90 * time.Second

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// Virtual IPs of the two test providers; all of 127/8 is local on Linux.
const (
	vipA  = "127.64.0.2"
	vipB  = "127.64.0.3"
	nodeA = "node-a"
	nodeB = "node-b"
	// notOwned resolves to node A but is not among A's hosts.
	notOwned = "127.99.0.1"
)

// kinds are the transports every end-to-end test runs on.
var kinds = []string{"mem", "quic"}

// cluster is a head with a hub behind a Mux (and a gRPC health server on
// the same listener), and providers A and B with agents.
type cluster struct {
	kind     string
	headTr   transport.Transport
	headAddr string
	hub      *Hub
	mux      *MuxListener
	health   *health.Server
	provs    map[string]*prov // by node id
	net      *transport.Network
	ca       *transport.CA
	newTr    func(t testing.TB, nodeID string) transport.Transport
}

// prov is one provider: its transport, agent, and a count of its local
// dials (the proof that a conn went through it).
type prov struct {
	node, vip, host string
	tr              transport.Transport
	agent           *Agent
	dials           atomic.Int64
	// direct path (clusterOpts.direct): the peer transport and listener,
	// and a count of the direct streams it served.
	peerTr   transport.Transport
	peerAddr string
	direct   atomic.Int64
}

type clusterOpts struct {
	hub       func(*HubConfig)
	direct    bool // providers dial each other directly (peer listeners)
	noAgents  bool // providers' agents are created but not started
	peekDelay time.Duration
}

func newCluster(t testing.TB, kind string, o clusterOpts) *cluster {
	t.Helper()
	ctx := testCtx(t)
	c := &cluster{kind: kind, provs: make(map[string]*prov)}
	var listenAddr string
	switch kind {
	case "mem":
		c.net = transport.NewNetwork()
		c.newTr = func(t testing.TB, nodeID string) transport.Transport {
			tr := c.net.NewTransport("host-"+nodeID, nodeID)
			t.Cleanup(func() { _ = tr.Close() })
			return tr
		}
		c.headTr = c.newTr(t, "head")
	case "quic":
		ca, err := transport.NewCA("tunnel test CA")
		if err != nil {
			t.Fatal(err)
		}
		c.ca = ca
		c.newTr = func(t testing.TB, nodeID string) transport.Transport {
			cfg := transport.Config{CA: ca.Pool(), HandshakeTimeout: 2 * time.Second, Logger: testlog.New(t)}
			if nodeID != "" {
				cert, err := ca.NewNodeCert(nodeID)
				if err != nil {
					t.Fatal(err)
				}
				cfg.Certificate = &cert
			}
			tr, err := transport.NewQUIC(cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = tr.Close() })
			return tr
		}
		c.headTr = c.newTr(t, "head")
		listenAddr = "127.0.0.1:0"
	}
	l, err := c.headTr.Listen(ctx, listenAddr)
	if err != nil {
		t.Fatal(err)
	}
	c.headAddr = l.Addr().String()

	cfg := HubConfig{
		Resolve: func(host string) (string, bool) {
			switch host {
			case "127.0.0.1":
				return "", true
			case vipA, notOwned:
				return nodeA, true
			case vipB:
				return nodeB, true
			}
			return "", false
		},
		PingInterval: 50 * time.Millisecond, // pings exercised in every test
		Logger:       testlog.New(t),
	}
	if o.hub != nil {
		o.hub(&cfg)
	}
	c.hub = NewHub(cfg)
	t.Cleanup(func() { _ = c.hub.Close() })
	c.mux = Mux(l, c.hub.Handle, o.peekDelay)
	g := grpc.NewServer()
	c.health = health.NewServer()
	healthpb.RegisterHealthServer(g, c.health)
	var wg sync.WaitGroup
	wg.Go(func() { _ = g.Serve(c.mux) })
	t.Cleanup(func() {
		g.Stop() // closes the mux
		wg.Wait()
	})

	for _, p := range []*prov{{node: nodeA, vip: vipA}, {node: nodeB, vip: vipB}} {
		p.tr = c.newTr(t, p.node)
		acfg := AgentConfig{
			Hosts: []string{p.vip},
			DialLocal: func(ctx context.Context, network, addr string) (net.Conn, error) {
				p.dials.Add(1)
				return (&net.Dialer{}).DialContext(ctx, network, addr)
			},
			IdleTimeout: 30 * time.Second,
			MinBackoff:  5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
			Logger: testlog.New(t),
		}
		if o.direct {
			p.peerTr = c.newTr(t, p.node)
			acfg.DirectTransport = p.peerTr
			acfg.DirectAllow = func(string, string) bool { return true }
		}
		p.agent = NewAgent(p.tr, c.headAddr, acfg)
		t.Cleanup(func() { _ = p.agent.Close() })
		if o.direct {
			pl, err := p.peerTr.Listen(ctx, listenAddr)
			if err != nil {
				t.Fatal(err)
			}
			p.peerAddr = pl.Addr().String()
			pm := Mux(pl, func(conn net.Conn) { p.direct.Add(1); p.agent.HandleDirect(conn) }, 0)
			t.Cleanup(func() { _ = pm.Close() })
		}
		c.provs[p.node] = p
		if !o.noAgents {
			if err := p.agent.Start(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	if !o.noAgents {
		for _, p := range c.provs {
			if err := p.agent.WaitReady(ctx); err != nil {
				t.Fatal(err)
			}
			waitFor(t, ctx, "hub sees "+p.node, func() bool { return c.hub.Connected(p.node) })
		}
	}
	return c
}

// waitFor polls cond until it holds.
func waitFor(t testing.TB, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting: %s", what)
		case <-tick.C:
		}
	}
}

// echoServer listens on host:0 and echoes each conn, half-closing after
// the client's EOF. It returns "host:port".
func echoServer(t testing.TB, host string) string {
	t.Helper()
	return tcpServer(t, host, func(c *net.TCPConn) {
		_, _ = io.Copy(c, c)
		_ = c.CloseWrite()
	})
}

// tcpServer runs handle for each conn accepted on host:0 until cleanup,
// which closes the listener and the conns and waits for the handlers.
func tcpServer(t testing.TB, host string, handle func(*net.TCPConn)) string {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var conns connSet
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			if !conns.add(c) {
				continue
			}
			wg.Go(func() {
				defer conns.remove(c)
				defer c.Close()
				handle(c.(*net.TCPConn))
			})
		}
	})
	t.Cleanup(func() {
		_ = l.Close()
		conns.closeAll()
		wg.Wait()
	})
	return l.Addr().String()
}

// closedPort returns host:port where nothing listens.
func closedPort(t *testing.T, host string) string {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}

// roundTrip writes msg and reads it back, concurrently (Mem's pipes do not
// buffer).
func roundTrip(c net.Conn, msg []byte) error {
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(msg)
		errc <- err
	}()
	got := make([]byte, len(msg))
	_, rerr := io.ReadFull(c, got)
	if werr := <-errc; werr != nil {
		return werr
	}
	if rerr != nil {
		return rerr
	}
	if !bytes.Equal(got, msg) {
		return errors.New("echo mismatch")
	}
	return nil
}

// rawStream dials the head on tr and sends b (a raw tunnel header).
func rawStream(t *testing.T, ctx context.Context, tr transport.Transport, addr string, b []byte) net.Conn {
	t.Helper()
	c, err := tr.Dial(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if d, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(d)
	}
	go func() { _, _ = c.Write(b) }() // Mem's pipes do not buffer
	return c
}

package tunnel

import (
	"context"
	"errors"
	"sync"
	"testing"
)

// peerTable is the hub's Peer config over a table tests change.
type peerTable struct {
	mu    sync.Mutex
	addrs map[string][2]string // host -> node id, peer address
}

func (pt *peerTable) set(host, node, addr string) {
	pt.mu.Lock()
	defer pt.mu.Unlock()
	pt.addrs[host] = [2]string{node, addr}
}

func (pt *peerTable) peer(host string) (string, string, bool) {
	pt.mu.Lock()
	defer pt.mu.Unlock()
	e, ok := pt.addrs[host]
	return e[0], e[1], ok
}

func directCluster(t *testing.T, kind string) (*cluster, *peerTable) {
	pt := &peerTable{addrs: map[string][2]string{}}
	c := newCluster(t, kind, clusterOpts{direct: true, hub: func(h *HubConfig) { h.Peer = pt.peer }})
	for _, p := range c.provs {
		pt.set(p.vip, p.node, p.peerAddr)
	}
	return c, pt
}

// dialEcho dials target through agent and checks one echo round trip.
func dialEcho(t *testing.T, ctx context.Context, agent *Agent, target, msg string) {
	t.Helper()
	conn, err := agent.Dial(ctx, target)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	if err := roundTrip(conn, []byte(msg)); err != nil {
		t.Fatal(err)
	}
}

func TestDirectPathBetweenProviders(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			ctx := testCtx(t)
			c, _ := directCluster(t, kind)
			a, b := c.provs[nodeA], c.provs[nodeB]
			target := echoServer(t, vipB)
			for i := 0; i < 2; i++ {
				dialEcho(t, ctx, a.agent, target, "direct")
			}
			if b.direct.Load() != 2 || b.dials.Load() != 2 {
				t.Fatalf("B served %d direct streams, dialled %d (want 2, 2)", b.direct.Load(), b.dials.Load())
			}
			// The head's own targets are still relayed (the head takes no
			// direct streams).
			head := echoServer(t, "127.0.0.1")
			dialEcho(t, ctx, a.agent, head, "via head")
		})
	}
}

func TestDirectPathFallsBackToTheHead(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			ctx := testCtx(t)
			c, pt := directCluster(t, kind)
			a, b := c.provs[nodeA], c.provs[nodeB]
			target := echoServer(t, vipB)
			// B's advertised address answers as A (a provider that lies, or
			// a stale address): A refuses the peer and relays.
			pt.set(vipB, nodeB, a.peerAddr)
			dialEcho(t, ctx, a.agent, target, "relayed")
			if a.direct.Load() != 0 || b.direct.Load() != 0 || b.dials.Load() != 1 {
				t.Fatalf("direct streams A %d B %d, B dials %d (want 0 0 1)", a.direct.Load(), b.direct.Load(), b.dials.Load())
			}
		})
	}
}

func TestDirectStreamsOpenOnlyTheProvidersOwnAllowedTargets(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			ctx := testCtx(t)
			c, _ := directCluster(t, kind)
			a, b := c.provs[nodeA], c.provs[nodeB]
			own := echoServer(t, vipB)
			loop := echoServer(t, "127.0.0.1") // on B's machine, but not B's pool address
			r := route{node: nodeB, addr: b.peerAddr}
			if _, err := a.agent.openDirect(ctx, r, loop); !errors.Is(err, ErrRefused) {
				t.Fatalf("loopback target through a direct stream: %v", err)
			}
			b.agent.cfg.DirectAllow = func(from, target string) bool { return from == nodeA && target != own }
			if _, err := a.agent.openDirect(ctx, r, own); !errors.Is(err, ErrRefused) {
				t.Fatalf("target DirectAllow refuses: %v", err)
			}
			if b.dials.Load() != 0 {
				t.Fatalf("B dialled %d refused targets", b.dials.Load())
			}
		})
	}
}

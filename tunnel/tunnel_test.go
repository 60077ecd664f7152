package tunnel

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/gray-cluster/gray/internal/leakcheck"
)

// TestMain fails the package if goroutines of this package, quic-go or grpc
// outlive the tests: every Close here waits for its own.
func TestMain(m *testing.M) {
	leakcheck.Main(m, "gray/tunnel.", "quic-go/quic-go", "google.golang.org/grpc")
}

// eachKind runs f as a parallel subtest per transport kind.
func eachKind(t *testing.T, f func(t *testing.T, kind string)) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			f(t, kind)
		})
	}
}

// The head reaches a TCP server on provider A; provider A reaches one on
// the head; provider A reaches one on provider B (relayed by the head).
func TestPaths(t *testing.T) {
	t.Parallel()
	eachKind(t, func(t *testing.T, kind string) {
		ctx := testCtx(t)
		c := newCluster(t, kind, clusterOpts{})
		a, b := c.provs[nodeA], c.provs[nodeB]
		onA, onB, onHead := echoServer(t, vipA), echoServer(t, vipB), echoServer(t, "127.0.0.1")
		cases := []struct {
			name   string
			dial   func(context.Context, string) (net.Conn, error)
			target string
			via    *prov // the provider whose local dial carries it, if any
		}{
			{"head to provider", c.hub.Dial, onA, a},
			{"provider to head", a.agent.Dial, onHead, nil},
			{"provider to provider", a.agent.Dial, onB, b},
			{"provider to own vip via head", b.agent.Dial, onB, b},
		}
		for _, tc := range cases {
			before := map[*prov]int64{a: a.dials.Load(), b: b.dials.Load()}
			conn, err := tc.dial(ctx, tc.target)
			if err != nil {
				t.Fatalf("%s: Dial(%s): %v", tc.name, tc.target, err)
			}
			if err := roundTrip(conn, []byte("hello "+tc.name)); err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			_ = conn.Close()
			for _, p := range []*prov{a, b} {
				want := before[p]
				if p == tc.via {
					want++
				}
				if got := p.dials.Load(); got != want {
					t.Errorf("%s: %s made %d local dials, want %d", tc.name, p.node, got, want)
				}
			}
		}
	})
}

// 64 MiB each way arrive intact, on the head→provider and the relayed
// provider→provider paths. Over QUIC the client half-closes and reads the
// echo to EOF, which needs CloseWrite to travel every hop.
func TestLargeTransfer(t *testing.T) {
	t.Parallel()
	eachKind(t, func(t *testing.T, kind string) {
		ctx := testCtx(t)
		c := newCluster(t, kind, clusterOpts{})
		onA, onB := echoServer(t, vipA), echoServer(t, vipB)
		for name, dial := range map[string]func() (net.Conn, error){
			"head to provider":     func() (net.Conn, error) { return c.hub.Dial(ctx, onA) },
			"provider to provider": func() (net.Conn, error) { return c.provs[nodeA].agent.Dial(ctx, onB) },
		} {
			conn, err := dial()
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			const size = 64 << 20
			rng := rand.NewChaCha8([32]byte{1})
			sent := sha256.New()
			werr := make(chan error, 1)
			go func() {
				buf := make([]byte, 1<<20)
				for range size / len(buf) {
					_, _ = rng.Read(buf)
					sent.Write(buf)
					if _, err := conn.Write(buf); err != nil {
						werr <- err
						return
					}
				}
				if kind == "quic" {
					werr <- conn.(closeWriter).CloseWrite()
					return
				}
				werr <- nil
			}()
			got := sha256.New()
			var n int64
			if kind == "quic" {
				n, err = io.Copy(got, conn) // to the echo's EOF
			} else {
				n, err = io.CopyN(got, conn, size)
			}
			if err != nil {
				t.Fatalf("%s: read after %d bytes: %v", name, n, err)
			}
			if err := <-werr; err != nil {
				t.Fatalf("%s: write: %v", name, err)
			}
			if n != size || string(got.Sum(nil)) != string(sent.Sum(nil)) {
				t.Fatalf("%s: got %d bytes (checksum match %v), want %d", name, n, string(got.Sum(nil)) == string(sent.Sum(nil)), size)
			}
			_ = conn.Close()
		}
	})
}

// Many conns at once on every path.
func TestManyConcurrentConns(t *testing.T) {
	t.Parallel()
	eachKind(t, func(t *testing.T, kind string) {
		ctx := testCtx(t)
		c := newCluster(t, kind, clusterOpts{})
		onA, onB, onHead := echoServer(t, vipA), echoServer(t, vipB), echoServer(t, "127.0.0.1")
		a := c.provs[nodeA].agent
		dials := []struct {
			dial   func(context.Context, string) (net.Conn, error)
			target string
		}{{c.hub.Dial, onA}, {a.Dial, onB}, {a.Dial, onHead}}
		const perPath = 40
		var wg sync.WaitGroup
		errs := make(chan error, perPath*len(dials))
		for i := range perPath * len(dials) {
			d := dials[i%len(dials)]
			wg.Go(func() {
				conn, err := d.dial(ctx, d.target)
				if err != nil {
					errs <- err
					return
				}
				defer conn.Close()
				for j := range 5 {
					if err := roundTrip(conn, fmt.Appendf(nil, "conn %d message %d %0100d", i, j, j)); err != nil {
						errs <- fmt.Errorf("conn %d to %s: %w", i, d.target, err)
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
	})
}

// Dial errors: the sentinel on the dialer's side, and the hub keeps
// serving.
func TestDialErrors(t *testing.T) {
	t.Parallel()
	eachKind(t, func(t *testing.T, kind string) {
		ctx := testCtx(t)
		c := newCluster(t, kind, clusterOpts{})
		a := c.provs[nodeA].agent
		cases := []struct {
			name   string
			dial   func(context.Context, string) (net.Conn, error)
			target string
			want   error
		}{
			{"hub: unknown host", c.hub.Dial, "10.9.9.9:80", ErrNoRoute},
			{"agent: unknown host", a.Dial, "10.9.9.9:80", ErrNoRoute},
			{"hub: closed port on provider", c.hub.Dial, closedPort(t, vipA), ErrUnreachable},
			{"agent: closed port on head", a.Dial, closedPort(t, "127.0.0.1"), ErrUnreachable},
			{"agent: closed port on provider", a.Dial, closedPort(t, vipB), ErrUnreachable},
			{"provider refuses a host not its own", c.hub.Dial, notOwned + ":80", ErrRefused},
			{"agent: relayed refusal", c.provs[nodeB].agent.Dial, notOwned + ":80", ErrRefused},
			{"bad target", a.Dial, "no-port", ErrBadRequest},
			{"hub: bad target", c.hub.Dial, "127.0.0.1:0", ErrBadRequest},
		}
		for _, tc := range cases {
			conn, err := tc.dial(ctx, tc.target)
			if err == nil {
				_ = conn.Close()
				t.Errorf("%s: Dial(%s) succeeded", tc.name, tc.target)
				continue
			}
			if !errors.Is(err, tc.want) {
				t.Errorf("%s: Dial(%s) = %v, want %v", tc.name, tc.target, err, tc.want)
			}
		}
		// Still serving.
		conn, err := a.Dial(ctx, echoServer(t, vipB))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if err := roundTrip(conn, []byte("still up")); err != nil {
			t.Fatal(err)
		}
	})
}

// A provider without a listen stream has no route; once its agent starts
// it has.
func TestProviderNotConnected(t *testing.T) {
	t.Parallel()
	eachKind(t, func(t *testing.T, kind string) {
		ctx := testCtx(t)
		c := newCluster(t, kind, clusterOpts{noAgents: true})
		onA := echoServer(t, vipA)
		if _, err := c.hub.Dial(ctx, onA); !errors.Is(err, ErrNoRoute) {
			t.Fatalf("Dial before the agent started = %v, want ErrNoRoute", err)
		}
		a := c.provs[nodeA].agent
		if err := a.Start(ctx); err != nil {
			t.Fatal(err)
		}
		waitFor(t, ctx, "A connected", func() bool { return c.hub.Connected(nodeA) })
		conn, err := c.hub.Dial(ctx, onA)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if err := roundTrip(conn, []byte("now")); err != nil {
			t.Fatal(err)
		}
	})
}

// A provider that goes away mid-stream: the head's conn fails instead of
// hanging, the hub forgets the provider, and the other provider is fine.
func TestProviderGoneMidStream(t *testing.T) {
	t.Parallel()
	eachKind(t, func(t *testing.T, kind string) {
		ctx := testCtx(t)
		c := newCluster(t, kind, clusterOpts{})
		a := c.provs[nodeA]
		onA, onB := echoServer(t, vipA), echoServer(t, vipB)
		conn, err := c.hub.Dial(ctx, onA)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if err := roundTrip(conn, []byte("before")); err != nil {
			t.Fatal(err)
		}
		relayed, err := c.provs[nodeB].agent.Dial(ctx, onA)
		if err != nil {
			t.Fatal(err)
		}
		defer relayed.Close()
		if err := roundTrip(relayed, []byte("before")); err != nil {
			t.Fatal(err)
		}
		_ = a.tr.Close() // provider A's process is gone
		for _, cn := range []net.Conn{conn, relayed} {
			if _, err := io.Copy(io.Discard, cn); err == nil {
				t.Log("conn ended with EOF") // either EOF or an error; never a hang
			}
		}
		waitFor(t, ctx, "hub forgets A", func() bool { return !c.hub.Connected(nodeA) })
		if _, err := c.hub.Dial(ctx, onA); !errors.Is(err, ErrNoRoute) {
			t.Errorf("Dial to a gone provider = %v, want ErrNoRoute", err)
		}
		conn2, err := c.hub.Dial(ctx, onB)
		if err != nil {
			t.Fatal(err)
		}
		defer conn2.Close()
		if err := roundTrip(conn2, []byte("B is fine")); err != nil {
			t.Fatal(err)
		}
	})
}

// An agent whose listen stream drops brings it back, with backoff.
func TestAgentReconnects(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	c := newCluster(t, "mem", clusterOpts{})
	a := c.provs[nodeA]
	c.net.Partition("host-head", "host-"+nodeA)
	waitFor(t, ctx, "hub forgets A", func() bool { return !c.hub.Connected(nodeA) })
	c.net.Heal("host-head", "host-"+nodeA)
	waitFor(t, ctx, "A back", func() bool { return c.hub.Connected(nodeA) })
	if err := a.agent.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	conn, err := c.hub.Dial(ctx, echoServer(t, vipA))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := roundTrip(conn, []byte("reconnected")); err != nil {
		t.Fatal(err)
	}
}

// AllowTarget vets providers' dials: a refused target gets ErrRefused and
// no local dial anywhere; allowed ones and the head's own dials go through.
func TestAllowTarget(t *testing.T) {
	t.Parallel()
	eachKind(t, func(t *testing.T, kind string) {
		ctx := testCtx(t)
		// The one provider target allowed; set after the hub runs, whose
		// goroutines read it.
		var allowedP atomic.Pointer[string]
		c := newCluster(t, kind, clusterOpts{hub: func(cfg *HubConfig) {
			cfg.AllowTarget = func(from, target string) bool {
				p := allowedP.Load()
				return from == nodeA && p != nil && target == *p
			}
		}})
		a, b := c.provs[nodeA], c.provs[nodeB]
		allowed := echoServer(t, vipB)
		allowedP.Store(&allowed)
		denied := echoServer(t, vipB)
		onHead := echoServer(t, "127.0.0.1")
		for _, tc := range []struct {
			name   string
			agent  *Agent
			target string
		}{
			{"A to B's port not allowed", a.agent, denied},
			{"A to the head's port not allowed", a.agent, onHead},
			{"B to the allowed target (allowed for A only)", b.agent, allowed},
		} {
			before := b.dials.Load()
			conn, err := tc.agent.Dial(ctx, tc.target)
			if err == nil {
				_ = conn.Close()
				t.Fatalf("%s: dial succeeded", tc.name)
			}
			if !errors.Is(err, ErrRefused) {
				t.Fatalf("%s: %v, want ErrRefused", tc.name, err)
			}
			if got := b.dials.Load(); got != before {
				t.Fatalf("%s: B dialled locally (%d → %d)", tc.name, before, got)
			}
		}
		conn, err := a.agent.Dial(ctx, allowed)
		if err != nil {
			t.Fatal(err)
		}
		if err := roundTrip(conn, []byte("allowed")); err != nil {
			t.Fatal(err)
		}
		_ = conn.Close()
		conn, err = c.hub.Dial(ctx, denied) // the head itself is not vetted
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.Close()
	})
}

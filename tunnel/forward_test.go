package tunnel

import (
	"net"
	"testing"
)

// A stock process on the head connects to a forwarded address and reaches
// the target on a provider; Forward is idempotent and Stop ends it.
func TestForwarder(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	c := newCluster(t, "quic", clusterOpts{})
	a := c.provs[nodeA]
	fw := NewForwarder(c.hub.Dial, nil)
	defer fw.Close()
	onA := echoServer(t, vipA)
	listenAt := closedPort(t, "127.64.0.9")
	addr, err := fw.Forward(ctx, listenAt, onA)
	if err != nil {
		t.Fatal(err)
	}
	if addr != listenAt {
		t.Fatalf("bound %s, want %s", addr, listenAt)
	}
	again, err := fw.Forward(ctx, listenAt, onA)
	if err != nil || again != addr {
		t.Fatalf("second Forward = %s, %v; want %s", again, err, addr)
	}
	before := a.dials.Load()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := roundTrip(conn, []byte("forwarded")); err != nil {
		t.Fatal(err)
	}
	if a.dials.Load() != before+1 {
		t.Errorf("A made %d local dials, want %d", a.dials.Load()-before, 1)
	}

	// Pointing it elsewhere keeps the listener; new conns go there.
	onB := echoServer(t, vipB)
	if _, err := fw.Forward(ctx, listenAt, onB); err != nil {
		t.Fatal(err)
	}
	b := c.provs[nodeB]
	beforeB := b.dials.Load()
	conn2, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	if err := roundTrip(conn2, []byte("to B now")); err != nil {
		t.Fatal(err)
	}
	if b.dials.Load() != beforeB+1 {
		t.Errorf("B made %d local dials, want 1", b.dials.Load()-beforeB)
	}

	// A target that cannot be reached: the accepted conn is reset.
	bad, err := fw.Forward(ctx, "127.0.0.1:0", "10.9.9.9:80")
	if err != nil {
		t.Fatal(err)
	}
	if c3, err := net.Dial("tcp", bad); err == nil { // the reset may beat connect's return
		if _, err := c3.Read(make([]byte, 1)); err == nil {
			t.Error("read on a forward to nowhere succeeded")
		}
		c3.Close()
	}

	fw.Stop(listenAt)
	if _, err := conn.Read(make([]byte, 1)); err == nil {
		t.Error("conn survived Stop")
	}
	conn.Close()
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Error("dial after Stop succeeded")
	}
}

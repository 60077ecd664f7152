package linkemu

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/gray-cluster/gray/internal/testlog"
	"github.com/gray-cluster/gray/transport"
)

// TestQUICThroughProxy runs the repo's own QUIC transport over a lossy,
// delayed link: a 4 MiB stream must arrive intact.
func TestQUICThroughProxy(t *testing.T) {
	t.Parallel()
	const size = 4 << 20
	link := Link{Delay: 20 * time.Millisecond, Loss: 0.01}
	ctx := testCtx(t)

	ca, err := transport.NewCA("linkemu test CA")
	if err != nil {
		t.Fatal(err)
	}
	newQUIC := func(id string) *transport.QUIC {
		cert, err := ca.NewNodeCert(id)
		if err != nil {
			t.Fatal(err)
		}
		q, err := transport.NewQUIC(transport.Config{Certificate: &cert, CA: ca.Pool(), HandshakeTimeout: 5 * time.Second, Logger: testlog.New(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = q.Close() })
		return q
	}
	server, client := newQUIC("server"), newQUIC("client")
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait) // after l.Close, which ends Accept
	l, err := server.Listen(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })

	// The server reads a length-prefixed blob and answers with its hash;
	// Close delivers the hash before the FIN.
	wg.Go(func() {
		c, err := l.Accept()
		if err != nil {
			t.Errorf("Accept: %v", err)
			return
		}
		defer c.Close()
		var n uint64
		if err := binary.Read(c, binary.BigEndian, &n); err != nil {
			t.Errorf("server read length: %v", err)
			return
		}
		h := sha256.New()
		if _, err := io.CopyN(h, c, int64(n)); err != nil {
			t.Errorf("server read data: %v", err)
			return
		}
		if _, err := c.Write(h.Sum(nil)); err != nil {
			t.Errorf("server write hash: %v", err)
		}
	})

	p := startUDP(t, l.Addr().String(), Config{Up: link, Down: link, Seed: 1})
	start := time.Now()
	c, err := client.Dial(ctx, p.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if deadline, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(deadline)
	}
	peer, _ := transport.PeerOf(c)
	if peer.NodeID != "server" {
		t.Errorf("connected to %q, want server", peer.NodeID)
	}
	data := make([]byte, size)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	want := sha256.Sum256(data)
	if err := binary.Write(c, binary.BigEndian, uint64(size)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(data); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, sha256.Size)
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want[:]) {
		t.Fatal("the server hashed different data")
	}
	took := time.Since(start)
	peer, _ = transport.PeerOf(c)
	st := p.Stats()
	t.Logf("%d MiB in %v (%.1f Mbit/s), RTT %v; up %+v; down %+v", size>>20, took,
		float64(size*8)/took.Seconds()/1e6, peer.RTT, st.Up, st.Down)
	if st.Up.DroppedLoss == 0 {
		t.Error("no packet was lost: the test did not exercise loss recovery")
	}
	if peer.RTT < 2*link.Delay {
		t.Errorf("QUIC measured RTT %v, below the link's %v", peer.RTT, 2*link.Delay)
	}
}

package wanharness

import (
	"encoding/binary"
	"io"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/gray-cluster/gray/internal/linkemu"
	"github.com/gray-cluster/gray/transport"
)

func TestScratchRawQUIC(t *testing.T) {
	if os.Getenv("SCRATCH") == "" {
		t.Skip()
	}
	loss, _ := strconv.ParseFloat(os.Getenv("LOSS"), 64)
	rtt, _ := time.ParseDuration(os.Getenv("RTT"))
	const size = 32 << 20
	ca, _ := transport.NewCA("x")
	mk := func(id string) *transport.QUIC {
		cert, _ := ca.NewNodeCert(id)
		q, err := transport.NewQUIC(transport.Config{Certificate: &cert, CA: ca.Pool()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = q.Close() })
		return q
	}
	server, client := mk("server"), mk("client")
	l, err := server.Listen(t.Context(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// server: each stream: 1 byte op; 'u' = read size bytes then write 1 byte; 'd' = write size bytes.
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				op := make([]byte, 1)
				io.ReadFull(c, op)
				buf := make([]byte, size)
				if op[0] == 'u' {
					io.ReadFull(c, buf)
					c.Write([]byte{1})
				} else {
					c.Write(buf)
				}
			}()
		}
	}()
	link := linkemu.Link{Delay: rtt / 2, Loss: loss, Bandwidth: 100e6, InOrder: true}
	p, err := linkemu.NewUDPProxy("127.0.0.1:0", l.Addr().String(), linkemu.Config{Up: link, Down: link, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	p.Start(t.Context())
	_ = binary.BigEndian
	for _, op := range []byte("ududud") {
		s0 := p.Stats()
		start := time.Now()
		c, err := client.Dial(t.Context(), p.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte{op})
		buf := make([]byte, size)
		if op == 'u' {
			c.Write(buf)
			io.ReadFull(c, buf[:1])
		} else {
			io.ReadFull(c, buf)
		}
		c.Close()
		d := time.Since(start)
		s1 := p.Stats()
		t.Logf("%c: %.2f MiB/s  up drops loss %d queue %d, down drops loss %d queue %d", op, float64(size)/d.Seconds()/(1<<20),
			s1.Up.DroppedLoss-s0.Up.DroppedLoss, s1.Up.DroppedQueue-s0.Up.DroppedQueue, s1.Down.DroppedLoss-s0.Down.DroppedLoss, s1.Down.DroppedQueue-s0.Down.DroppedQueue)
	}
}

package linkemu

import (
	"bytes"
	"fmt"
	"math"
	"net"
	"slices"
	"testing"
	"time"
)

func TestUDPEcho(t *testing.T) {
	t.Parallel()
	srv := newUDPServer(t, echoReply)
	p := startUDP(t, srv.addr(), Config{})
	c := udpClient(t, p.Addr())
	for i := range 100 {
		msg := fmt.Appendf(nil, "ping %d", i)
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		if got := readReply(t, c); !bytes.Equal(got, msg) {
			t.Fatalf("reply %q, want %q", got, msg)
		}
	}
	// A datagram too big for the pooled buffers goes through whole too.
	big := bytes.Repeat([]byte("x"), 60000)
	if _, err := c.Write(big); err != nil {
		t.Fatal(err)
	}
	if got := readReply(t, c); !bytes.Equal(got, big) {
		t.Fatalf("reply of %d bytes, want %d", len(got), len(big))
	}
	// The proxy counts a datagram once its write returned, which may be
	// just after the client has read it (or, upstream, after the server
	// has answered it).
	eventually(t, "the last datagrams counted", func() bool {
		st := p.Stats()
		return st.Up.Forwarded >= 101 && st.Down.Forwarded >= 101
	})
	if st := p.Stats(); st.Up.Forwarded != 101 || st.Down.Forwarded != 101 || st.Up.Dropped+st.Down.Dropped != 0 || st.Sessions != 1 {
		t.Errorf("stats %+v", st)
	}
}

// TestUDPDelay checks that no packet arrives before its one-way delay, in
// either direction, and that the delay is not wildly exceeded.
func TestUDPDelay(t *testing.T) {
	t.Parallel()
	const up, down = 30 * time.Millisecond, 20 * time.Millisecond
	srv := newUDPServer(t, echoReply)
	p := startUDP(t, srv.addr(), Config{Up: Link{Delay: up}, Down: Link{Delay: down}})
	c := udpClient(t, p.Addr())
	for i := range 20 {
		msg := seqPacket(uint64(i), 100)
		sent := time.Now()
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		a := srv.next(t)
		readReply(t, c)
		rtt := time.Since(sent)
		if oneWay := a.at.Sub(sent); oneWay < up {
			t.Errorf("packet %d reached the target after %v, before the %v delay", i, oneWay, up)
		}
		if rtt < up+down {
			t.Errorf("round trip %d took %v, less than %v", i, rtt, up+down)
		}
		if rtt > up+down+5*time.Second {
			t.Errorf("round trip %d took %v", i, rtt)
		}
	}
}

// TestUDPJitter checks that jittered packets arrive no earlier than
// Delay−Jitter (later only by scheduling noise), that the jitter is really
// there (it reorders), and that InOrder keeps order.
func TestUDPJitter(t *testing.T) {
	t.Parallel()
	const delay, jitter, n = 30 * time.Millisecond, 10 * time.Millisecond, 200
	for _, inOrder := range []bool{false, true} {
		t.Run(fmt.Sprintf("InOrder=%v", inOrder), func(t *testing.T) {
			t.Parallel()
			srv := newUDPServer(t, nil)
			p := startUDP(t, srv.addr(), Config{Up: Link{Delay: delay, Jitter: jitter, InOrder: inOrder}, Seed: 7})
			c := udpClient(t, p.Addr())
			sent := make([]time.Time, n)
			for i := range n {
				sent[i] = time.Now()
				if _, err := c.Write(seqPacket(uint64(i), 200)); err != nil {
					t.Fatal(err)
				}
			}
			lo, hi := time.Duration(math.MaxInt64), time.Duration(0)
			var order []uint64
			for range n {
				a := srv.next(t)
				seq := seqOf(a.data)
				order = append(order, seq)
				lat := a.at.Sub(sent[seq])
				lo, hi = min(lo, lat), max(hi, lat)
				if lat < delay-jitter {
					t.Errorf("packet %d arrived after %v, before %v", seq, lat, delay-jitter)
				}
				if lat > delay+jitter+5*time.Second {
					t.Errorf("packet %d arrived after %v", seq, lat)
				}
			}
			reordered := 0
			for i := 1; i < len(order); i++ {
				if order[i] < order[i-1] {
					reordered++
				}
			}
			t.Logf("one-way latency %v..%v, %d inversions", lo, hi, reordered)
			if inOrder && reordered > 0 {
				t.Errorf("InOrder link reordered %d times: %v", reordered, order)
			}
			if !inOrder && reordered == 0 {
				// The jitter draws put due times out of arrival order
				// (about half of 200 burst packets are passed by the next
				// one); the delay line delivers in due order, whatever the
				// load, so a jittered link must show inversions.
				t.Errorf("200 packets with ±%v jitter arrived in order", jitter)
			}
		})
	}
}

// lossRun sends n sequenced datagrams through a link with the given loss and
// returns the sequence numbers lost and the proxy's stats.
func lossRun(t *testing.T, n int, loss float64, seed int64) ([]uint64, Stats) {
	srv := newUDPServer(t, nil)
	p := startUDP(t, srv.addr(), Config{Up: Link{Loss: loss}, Seed: seed})
	c := udpClient(t, p.Addr())
	// Send in batches, waiting for the proxy to have read each, so that
	// no socket buffer overflows and every loss is the emulator's.
	const batch = 500
	for i := 0; i < n; i += batch {
		for j := i; j < min(i+batch, n); j++ {
			if _, err := c.Write(seqPacket(uint64(j), 64)); err != nil {
				t.Fatal(err)
			}
		}
		sent := uint64(min(i+batch, n))
		eventually(t, "the proxy to read a batch", func() bool { return p.Stats().Up.Received >= sent })
	}
	var st Stats
	eventually(t, "the proxy to forward or drop every datagram", func() bool {
		st = p.Stats()
		return st.Up.Forwarded+st.Up.Dropped == uint64(n)
	})
	eventually(t, "the target to read every forwarded datagram", func() bool { return uint64(srv.received()) == st.Up.Forwarded })
	seen := make([]bool, n)
	for range st.Up.Forwarded {
		seen[seqOf(srv.next(t).data)] = true
	}
	var lost []uint64
	for i, ok := range seen {
		if !ok {
			lost = append(lost, uint64(i))
		}
	}
	return lost, st
}

func TestUDPLoss(t *testing.T) {
	t.Parallel()
	const n, loss = 20000, 0.05
	lost, st := lossRun(t, n, loss, 42)
	// Binomial(20000, 0.05): mean 1000, σ ≈ 30.8; allow ±5σ.
	mean, sigma := n*loss, math.Sqrt(n*loss*(1-loss))
	t.Logf("lost %d of %d (expected %.0f ± %.1f)", len(lost), n, mean, sigma)
	if d := math.Abs(float64(len(lost)) - mean); d > 5*sigma {
		t.Errorf("lost %d of %d, want %.0f ± %.0f", len(lost), n, mean, 5*sigma)
	}
	if st.Up.DroppedLoss != uint64(len(lost)) || st.Up.Dropped != st.Up.DroppedLoss {
		t.Errorf("stats %+v do not account for the %d lost", st.Up, len(lost))
	}
	if st.Up.Received != n {
		t.Errorf("proxy received %d of %d", st.Up.Received, n)
	}

	// The same seed loses the same packets.
	again, _ := lossRun(t, n, loss, 42)
	if !slices.Equal(lost, again) {
		t.Errorf("same seed, different losses: %d vs %d packets", len(lost), len(again))
	}
}

// TestUDPBandwidth checks that a transfer of X bytes takes at least
// X×8/bandwidth, and that every packet waits for those ahead of it.
func TestUDPBandwidth(t *testing.T) {
	t.Parallel()
	const bw, size, n = 8_000_000, 1000, 256 // 1 ms per packet
	srv := newUDPServer(t, nil)
	p := startUDP(t, srv.addr(), Config{Up: Link{Bandwidth: bw, QueueBytes: 1 << 20}})
	c := udpClient(t, p.Addr())
	start := time.Now()
	for i := range n {
		if _, err := c.Write(seqPacket(uint64(i), size)); err != nil {
			t.Fatal(err)
		}
	}
	var last time.Time
	for range n {
		a := srv.next(t)
		seq := seqOf(a.data)
		if min := time.Duration(seq+1) * time.Millisecond; a.at.Sub(start) < min {
			t.Errorf("packet %d arrived after %v, before its serialization time %v", seq, a.at.Sub(start), min)
		}
		last = a.at
	}
	want := time.Duration(n*size*8) * time.Second / bw
	took := last.Sub(start)
	t.Logf("%d bytes at %s took %v (serialization %v)", n*size, FormatBandwidth(bw), took, want)
	if took < want {
		t.Errorf("transfer took %v, less than %v", took, want)
	}
	if took > 4*want+5*time.Second {
		t.Errorf("transfer took %v, far more than %v", took, want)
	}
	if st := p.Stats(); st.Up.Dropped != 0 {
		t.Errorf("dropped %d", st.Up.Dropped)
	}
}

// TestUDPDelayPlusSerialization: delay is propagation and bandwidth is
// serialization, so a burst takes delay + size/bandwidth, not delay per packet.
func TestUDPDelayPlusSerialization(t *testing.T) {
	t.Parallel()
	const delay, bw, size, n = 80 * time.Millisecond, 100_000_000, 1024, 64
	srv := newUDPServer(t, nil)
	p := startUDP(t, srv.addr(), Config{Up: Link{Delay: delay, Bandwidth: bw}})
	c := udpClient(t, p.Addr())
	start := time.Now()
	for i := range n {
		if _, err := c.Write(seqPacket(uint64(i), size)); err != nil {
			t.Fatal(err)
		}
	}
	var first, last time.Time
	for i := range n {
		a := srv.next(t)
		if i == 0 {
			first = a.at
		}
		last = a.at
	}
	ser := time.Duration(n*size*8) * time.Second / bw // 5.24 ms
	t.Logf("first after %v, last after %v (want >= %v and %v)", first.Sub(start), last.Sub(start), delay, delay+ser)
	if first.Sub(start) < delay {
		t.Errorf("first packet after %v, before the %v delay", first.Sub(start), delay)
	}
	if last.Sub(start) < delay+ser {
		t.Errorf("last packet after %v, before %v", last.Sub(start), delay+ser)
	}
	// Delay paid once per packet in a row would be 64 × 80 ms = 5.1 s.
	if last.Sub(start) > time.Second {
		t.Errorf("last packet after %v: delay and serialization do not overlap", last.Sub(start))
	}
	if st := p.Stats(); st.Up.Dropped != 0 {
		t.Errorf("dropped %d", st.Up.Dropped)
	}
}

// TestUDPQueueDrop: a burst beyond the bottleneck queue is dropped at the tail.
func TestUDPQueueDrop(t *testing.T) {
	t.Parallel()
	const size, n = 1000, 100
	srv := newUDPServer(t, nil)
	p := startUDP(t, srv.addr(), Config{Up: Link{Bandwidth: 1_000_000, QueueBytes: 10 * size}})
	c := udpClient(t, p.Addr())
	for i := range n {
		if _, err := c.Write(seqPacket(uint64(i), size)); err != nil {
			t.Fatal(err)
		}
	}
	var st Stats
	eventually(t, "every datagram forwarded or dropped", func() bool {
		st = p.Stats()
		return st.Up.Forwarded+st.Up.Dropped == n
	})
	t.Logf("%+v", st.Up)
	if st.Up.DroppedQueue == 0 || st.Up.Dropped != st.Up.DroppedQueue {
		t.Errorf("want queue drops only, got %+v", st.Up)
	}
	if st.Up.Forwarded < 10 {
		t.Errorf("forwarded %d, want at least the queue's 10", st.Up.Forwarded)
	}
	eventually(t, "the target to read what was forwarded", func() bool { return uint64(srv.received()) == st.Up.Forwarded })
	// Drop-tail: the first packets got through.
	for i := range 10 {
		if seq := seqOf(srv.next(t).data); seq != uint64(i) {
			t.Fatalf("arrival %d is packet %d", i, seq)
		}
	}
}

func TestUDPPartition(t *testing.T) {
	t.Parallel()
	const down = time.Second // long enough to partition while a reply is in flight
	srv := newUDPServer(t, echoReply)
	p := startUDP(t, srv.addr(), Config{Down: Link{Delay: down}})
	c := udpClient(t, p.Addr())
	roundTrip := func(seq uint64) {
		t.Helper()
		if _, err := c.Write(seqPacket(seq, 100)); err != nil {
			t.Fatal(err)
		}
		if got := seqOf(readReply(t, c)); got != seq {
			t.Fatalf("reply to %d, want %d", got, seq)
		}
	}
	roundTrip(1)

	// Arriving packets are dropped.
	p.SetPartitioned(true)
	for i := range 20 {
		if _, err := c.Write(seqPacket(uint64(100+i), 100)); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "20 partition drops", func() bool { return p.Stats().Up.DroppedPartition == 20 })
	if got := srv.received(); got != 1 {
		t.Errorf("target received %d datagrams, want only the first", got)
	}
	p.SetPartitioned(false)
	roundTrip(2)

	// Packets in flight when the partition starts are dropped when due.
	if _, err := c.Write(seqPacket(3, 100)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the reply to enter the link", func() bool { return p.Stats().Down.Received == 3 })
	p.SetPartitioned(true)
	eventually(t, "the reply in flight to be dropped", func() bool { return p.Stats().Down.DroppedPartition == 1 })
	p.SetPartitioned(false)
	roundTrip(4) // and not 3
	eventually(t, "the last reply to be counted", func() bool { return p.Stats().Down.Forwarded == 3 })
	if st := p.Stats(); st.Up.Forwarded != 4 || st.Up.Dropped != 20 || st.Down.Dropped != 1 {
		t.Errorf("stats %+v", st)
	}
}

// TestUDPMultipleClients: each client gets its own upstream socket, so the
// target sees distinct source addresses and replies reach the right client.
func TestUDPMultipleClients(t *testing.T) {
	t.Parallel()
	srv := newUDPServer(t, func(a arrival) []byte { return fmt.Appendf(nil, "%s|%s", a.from, a.data) })
	p := startUDP(t, srv.addr(), Config{Up: Link{Delay: time.Millisecond}, Down: Link{Delay: time.Millisecond}})
	const n = 4
	clients := make([]*net.UDPConn, n)
	for i := range clients {
		clients[i] = udpClient(t, p.Addr())
	}
	upstream := map[string]int{}
	for round := range 3 {
		for i, c := range clients {
			if _, err := fmt.Fprintf(c, "client %d", i); err != nil {
				t.Fatal(err)
			}
		}
		for i, c := range clients {
			from, msg, _ := bytes.Cut(readReply(t, c), []byte("|"))
			if want := fmt.Sprintf("client %d", i); string(msg) != want {
				t.Errorf("client %d got the reply for %q", i, msg)
			}
			if round == 0 {
				upstream[string(from)] = i
			} else if upstream[string(from)] != i {
				t.Errorf("client %d's upstream address %s changed", i, from)
			}
		}
	}
	if len(upstream) != n {
		t.Errorf("target saw %d source addresses for %d clients: %v", len(upstream), n, upstream)
	}
	if s := p.Stats().Sessions; s != n {
		t.Errorf("%d sessions, want %d", s, n)
	}
}

func TestUDPIdleExpiry(t *testing.T) {
	t.Parallel()
	srv := newUDPServer(t, func(a arrival) []byte { return []byte(a.from.String()) })
	p := startUDP(t, srv.addr(), Config{IdleTimeout: 100 * time.Millisecond})
	c := udpClient(t, p.Addr())
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	first := string(readReply(t, c))
	if s := p.Stats().Sessions; s != 1 {
		t.Fatalf("%d sessions, want 1", s)
	}
	eventually(t, "the idle session to expire", func() bool { return p.Stats().Sessions == 0 })
	if _, err := c.Write([]byte("again")); err != nil {
		t.Fatal(err)
	}
	second := string(readReply(t, c))
	t.Logf("upstream %s, then %s", first, second)
	if s := p.Stats().Sessions; s != 1 {
		t.Errorf("%d sessions, want 1", s)
	}
}

func TestUDPConfigErrors(t *testing.T) {
	t.Parallel()
	for _, l := range []Link{{Delay: -1}, {Jitter: -1}, {Loss: 1.5}, {Loss: math.NaN()}, {Bandwidth: -1}, {QueueBytes: -1}} {
		if p, err := NewUDPProxy("127.0.0.1:0", "127.0.0.1:1", Config{Up: l}); err == nil {
			_ = p.Close()
			t.Errorf("NewUDPProxy accepted %+v", l)
		}
	}
}

// TestUDPInFlightLimit: MaxInFlightBytes bounds the packets held in
// propagation; the excess is dropped.
func TestUDPInFlightLimit(t *testing.T) {
	t.Parallel()
	srv := newUDPServer(t, nil)
	// Ten small datagrams fit (256 B each); the one-second delay keeps
	// them all in flight while the burst arrives.
	p := startUDP(t, srv.addr(), Config{Up: Link{Delay: time.Second}, MaxInFlightBytes: 10 * smallBuf})
	c := udpClient(t, p.Addr())
	for i := range 25 {
		if _, err := c.Write(seqPacket(uint64(i), 100)); err != nil {
			t.Fatal(err)
		}
	}
	var st Stats
	eventually(t, "every datagram forwarded or dropped", func() bool {
		st = p.Stats()
		return st.Up.Forwarded+st.Up.Dropped == 25
	})
	if st.Up.Forwarded != 10 || st.Up.DroppedQueue != 15 {
		t.Errorf("want 10 forwarded and 15 dropped, got %+v", st.Up)
	}
}

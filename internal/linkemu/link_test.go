package linkemu

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/gray-cluster/gray/internal/leakcheck"
	"github.com/gray-cluster/gray/internal/testlog"
)

func TestParseBandwidth(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want int64
	}{
		{"100mbit", 100e6},
		{"100Mbit", 100e6},
		{"1gbit", 1e9},
		{"1.5gbit", 1.5e9},
		{"500kbit", 500e3},
		{"64bit", 64},
		{"2500", 2500},
		{"10mbit/s", 10e6},
		{"100Mbps", 100e6},
		{"100 mbps", 100e6},
		{"1Gb/s", 1e9},
		{"1mibit", 1 << 20},
		{"10MB/s", 80e6},
		{"10kB/s", 80e3},
		{"10KB/s", 80e3},
		{"1MiB/s", 8 << 20},
		{"1GiB/s", 8 << 30},
		{"125B/s", 1000},
		{"", 0},
		{"0", 0},
		{"unlimited", 0},
		{"0mbit", 0},
	} {
		got, err := ParseBandwidth(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseBandwidth(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"fast", "mbit", "10 furlongs", "-5mbit", "10xbit", "0.0001bit", "1e30gbit", "1.2.3mbit"} {
		if got, err := ParseBandwidth(bad); err == nil {
			t.Errorf("ParseBandwidth(%q) = %d, want an error", bad, got)
		}
	}
	for _, bps := range []int64{1, 999, 64e3, 100e6, 2e9, 1500} {
		if got, err := ParseBandwidth(FormatBandwidth(bps)); err != nil || got != bps {
			t.Errorf("ParseBandwidth(FormatBandwidth(%d) = %q) = %d, %v", bps, FormatBandwidth(bps), got, err)
		}
	}
}

func TestTxTime(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		bw   int64
		n    int
		want time.Duration
	}{
		{100e6, 1250, 100 * time.Microsecond},
		{100e6, 64 << 10, 5242880 * time.Nanosecond},
		{3, 1, 2666666667}, // rounded up: never early
		{1, 1 << 30, 1 << 33 * time.Second},
		{0, 1000, 0},
	} {
		s := newShaper(Link{Bandwidth: tc.bw}, 0, 0)
		if got := s.txTime(tc.n); got != tc.want {
			t.Errorf("txTime(%d B at %d bit/s) = %v, want %v", tc.n, tc.bw, got, tc.want)
		}
	}
}

func TestQueueDefault(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		l    Link
		want int
	}{
		{Link{Bandwidth: 100e6}, 1 << 20},
		{Link{Bandwidth: 100e6, Delay: 80 * time.Millisecond}, 1e6},  // BDP
		{Link{Bandwidth: 1e6, Delay: time.Millisecond}, 64 << 10},    // floor
		{Link{Bandwidth: 100e9, Delay: time.Second}, 64 << 20},       // ceiling
		{Link{Bandwidth: 1e6, Delay: time.Second, QueueBytes: 5}, 5}, // explicit
	} {
		if got := tc.l.queueLimit(); got != tc.want {
			t.Errorf("queueLimit(%v) = %d, want %d", tc.l, got, tc.want)
		}
	}
}

// TestClose: Close releases every socket and waits for every goroutine. Not
// parallel, so that no other test's proxies are running.
func TestClose(t *testing.T) {
	udpSrv := newUDPServer(t, echoReply)
	tcpSrv := newTCPServer(t, tcpEcho)
	up := startUDP(t, udpSrv.addr(), Config{Up: Link{Delay: time.Millisecond}})
	tp := startTCP(t, tcpSrv.addr(), Config{Down: Link{Delay: time.Millisecond}})

	// Two UDP sessions, with packets still in flight at Close.
	var upstream []string
	for range 2 {
		c := udpClient(t, up.Addr())
		if _, err := c.Write([]byte("hi")); err != nil {
			t.Fatal(err)
		}
		readReply(t, c)
		upstream = append(upstream, udpSrv.next(t).from.String())
		for range 10 {
			_, _ = c.Write([]byte("in flight"))
		}
	}
	// A TCP connection, open at Close.
	tc := dialTCP(t, tp.Addr())
	r := bufio.NewReader(tc)
	if _, err := io.WriteString(tc, "hi\n"); err != nil {
		t.Fatal(err)
	}
	expectLine(t, r, "hi\n")

	if leaked := leakcheck.Matching("linkemu.(*UDPProxy)", "linkemu.(*TCPProxy)", "linkemu.(*tcpConn)", "linkemu.(*delayLine)"); leaked == "" {
		t.Fatal("no proxy goroutines found before Close: the check below proves nothing")
	}
	if err := up.Close(); err != nil {
		t.Fatal(err)
	}
	if err := tp.Close(); err != nil {
		t.Fatal(err)
	}
	// By design, Close returns after the proxy's goroutines have ended.
	if leaked := leakcheck.Matching("linkemu.(*UDPProxy)", "linkemu.(*TCPProxy)", "linkemu.(*tcpConn)", "linkemu.(*delayLine)"); leaked != "" {
		t.Fatalf("goroutines left after Close:\n%s", leaked)
	}
	_ = up.Close() // again: harmless
	if st := up.Stats(); st.Sessions != 0 {
		t.Errorf("%d sessions after Close", st.Sessions)
	}
	if err := up.Start(t.Context()); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Start after Close = %v, want net.ErrClosed", err)
	}

	// Every socket is released: the listening ones and the upstream ones
	// can be bound again, the TCP one refuses connections.
	for _, a := range append([]string{up.Addr().String()}, upstream...) {
		addr, _ := net.ResolveUDPAddr("udp", a)
		c, err := net.ListenUDP("udp", addr)
		if err != nil {
			t.Errorf("UDP %s still bound after Close: %v", a, err)
			continue
		}
		_ = c.Close()
	}
	if c, err := net.Dial("tcp", tp.Addr().String()); err == nil {
		_ = c.Close()
		t.Errorf("TCP %s still accepts after Close", tp.Addr())
	} else if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Logf("dial after Close: %v", err)
	}
	// The relayed connection was closed too.
	if _, err := r.ReadByte(); err == nil {
		t.Error("TCP client conn still open after Close")
	}
}

// TestCloseByContext: cancelling Start's context closes the proxy.
func TestCloseByContext(t *testing.T) {
	t.Parallel()
	srv := newUDPServer(t, echoReply)
	p, err := NewUDPProxy("127.0.0.1:0", srv.addr(), Config{Logger: testlog.New(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	cancel()
	eventually(t, "the listener to close", func() bool {
		c, err := net.ListenUDP("udp", p.Addr().(*net.UDPAddr))
		if err != nil {
			return false
		}
		_ = c.Close()
		return true
	})
}

// TestShaperJitter checks the jitter distribution on the link model itself,
// free of scheduling noise: uniform over Delay±Jitter.
func TestShaperJitter(t *testing.T) {
	t.Parallel()
	const delay, jitter, n = 30 * time.Millisecond, 10 * time.Millisecond, 20000
	s := newShaper(Link{Delay: delay, Jitter: jitter}, 1, 0)
	lo, hi, sum := time.Duration(1<<62), time.Duration(0), 0.0
	below := 0
	for range n {
		due, why := s.admit(100, 0)
		if why != keep {
			t.Fatalf("dropped: %v", why)
		}
		lo, hi, sum = min(lo, due), max(hi, due), sum+float64(due)
		if due < delay {
			below++
		}
	}
	mean := time.Duration(sum / n)
	t.Logf("due %v..%v, mean %v, %d of %d below %v", lo, hi, mean, below, n, delay)
	if lo < delay-jitter || hi > delay+jitter {
		t.Errorf("due times %v..%v outside %v±%v", lo, hi, delay, jitter)
	}
	if lo > delay-jitter+100*time.Microsecond || hi < delay+jitter-100*time.Microsecond {
		t.Errorf("due times %v..%v do not cover %v±%v", lo, hi, delay, jitter)
	}
	// Uniform: σ of the mean is 10ms/√3/√20000 ≈ 41µs.
	if d := mean - delay; d < -300*time.Microsecond || d > 300*time.Microsecond {
		t.Errorf("mean %v, want about %v", mean, delay)
	}
	if below < n*45/100 || below > n*55/100 {
		t.Errorf("%d of %d below the mean delay, want about half", below, n)
	}

	// Jitter larger than the delay never makes a due time negative.
	s = newShaper(Link{Delay: time.Millisecond, Jitter: 5 * time.Millisecond}, 1, 0)
	for range 1000 {
		if due, _ := s.admit(100, time.Second); due < time.Second {
			t.Fatalf("due %v before arrival", due)
		}
	}
}

// TestShaperSerialization: delay and serialization add up; the queue drops
// at the tail.
func TestShaperSerialization(t *testing.T) {
	t.Parallel()
	s := newShaper(Link{Delay: 80 * time.Millisecond, Bandwidth: 100e6}, 0, 0)
	var due time.Duration
	for i := range 64 {
		var why dropReason
		if due, why = s.admit(1024, 0); why != keep {
			t.Fatalf("packet %d dropped: %v", i, why)
		}
		if want := 80*time.Millisecond + time.Duration(i+1)*81920*time.Nanosecond; due != want {
			t.Fatalf("packet %d due %v, want %v", i, due, want)
		}
	}
	if want := 80*time.Millisecond + 5242880*time.Nanosecond; due != want {
		t.Errorf("last packet due %v, want %v", due, want)
	}

	// 10 kB queue at 1 Mbit/s: 80 ms of backlog.
	s = newShaper(Link{Bandwidth: 1e6, QueueBytes: 10000}, 0, 0)
	kept := 0
	for range 20 {
		if _, why := s.admit(1000, 0); why == keep {
			kept++
		} else if why != dropQueue {
			t.Fatalf("dropped for %v", why)
		}
	}
	if kept != 10 {
		t.Errorf("queue of 10 kB kept %d packets of 1 kB", kept)
	}
	// Once the queue has drained (80 ms later), packets fit again.
	if _, why := s.admit(1000, 80*time.Millisecond); why != keep {
		t.Errorf("packet after drain dropped for %v", why)
	}

	// TCP waits instead of dropping.
	s = newShaper(Link{Bandwidth: 1e6, QueueBytes: 10000}, 0, 0)
	for i := range 11 {
		if _, wait := s.reserve(1000, 0); wait != 0 {
			t.Fatalf("chunk %d must wait %v with room in the queue", i, wait)
		}
	}
	if _, wait := s.reserve(1000, 0); wait != 8*time.Millisecond {
		t.Errorf("full queue: wait %v, want 8ms", wait)
	}
}

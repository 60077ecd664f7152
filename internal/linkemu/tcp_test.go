package linkemu

import (
	"bufio"
	"bytes"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// tcpServer is a TCP target on loopback that runs handle for each conn.
type tcpServer struct {
	ln       net.Listener
	accepted atomic.Int32
}

func newTCPServer(t *testing.T, handle func(*net.TCPConn)) *tcpServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &tcpServer{ln: ln}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				handle(c.(*net.TCPConn))
			})
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return s
}

func (s *tcpServer) addr() string { return s.ln.Addr().String() }

// tcpEcho echoes until EOF, then closes its write side.
func tcpEcho(c *net.TCPConn) {
	_, _ = io.Copy(c, c)
	_ = c.CloseWrite()
}

func dialTCP(t *testing.T, addr net.Addr) *net.TCPConn {
	t.Helper()
	c, err := net.DialTCP("tcp", nil, addr.(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(testTimeout))
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestTCPRoundTrip(t *testing.T) {
	t.Parallel()
	const up, down = 25 * time.Millisecond, 15 * time.Millisecond
	srv := newTCPServer(t, tcpEcho)
	p := startTCP(t, srv.addr(), Config{Up: Link{Delay: up, Jitter: 5 * time.Millisecond}, Down: Link{Delay: down}})
	c := dialTCP(t, p.Addr())
	r := bufio.NewReader(c)
	for i := range 5 {
		msg := []byte{'p', 'i', 'n', 'g', byte('0' + i), '\n'}
		sent := time.Now()
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		line, err := r.ReadBytes('\n')
		if err != nil {
			t.Fatal(err)
		}
		rtt := time.Since(sent)
		if !bytes.Equal(line, msg) {
			t.Fatalf("echo %q, want %q", line, msg)
		}
		if min := up - 5*time.Millisecond + down; rtt < min {
			t.Errorf("round trip %v, less than %v", rtt, min)
		}
		if rtt > up+down+5*time.Second {
			t.Errorf("round trip %v", rtt)
		}
	}

	// A megabyte both ways, with jitter on the way up: nothing reordered.
	data := make([]byte, 1<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		if err == nil {
			err = c.CloseWrite() // the FIN follows the data through the proxy
		}
		werr <- err
	}()
	got, err := io.ReadAll(r) // until the echo server's FIN
	if err != nil {
		t.Fatal(err)
	}
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("echoed %d bytes differ from the %d sent", len(got), len(data))
	}
	eventually(t, "the connection to close", func() bool { return p.Stats().Sessions == 0 })
	st := p.Stats()
	if st.Up.ReceivedBytes != st.Up.ForwardedBytes || st.Down.ForwardedBytes != st.Up.ForwardedBytes {
		t.Errorf("stats %+v", st)
	}
}

// TestTCPBandwidth: X bytes through a link take at least X×8/bandwidth, plus
// the delay (they add up).
func TestTCPBandwidth(t *testing.T) {
	t.Parallel()
	const bw, size, delay = 16_000_000, 512 << 10, 20 * time.Millisecond
	done := make(chan time.Time, 1)
	var got atomic.Int64
	srv := newTCPServer(t, func(c *net.TCPConn) {
		n, _ := io.Copy(io.Discard, c)
		got.Store(n)
		done <- time.Now()
	})
	p := startTCP(t, srv.addr(), Config{Up: Link{Bandwidth: bw, Delay: delay}})
	c := dialTCP(t, p.Addr())
	start := time.Now()
	if _, err := c.Write(make([]byte, size)); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	var end time.Time
	select {
	case end = <-done:
	case <-time.After(testTimeout):
		t.Fatal("timed out")
	}
	if got.Load() != size {
		t.Fatalf("target got %d bytes, want %d", got.Load(), size)
	}
	want := delay + time.Duration(size*8)*time.Second/bw
	took := end.Sub(start)
	t.Logf("%d bytes at %s + %v delay took %v (want >= %v)", size, FormatBandwidth(bw), delay, took, want)
	if took < want {
		t.Errorf("transfer took %v, less than %v", took, want)
	}
	if took > 4*want+5*time.Second {
		t.Errorf("transfer took %v, far more than %v", took, want)
	}
}

// TestTCPPartition: a partition holds data and new connections; healing
// releases them.
func TestTCPPartition(t *testing.T) {
	t.Parallel()
	srv := newTCPServer(t, tcpEcho)
	p := startTCP(t, srv.addr(), Config{Up: Link{Delay: 5 * time.Millisecond}})
	c1 := dialTCP(t, p.Addr())
	r1 := bufio.NewReader(c1)
	echo := func(c *net.TCPConn, r *bufio.Reader, msg string) {
		t.Helper()
		if _, err := io.WriteString(c, msg); err != nil {
			t.Fatal(err)
		}
		expectLine(t, r, msg)
	}
	echo(c1, r1, "before\n")

	p.SetPartitioned(true)
	if _, err := io.WriteString(c1, "held\n"); err != nil {
		t.Fatal(err)
	}
	c2 := dialTCP(t, p.Addr()) // the kernel accepts; the proxy waits to dial
	r2 := bufio.NewReader(c2)
	if _, err := io.WriteString(c2, "new\n"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the held data to enter the link", func() bool {
		st := p.Stats()
		return st.Up.Received == 2 && st.Sessions == 2
	})
	if st := p.Stats(); st.Up.Forwarded != 1 || st.Down.Forwarded != 1 {
		t.Errorf("forwarded while partitioned: %+v", st)
	}
	if n := srv.accepted.Load(); n != 1 {
		t.Errorf("target accepted %d connections while partitioned, want 1", n)
	}
	p.SetPartitioned(false)
	expectLine(t, r1, "held\n")
	expectLine(t, r2, "new\n")
	echo(c2, r2, "after\n")
}

func expectLine(t *testing.T, r *bufio.Reader, want string) {
	t.Helper()
	line, err := r.ReadString('\n')
	if err != nil || line != want {
		t.Fatalf("read %q, %v; want %q", line, err, want)
	}
}

// TestTCPTargetDown: a client of a proxy whose target refuses is closed.
func TestTCPTargetDown(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	target := ln.Addr().String()
	_ = ln.Close()
	p := startTCP(t, target, Config{})
	c := dialTCP(t, p.Addr())
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatalf("read from a proxied conn to nowhere: %v", err)
	}
}

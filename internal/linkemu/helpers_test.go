package linkemu

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/gray-cluster/gray/internal/leakcheck"
	"github.com/gray-cluster/gray/internal/testlog"
)

// testTimeout bounds every wait; no test waits on a clock below it except to
// measure, they wait on events.
// TestMain fails the package if goroutines of this package or of quic-go
// outlive the tests: every Close here waits for its own.
func TestMain(m *testing.M) {
	leakcheck.Main(m, "gray/internal/linkemu.", "quic-go/quic-go", "gray/transport.")
}

const testTimeout = 60 * time.Second

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// eventually polls cond until it holds, failing the test after testTimeout.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

// startUDP starts a UDP proxy on loopback in front of target, closed at
// cleanup.
func startUDP(t *testing.T, target string, cfg Config) *UDPProxy {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testlog.New(t)
	}
	p, err := NewUDPProxy("127.0.0.1:0", target, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	if err := p.Start(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	return p
}

func startTCP(t *testing.T, target string, cfg Config) *TCPProxy {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testlog.New(t)
	}
	p, err := NewTCPProxy("127.0.0.1:0", target, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	if err := p.Start(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	return p
}

// arrival is one datagram a udpServer received.
type arrival struct {
	at   time.Time
	from net.Addr
	data []byte
}

// udpServer is a UDP target on loopback. It records every datagram and, if
// reply is set, sends back what reply returns (nil: nothing).
type udpServer struct {
	conn     *net.UDPConn
	arrivals chan arrival // every datagram, buffered
	mu       sync.Mutex
	count    int
}

func newUDPServer(t *testing.T, reply func(a arrival) []byte) *udpServer {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadBuffer(socketBuffer)
	s := &udpServer{conn: conn, arrivals: make(chan arrival, 100000)}
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, maxDatagram)
		for {
			n, from, err := conn.ReadFromUDP(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			a := arrival{at: time.Now(), from: from, data: bytes.Clone(buf[:n])}
			s.mu.Lock()
			s.count++
			s.mu.Unlock()
			select {
			case s.arrivals <- a:
			default:
				t.Errorf("udpServer: arrivals channel full")
			}
			if reply != nil {
				if out := reply(a); out != nil {
					_, _ = conn.WriteToUDP(out, from)
				}
			}
		}
	})
	t.Cleanup(func() {
		_ = conn.Close()
		wg.Wait()
	})
	return s
}

func (s *udpServer) addr() string { return s.conn.LocalAddr().String() }

func (s *udpServer) received() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count
}

// next returns the next arrival, failing the test after testTimeout.
func (s *udpServer) next(t *testing.T) arrival {
	t.Helper()
	select {
	case a := <-s.arrivals:
		return a
	case <-time.After(testTimeout):
		t.Fatal("timed out waiting for a datagram at the target")
		return arrival{}
	}
}

func echoReply(a arrival) []byte { return a.data }

// udpClient dials addr from a fresh socket, closed at cleanup.
func udpClient(t *testing.T, addr net.Addr) *net.UDPConn {
	t.Helper()
	c, err := net.DialUDP("udp", nil, addr.(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadBuffer(socketBuffer)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// readReply reads one datagram, failing the test after testTimeout.
func readReply(t *testing.T, c *net.UDPConn) []byte {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(testTimeout))
	buf := make([]byte, maxDatagram)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("read reply: %v", err)
	}
	return buf[:n]
}

// seqPacket is a datagram of size bytes carrying seq in its first 8.
func seqPacket(seq uint64, size int) []byte {
	b := make([]byte, max(size, 8))
	binary.BigEndian.PutUint64(b, seq)
	return b
}

func seqOf(b []byte) uint64 { return binary.BigEndian.Uint64(b) }

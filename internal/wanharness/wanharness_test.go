package wanharness

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// testTimeout bounds every wait; tests wait on events, never on the clock.
const testTimeout = 30 * time.Second

func TestParseLinkSpec(t *testing.T) {
	t.Parallel()
	s, err := ParseLinkSpec("name=r1,udp_target=127.0.0.1:6379,tcp_target=127.0.0.1:10001,rtt=20ms,jitter=1ms,loss=0.01,bandwidth=100mbit")
	if err != nil {
		t.Fatal(err)
	}
	want := LinkSpec{
		Name: "r1", UDPTarget: "127.0.0.1:6379", TCPTarget: "127.0.0.1:10001",
		RTT: 20 * time.Millisecond, Jitter: time.Millisecond, Loss: 0.01, Bandwidth: 100e6,
	}
	if s != want {
		t.Fatalf("got %+v\nwant %+v", s, want)
	}
	cfg := s.Config()
	if cfg.Up.Delay != 10*time.Millisecond || cfg.Down.Delay != 10*time.Millisecond || !cfg.Up.InOrder ||
		cfg.Up.Loss != 0.01 || cfg.Down.Bandwidth != 100e6 {
		t.Errorf("config %+v: want 10ms each way, in order, 1%% loss, 100mbit", cfg)
	}
	// String round-trips.
	again, err := ParseLinkSpec(s.String())
	if err != nil || again != s {
		t.Errorf("ParseLinkSpec(%q) = %+v, %v; want %+v", s.String(), again, err, s)
	}
	full := "name=x,udp_target=h:1,listen=0.0.0.0,tcp_listen=127.0.0.1:9,queue=5000,reorder=true,seed=7,loss=2%"
	if s, err = ParseLinkSpec(full); err != nil || s.Loss != 0.02 || !s.Reorder || s.QueueBytes != 5000 || s.Seed != 7 ||
		s.TCPListen != "127.0.0.1:9" || s.Listen != "0.0.0.0" {
		t.Errorf("ParseLinkSpec(%q) = %+v, %v", full, s, err)
	}
	for _, bad := range []string{
		"udp_target=h:1",                  // no name
		"name=r1",                         // no target
		"name=r1,udp_target=h:1,rtt=fast", // bad duration
		"name=r1,udp_target=h:1,loss=2",   // loss > 1
		"name=r1,udp_target=h:1,bandwidth=10furlongs",
		"name=r1,udp_target=h:1,colour=blue",
		"name=r1,udp_target=h:1,udp_target=h:2",
		"name=r/1,udp_target=h:1",
		"name=r1,udp_target",
	} {
		if s, err := ParseLinkSpec(bad); err == nil {
			t.Errorf("ParseLinkSpec(%q) = %+v, want an error", bad, s)
		}
	}
}

func TestParseLinksJSON(t *testing.T) {
	t.Parallel()
	got, err := ParseLinksJSON([]byte(`[
		{"name": "r1", "udp_target": "127.0.0.1:1", "rtt": "80ms", "loss": 0.01, "bandwidth": "200mbit", "seed": 1000000},
		{"name": "r2", "tcp_target": "127.0.0.1:2", "reorder": true}]`))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].RTT != 80*time.Millisecond || got[0].Loss != 0.01 || got[0].Bandwidth != 200e6 ||
		got[0].Seed != 1000000 || got[1].TCPTarget != "127.0.0.1:2" || !got[1].Reorder {
		t.Errorf("got %+v", got)
	}
	for _, bad := range []string{`{}`, `[{"name": "x"}]`, `[{"name": "x", "udp_target": ["a"]}]`} {
		if _, err := ParseLinksJSON([]byte(bad)); err == nil {
			t.Errorf("ParseLinksJSON(%s): want an error", bad)
		}
	}
}

func TestNewRejectsDuplicateNames(t *testing.T) {
	t.Parallel()
	s := LinkSpec{Name: "a", UDPTarget: "127.0.0.1:9"}
	if h, err := New([]LinkSpec{s, s}, nil); err == nil {
		_ = h.Close()
		t.Fatal("want an error for a duplicate link name")
	}
}

// graywan is a Main running in the test, with what it printed at startup.
type graywan struct {
	links   map[string]LinkInfo
	control string
	stdin   *io.PipeWriter
	exit    chan int
}

// startMain runs Main(args) until the test ends, and reads its startup
// lines up to READY.
func startMain(t *testing.T, args ...string) *graywan {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	g := &graywan{links: map[string]LinkInfo{}, stdin: inW, exit: make(chan int, 1)}
	var stderr syncBuffer
	go func() {
		g.exit <- Main(ctx, args, inR, outW, &stderr)
		_ = outW.Close()
	}()
	t.Cleanup(func() {
		cancel()
		_ = inW.Close()
		select {
		case <-g.exit:
		case <-time.After(testTimeout):
			t.Error("graywan did not exit")
		}
		if t.Failed() {
			t.Logf("graywan stderr:\n%s", stderr.String())
		}
	})
	lines := bufio.NewScanner(outR)
	for lines.Scan() {
		line := lines.Text()
		if line == "READY" {
			go func() { _, _ = io.Copy(io.Discard, outR) }()
			return g
		}
		var info LinkInfo
		var ctl struct{ Control string }
		switch {
		case json.Unmarshal([]byte(line), &ctl) == nil && ctl.Control != "":
			g.control = ctl.Control
		case json.Unmarshal([]byte(line), &info) == nil && info.Name != "":
			g.links[info.Name] = info
		default:
			t.Fatalf("unexpected startup line %q", line)
		}
	}
	t.Fatalf("graywan exited before READY (status %d):\n%s", <-g.exit, stderr.String())
	return nil
}

func (g *graywan) post(t *testing.T, path string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Post("http://"+g.control+path, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func (g *graywan) stats(t *testing.T) map[string]LinkStats {
	t.Helper()
	resp, err := http.Get("http://" + g.control + "/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]LinkStats
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestEndToEnd drives the graywan entry point over real sockets: delay on
// both protocols, partition and heal through the control API, counters.
func TestEndToEnd(t *testing.T) {
	t.Parallel()
	const rtt = 40 * time.Millisecond
	udpEcho := newUDPEcho(t)
	tcpEcho := newTCPEcho(t)
	g := startMain(t,
		"--link", fmt.Sprintf("name=r1,udp_target=%s,tcp_target=%s,rtt=%s,bandwidth=100mbit", udpEcho.addr(), tcpEcho.addr(), rtt),
		"--link", fmt.Sprintf("name=r2,udp_target=%s,rtt=2ms", udpEcho.addr()))
	r1, r2 := g.links["r1"], g.links["r2"]
	if r1.UDP == "" || r1.TCP == "" || r2.UDP == "" || r2.TCP != "" || g.control == "" {
		t.Fatalf("startup lines: links %+v, control %q", g.links, g.control)
	}

	// UDP: one echo takes at least the RTT.
	uc := dialUDP(t, r1.UDP)
	start := time.Now()
	if got := udpRoundTrip(t, uc, "ping"); got != "ping" {
		t.Fatalf("UDP echo %q", got)
	}
	if d := time.Since(start); d < rtt {
		t.Errorf("UDP round trip %v, below the link RTT %v", d, rtt)
	}
	// TCP: so does a line echoed over a connection.
	tc, err := net.Dial("tcp", r1.TCP)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	tr := bufio.NewReader(tc)
	start = time.Now()
	tcpRoundTrip(t, tc, tr, "hello\n")
	if d := time.Since(start); d < rtt {
		t.Errorf("TCP round trip %v, below the link RTT %v", d, rtt)
	}
	<-tcpEcho.lines // "hello\n" reached the server

	// The counters are bumped after each write returns: they may trail the
	// echoes a little.
	eventually(t, "one datagram and 6 TCP bytes each way in the stats", func() bool {
		st := g.stats(t)["r1"]
		return st.UDP.Up.Forwarded == 1 && st.UDP.Down.Forwarded == 1 && st.UDP.Sessions == 1 &&
			st.TCP.Up.ForwardedBytes == 6 && st.TCP.Down.ForwardedBytes == 6 && !st.Partitioned
	})

	// Partition r1: UDP is dropped, TCP held; r2 is unaffected.
	if code, body := g.post(t, "/partition?link=r1"); code != http.StatusOK || body["partitioned"] != true {
		t.Fatalf("partition: %d %v", code, body)
	}
	if _, err := uc.Write([]byte("lost")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the datagram to be dropped by the partition", func() bool {
		return g.stats(t)["r1"].UDP.Up.DroppedPartition == 1
	})
	if got := udpRoundTrip(t, dialUDP(t, r2.UDP), "other"); got != "other" {
		t.Fatalf("r2 echo %q during r1's partition", got)
	}
	if _, err := io.WriteString(tc, "held\n"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the TCP proxy to read the held line", func() bool {
		return g.stats(t)["r1"].TCP.Up.ReceivedBytes == 11
	})
	// Nothing reaches the far side while partitioned (an absence can only
	// be observed over a window: a few RTTs).
	select {
	case line := <-tcpEcho.lines:
		t.Fatalf("%q crossed a partitioned link", line)
	case <-time.After(5 * rtt):
	}
	healed := time.Now()
	if code, body := g.post(t, "/heal?link=r1"); code != http.StatusOK || body["partitioned"] != false {
		t.Fatalf("heal: %d %v", code, body)
	}
	if line := expectLine(t, tr); line != "held\n" {
		t.Fatalf("after heal TCP echoed %q", line)
	}
	if time.Since(healed) < rtt/2 {
		t.Errorf("the held line came back %v after healing, want at least the return trip %v", time.Since(healed), rtt/2)
	}
	if got := udpRoundTrip(t, uc, "again"); got != "again" {
		t.Fatalf("UDP echo after heal %q", got)
	}
	eventually(t, "3 datagrams received, 2 forwarded, 1 dropped", func() bool {
		up := g.stats(t)["r1"].UDP.Up
		return up.Received == 3 && up.Forwarded == 2 && up.Dropped == 1
	})

	// Partitioning one protocol only.
	if code, body := g.post(t, "/partition?link=r1&proto=tcp"); code != http.StatusOK ||
		body["tcp"].(map[string]any)["partitioned"] != true || body["udp"].(map[string]any)["partitioned"] != false {
		t.Fatalf("partition tcp only: %d %v", code, body)
	}
	if got := udpRoundTrip(t, uc, "udp still up"); got != "udp still up" {
		t.Fatalf("UDP echo %q", got)
	}
	if code, _ := g.post(t, "/heal?link=r1&proto=tcp"); code != http.StatusOK {
		t.Fatal("heal tcp")
	}
}

// TestLoss: a lossy link drops about the configured share of datagrams, the
// same ones for the same seed.
func TestLoss(t *testing.T) {
	t.Parallel()
	const n = 400
	srv := newUDPEcho(t)
	g := startMain(t, "--link", "name=lossy,loss=0.25,seed=3,udp_target="+srv.addr())
	c := dialUDP(t, g.links["lossy"].UDP)
	for i := range n {
		if _, err := c.Write([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "every datagram to be accounted for", func() bool {
		up := g.stats(t)["lossy"].UDP.Up
		return up.Received == n && up.Forwarded+up.Dropped == n
	})
	up := g.stats(t)["lossy"].UDP.Up
	if up.DroppedLoss < n/8 || up.DroppedLoss > n*3/8 || up.DroppedLoss != up.Dropped {
		t.Errorf("dropped %d of %d for loss (%d in all), want about a quarter", up.DroppedLoss, n, up.Dropped)
	}
}

func TestControlErrors(t *testing.T) {
	t.Parallel()
	srv := newUDPEcho(t)
	g := startMain(t, "--link", "name=only-udp,udp_target="+srv.addr())
	for _, tc := range []struct {
		method, path string
		want         int
	}{
		{"POST", "/partition", http.StatusBadRequest},
		{"POST", "/partition?link=nope", http.StatusNotFound},
		{"POST", "/partition?link=only-udp&proto=sctp", http.StatusBadRequest},
		{"POST", "/partition?link=only-udp&proto=tcp", http.StatusBadRequest},
		{"GET", "/partition?link=only-udp", http.StatusMethodNotAllowed},
		{"GET", "/stats?link=nope", http.StatusNotFound},
		{"GET", "/stats?link=only-udp", http.StatusOK},
		{"GET", "/links", http.StatusOK},
		{"POST", "/heal?link=only-udp&proto=udp", http.StatusOK},
	} {
		req, _ := http.NewRequest(tc.method, "http://"+g.control+tc.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s %s = %d, want %d", tc.method, tc.path, resp.StatusCode, tc.want)
		}
	}
}

// TestExit: graywan exits 0 when stdin closes, and when its context (the
// signals) ends; bad arguments exit 2.
func TestExit(t *testing.T) {
	t.Parallel()
	srv := newUDPEcho(t)
	g := startMain(t, "--link", "name=a,udp_target="+srv.addr())
	_ = g.stdin.Close()
	select {
	case code := <-g.exit:
		if code != 0 {
			t.Errorf("exit status %d after stdin closed", code)
		}
		g.exit <- code // for the cleanup
	case <-time.After(testTimeout):
		t.Fatal("graywan did not exit when stdin closed")
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	outR, outW := io.Pipe()
	go func() {
		done <- Main(ctx, []string{"--watch-stdin=false", "--link", "name=a,udp_target=" + srv.addr()}, strings.NewReader(""), outW, io.Discard)
		_ = outW.Close()
	}()
	lines := bufio.NewScanner(outR)
	for lines.Scan() && lines.Text() != "READY" {
	}
	go func() { _, _ = io.Copy(io.Discard, outR) }()
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("exit status %d after the context ended", code)
	}

	for _, args := range [][]string{
		{},
		{"--link", "name=a"},
		{"--link", "name=a,udp_target=h:1", "stray"},
		{"--links-json", "/nonexistent.json"},
	} {
		if code := Main(context.Background(), args, strings.NewReader(""), io.Discard, io.Discard); code != 2 {
			t.Errorf("Main(%q) = %d, want 2", args, code)
		}
	}
}

// --- helpers ---

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// eventually polls cond until it holds, failing after testTimeout.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

type udpEcho struct{ conn *net.UDPConn }

func newUDPEcho(t *testing.T) *udpEcho {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 64<<10)
		for {
			n, from, err := conn.ReadFromUDP(buf)
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err == nil {
				_, _ = conn.WriteToUDP(buf[:n], from)
			}
		}
	})
	t.Cleanup(func() {
		_ = conn.Close()
		wg.Wait()
	})
	return &udpEcho{conn: conn}
}

func (e *udpEcho) addr() string { return e.conn.LocalAddr().String() }

func dialUDP(t *testing.T, addr string) *net.UDPConn {
	t.Helper()
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.DialUDP("udp", nil, ua)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func udpRoundTrip(t *testing.T, c *net.UDPConn, msg string) string {
	t.Helper()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(testTimeout))
	buf := make([]byte, 64<<10)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("UDP read: %v", err)
	}
	return string(buf[:n])
}

// tcpEcho echoes lines and reports each on lines.
type tcpEcho struct {
	ln    net.Listener
	lines chan string
}

func newTCPEcho(t *testing.T) *tcpEcho {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &tcpEcho{ln: ln, lines: make(chan string, 100)}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					e.lines <- line
					if _, err := io.WriteString(c, line); err != nil {
						return
					}
				}
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
	return e
}

func (e *tcpEcho) addr() string { return e.ln.Addr().String() }

func tcpRoundTrip(t *testing.T, c net.Conn, r *bufio.Reader, line string) {
	t.Helper()
	if _, err := io.WriteString(c, line); err != nil {
		t.Fatal(err)
	}
	if got := expectLine(t, r); got != line {
		t.Fatalf("TCP echoed %q, want %q", got, line)
	}
}

func expectLine(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	type result struct {
		line string
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		line, err := r.ReadString('\n')
		ch <- result{line, err}
	}()
	select {
	case res := <-ch:
		if res.err != nil {
			t.Fatalf("TCP read: %v", res.err)
		}
		return res.line
	case <-time.After(testTimeout):
		t.Fatal("timed out reading a TCP line")
		return ""
	}
}

// TestGossipProxies: a link with a gossip_target proxies UDP and TCP on one
// port to it, and a partition of the link cuts gossip too.
func TestGossipProxies(t *testing.T) {
	t.Parallel()
	echo := newUDPEcho(t)
	spec, err := ParseLinkSpec("name=g,udp_target=127.0.0.1:9,gossip_target=" + echo.addr())
	if err != nil {
		t.Fatal(err)
	}
	if spec.GossipTarget != echo.addr() {
		t.Fatalf("gossip target %q, want %q", spec.GossipTarget, echo.addr())
	}
	h, err := New([]LinkSpec{spec}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	if err := h.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	l := h.Link("g")
	addr := l.GossipAddr()
	if addr == "" || l.Info().Gossip != addr {
		t.Fatalf("gossip address %q, info %+v", addr, l.Info())
	}
	// memberlist advertises one port for UDP and TCP: both must be bound.
	if tcp := l.gossipTCP.Addr().String(); tcp != addr {
		t.Fatalf("gossip TCP proxy on %s, UDP on %s", tcp, addr)
	}
	c := dialUDP(t, addr)
	if got := udpRoundTrip(t, c, "ping"); got != "ping" {
		t.Fatalf("echo %q", got)
	}
	if err := l.SetPartitioned(true, ProtoBoth); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("lost")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "gossip datagram dropped by the partition", func() bool {
		return l.Stats().GossipUDP.Up.DroppedPartition > 0
	})
}

package tunnel

import (
	"bufio"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// startProxy runs a Proxy for provider p of c: its own VIP and 127.0.0.1
// are local, the rest goes through its agent.
func startProxy(t *testing.T, p *prov) *Proxy {
	t.Helper()
	px, err := NewProxy(p.agent.Dial, func(host string) bool { return host == p.vip || host == "127.0.0.1" })
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := px.Serve(t.Context()); err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	t.Cleanup(func() {
		_ = px.Close()
		wg.Wait()
	})
	return px
}

// connect opens target through the proxy at proxyAddr, sending early
// after the request in the same write.
func connect(ctx context.Context, proxyAddr, target string, early []byte) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", proxyAddr)
	if err != nil {
		return nil, err
	}
	req := fmt.Appendf(nil, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	if _, err := c.Write(append(req, early...)); err != nil {
		c.Close()
		return nil, err
	}
	if err := readProxyResponse(c); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// readProxyResponse reads the response head byte by byte (nothing past it
// is consumed) and fails unless it is a 200.
func readProxyResponse(c net.Conn) error {
	var head []byte
	b := make([]byte, 1)
	for !strings.HasSuffix(string(head), "\r\n\r\n") {
		if _, err := c.Read(b); err != nil {
			return fmt.Errorf("proxy response %q: %w", head, err)
		}
		head = append(head, b[0])
	}
	resp, err := http.ReadResponse(bufio.NewReader(io.MultiReader(strings.NewReader(string(head)), c)), &http.Request{Method: http.MethodConnect})
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("proxy: %s: %s", resp.Status, body)
	}
	return nil
}

// grpcHealthServer serves the gRPC health service on host:0.
func grpcHealthServer(t *testing.T, host string) string {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	healthpb.RegisterHealthServer(g, health.NewServer())
	var wg sync.WaitGroup
	wg.Go(func() { _ = g.Serve(l) })
	t.Cleanup(func() {
		g.Stop()
		wg.Wait()
	})
	return l.Addr().String()
}

// A gRPC call from provider A through its proxy, its agent and the hub to
// a gRPC server on provider B; and one to A's own VIP, dialled locally.
func TestProxyGRPC(t *testing.T) {
	t.Parallel()
	eachKind(t, func(t *testing.T, kind string) {
		ctx := testCtx(t)
		c := newCluster(t, kind, clusterOpts{})
		a, b := c.provs[nodeA], c.provs[nodeB]
		px := startProxy(t, a)
		for _, tc := range []struct {
			target string
			via    *prov
		}{{grpcHealthServer(t, vipB), b}, {grpcHealthServer(t, vipA), nil}} {
			before := b.dials.Load()
			cc, err := grpc.NewClient("passthrough:///"+tc.target,
				grpc.WithTransportCredentials(insecure.NewCredentials()),
				grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
					return connect(ctx, px.Addr(), addr, nil)
				}))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
			cc.Close()
			if err != nil {
				t.Fatalf("health check of %s through the proxy: %v", tc.target, err)
			}
			if resp.Status != healthpb.HealthCheckResponse_SERVING {
				t.Fatalf("status %v", resp.Status)
			}
			if want := before + map[bool]int64{true: 1}[tc.via == b]; b.dials.Load() != want {
				t.Errorf("%s: B made %d local dials, want %d", tc.target, b.dials.Load(), want)
			}
		}
	})
}

// The proxy answers 502 with the reason when the tunnel cannot reach the
// target, 400 to requests it cannot parse, and keeps serving.
func TestProxyErrors(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	c := newCluster(t, "mem", clusterOpts{})
	px := startProxy(t, c.provs[nodeA])
	for target, want := range map[string]string{
		"10.9.9.9:80":              "502 Bad Gateway",
		closedPort(t, vipB):        "502 Bad Gateway",
		closedPort(t, "127.0.0.1"): "502 Bad Gateway",
		notOwned + ":80":           "502 Bad Gateway",
	} {
		_, err := connect(ctx, px.Addr(), target, nil)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("CONNECT %s: %v, want %s", target, err, want)
		}
	}
	for _, req := range []string{
		"GARBAGE\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"CONNECT nohost HTTP/1.1\r\n\r\n",
		"CONNECT 1.2.3.4:80 SPDY/3\r\n\r\n",
		"CONNECT 1.2.3.4:80 HTTP/1.1\r\nHost: " + strings.Repeat("x", 9000) + "\r\n\r\n",
		"CONNECT 1.2.3.4:80 HTTP/1.1\r\n", // then EOF
	} {
		conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", px.Addr())
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			_, _ = io.WriteString(conn, req)
			_ = conn.(*net.TCPConn).CloseWrite()
		}()
		if err := readProxyResponse(conn); err == nil || !strings.Contains(err.Error(), "400 Bad Request") {
			t.Errorf("request %.40q: %v, want 400", req, err)
		}
		conn.Close()
	}
	// Still serving; bytes sent right behind the request arrive too.
	conn, err := connect(ctx, px.Addr(), echoServer(t, vipB), []byte("early "))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	got := make([]byte, len("early "))
	if _, err := io.ReadFull(conn, got); err != nil || string(got) != "early " {
		t.Fatalf("early data: %q, %v", got, err)
	}
	if err := roundTrip(conn, []byte("and more")); err != nil {
		t.Fatal(err)
	}
}

func TestEnv(t *testing.T) {
	t.Parallel()
	got := Env("127.0.0.1:4242", []string{"10.0.0.1", "10.0.0.2"})
	want := []string{"RAY_grpc_enable_http_proxy=1", "grpc_proxy=http://127.0.0.1:4242", "no_grpc_proxy=10.0.0.1,10.0.0.2"}
	if !slices.Equal(got, want) {
		t.Fatalf("Env = %q, want %q", got, want)
	}
	if got := Env("127.0.0.1:1", nil); len(got) != 2 {
		t.Fatalf("Env without exemptions = %q", got)
	}
}

// stockPython is the repository's .venv interpreter (stock grpcio, as the
// Ray wheel pins it), or "".
func stockPython() string {
	for _, env := range []string{"GRAY_RAY_PYTHON", "GRAY_PYTHON"} { // GRAY_PYTHON: set by make test-go
		if p := os.Getenv(env); p != "" {
			return p
		}
	}
	p, err := filepath.Abs("../.venv/bin/python")
	if err != nil {
		return ""
	}
	if _, err := os.Stat(p); err != nil {
		return ""
	}
	return p
}

// gRPC's C core (what Ray's core workers use) honours Env and goes through
// the proxy: a health check from Python's grpcio on "provider A" reaches a
// server on provider B through the tunnel.
func TestProxyStockGRPC(t *testing.T) {
	t.Parallel()
	py := stockPython()
	if py == "" {
		t.Skip("no .venv python with grpcio")
	}
	ctx := testCtx(t)
	c := newCluster(t, "quic", clusterOpts{})
	b := c.provs[nodeB]
	px := startProxy(t, c.provs[nodeA])
	target := grpcHealthServer(t, vipB)
	script := `
import sys, grpc
ch = grpc.insecure_channel(sys.argv[1])
check = ch.unary_unary("/grpc.health.v1.Health/Check")
print(check(b"", timeout=60).hex())
`
	cmd := exec.CommandContext(ctx, py, "-c", script, target)
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); !strings.Contains(strings.ToLower(k), "proxy") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, Env(px.Addr(), nil)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("python grpc: %v\n%s", err, out)
	}
	// HealthCheckResponse{status: SERVING} is field 1 = 1.
	if got := strings.TrimSpace(string(out)); got != hex.EncodeToString([]byte{0x08, 0x01}) {
		t.Fatalf("health response %q", got)
	}
	if b.dials.Load() == 0 {
		t.Fatal("the call did not go through provider B's agent")
	}
}

// Half-close through the proxy: the client sends a request and its FIN, and
// reads the whole answer up to the server's FIN, across the relay.
func TestProxyHalfClose(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	c := newCluster(t, "quic", clusterOpts{})
	px := startProxy(t, c.provs[nodeA])
	target := tcpServer(t, vipB, func(conn *net.TCPConn) {
		req, err := io.ReadAll(conn) // up to the client's FIN
		if err != nil {
			t.Errorf("server: %v", err)
			return
		}
		_, _ = fmt.Fprintf(conn, "you sent %d bytes", len(req))
		_ = conn.CloseWrite()
	})
	conn, err := connect(ctx, px.Addr(), target, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write(make([]byte, 100000)); err != nil {
		t.Fatal(err)
	}
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(conn)
	if err != nil || string(got) != "you sent 100000 bytes" {
		t.Fatalf("answer %q, %v", got, err)
	}
}

// Package testredis runs one real redis-server for a test binary: started
// on first use on a free loopback port, without persistence, in a temporary
// directory, and stopped by Main. Tests share it under distinct key
// prefixes or namespaces.
//
// Without redis-server on PATH, URL skips the test, or fails it when the
// environment sets GRAY_REQUIRE_REDIS (as `make test` does).
package testredis

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

var server struct {
	once   sync.Once
	url    string
	err    error
	cmd    *exec.Cmd
	exited chan error
	dir    string
}

// Main runs the tests and then stops the server, if one was started.
func Main(m *testing.M) {
	code := m.Run()
	if server.cmd != nil {
		server.cmd.Process.Kill()
		<-server.exited
	}
	if server.dir != "" {
		os.RemoveAll(server.dir)
	}
	os.Exit(code)
}

// URL is the server's redis:// URL (database 0), starting it if need be.
func URL(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("GRAY_REQUIRE_REDIS") != "" {
			t.Fatalf("GRAY_REQUIRE_REDIS is set but redis-server is not on PATH (%v); install it: make ci-deps", err)
		}
		t.Skip("redis-server not on PATH: skipping the Redis backend " +
			"(install it: make ci-deps or apt-get install redis-server; set GRAY_REQUIRE_REDIS=1 to fail instead of skipping)")
	}
	server.once.Do(func() { server.err = start(bin) })
	if server.err != nil {
		t.Fatal(server.err)
	}
	return server.url
}

func start(bin string) error {
	dir, err := os.MkdirTemp("", "gray-test-redis-")
	if err != nil {
		return err
	}
	server.dir = dir
	var lastErr error
	for range 3 { // another process may take the free port first
		port, err := freePort()
		if err != nil {
			return err
		}
		out := &lockedBuffer{}
		cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no", "--dir", dir)
		cmd.Stdout, cmd.Stderr = out, out
		setPdeathsig(cmd)
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("start redis-server: %w", err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		url := fmt.Sprintf("redis://127.0.0.1:%d/0", port)
		if err = waitReady(url, exited); err == nil {
			server.url, server.cmd, server.exited = url, cmd, exited
			return nil
		}
		lastErr = fmt.Errorf("redis-server on port %d: %v; output:\n%s", port, err, out.String())
		cmd.Process.Kill()
		<-exited
	}
	return lastErr
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// waitReady polls PING until it answers, the server exits, or 10s pass.
func waitReady(url string, exited chan error) error {
	opt, err := redis.ParseURL(url)
	if err != nil {
		return err
	}
	c := redis.NewClient(opt)
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		select {
		case werr := <-exited:
			exited <- werr
			return fmt.Errorf("exited: %v", werr)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no answer to PING: %v", err)
		}
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

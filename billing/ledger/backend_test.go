package ledger

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// opener opens a new handle on one store; every handle it opens sees the
// same ledger, as reopening a bbolt file does.
type opener func() (*Ledger, error)

// backends are the stores the behavioural tests (TestPostErrors,
// TestPersistsAcrossReopen, TestEscrowLifecycle, TestConcurrentPosts,
// TestLedgerProperty) run against. store makes a fresh, empty one.
var backends = []struct {
	name  string
	store func(t *testing.T) opener
}{
	{"bbolt", boltStore},
	{"redis", redisStore},
}

func forEachBackend(t *testing.T, test func(t *testing.T, store opener)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { test(t, b.store(t)) })
	}
}

func boltStore(t *testing.T) opener {
	path := filepath.Join(t.TempDir(), "ledger.db")
	return func() (*Ledger, error) { return Open(path) }
}

var redisStores atomic.Int64

// redisStore is a fresh prefix on the test Redis server.
func redisStore(t *testing.T) opener {
	t.Helper()
	store, _, _ := newRedisStore(t)
	return store
}

// newRedisStore is redisStore, with the server's URL and the key prefix.
func newRedisStore(t *testing.T) (store opener, url, prefix string) {
	t.Helper()
	url = redisURL(t)
	prefix = fmt.Sprintf("test:%d:%s:", redisStores.Add(1), t.Name())
	return func() (*Ledger, error) { return OpenRedis(context.Background(), url, prefix) }, url, prefix
}

// mustOpen opens a handle, closed when the test ends.
func mustOpen(t *testing.T, store opener) *Ledger {
	t.Helper()
	l, err := store()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// The test Redis server: one redis-server per test binary, started on first
// use on a free port with no persistence, stopped by TestMain. Tests share it
// under distinct key prefixes.
var testRedis struct {
	once   sync.Once
	url    string
	err    error
	cmd    *exec.Cmd
	exited chan error
	dir    string
}

func TestMain(m *testing.M) {
	code := m.Run()
	if testRedis.cmd != nil {
		testRedis.cmd.Process.Kill()
		<-testRedis.exited
	}
	if testRedis.dir != "" {
		os.RemoveAll(testRedis.dir)
	}
	os.Exit(code)
}

// redisURL is the test server's URL, starting it if need be. Without
// redis-server on PATH the test is skipped, or fails if GRAY_REQUIRE_REDIS
// is set (as CI sets it).
func redisURL(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("GRAY_REQUIRE_REDIS") != "" {
			t.Fatalf("GRAY_REQUIRE_REDIS is set but redis-server is not on PATH (%v); install it: make ci-deps", err)
		}
		t.Skip("redis-server not on PATH: skipping the Redis ledger backend " +
			"(install it: make ci-deps or apt-get install redis-server; set GRAY_REQUIRE_REDIS=1 to fail instead of skipping)")
	}
	testRedis.once.Do(func() { testRedis.err = startRedis(bin) })
	if testRedis.err != nil {
		t.Fatal(testRedis.err)
	}
	return testRedis.url
}

// startRedis starts redis-server on a free port, in a temporary directory.
func startRedis(bin string) error {
	dir, err := os.MkdirTemp("", "gray-ledger-redis-")
	if err != nil {
		return err
	}
	testRedis.dir = dir
	var lastErr error
	for range 3 { // another process may take the free port before redis-server does
		port, err := freePort()
		if err != nil {
			return err
		}
		var out syncBuffer
		cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no", "--dir", dir)
		cmd.Stdout, cmd.Stderr = &out, &out
		setPdeathsig(cmd)
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("start redis-server: %w", err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		url := fmt.Sprintf("redis://127.0.0.1:%d/0", port)
		err = waitRedis(url, exited)
		if err == nil {
			testRedis.url, testRedis.cmd, testRedis.exited = url, cmd, exited
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

// waitRedis waits until the server at url answers PING.
// If the server exits instead, its exit error is put back in exited.
func waitRedis(url string, exited chan error) error {
	c := rawRedis(url)
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

// rawRedis is a plain client, for tests that look behind the ledger's back.
func rawRedis(url string) *redis.Client {
	opt, err := redis.ParseURL(url)
	if err != nil {
		panic(err)
	}
	opt.MaxRetries = -1
	return redis.NewClient(opt)
}

// syncBuffer is a bytes.Buffer safe for the writes of a child's stdout and
// stderr and a read in between.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

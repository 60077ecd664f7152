package ledger

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/gray-cluster/gray/internal/testredis"
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

func TestMain(m *testing.M) { testredis.Main(m) }

// redisURL is the URL of the test binary's one redis-server (started on
// first use; see internal/testredis for skipping without one).
func redisURL(t *testing.T) string {
	t.Helper()
	return testredis.URL(t)
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
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

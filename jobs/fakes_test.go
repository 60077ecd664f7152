package jobs

import (
	"archive/zip"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// fakeClock is a Clock whose time moves only when the test says.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []fakeWaiter
	added   chan struct{} // a token per After call
}

type fakeWaiter struct {
	at time.Time
	ch chan time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.UnixMilli(1_700_000_000_000), added: make(chan struct{}, 1024)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	c.waiters = append(c.waiters, fakeWaiter{at: c.now.Add(d), ch: ch})
	c.added <- struct{}{}
	return ch
}

// Advance moves time on and fires the waits that are due.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if !w.at.After(c.now) {
			w.ch <- c.now
		} else {
			kept = append(kept, w)
		}
	}
	c.waiters = kept
}

// nextWait blocks until someone calls After.
func (c *fakeClock) nextWait(t *testing.T) {
	t.Helper()
	select {
	case <-c.added:
	case <-time.After(30 * time.Second):
		t.Fatal("nobody waited on the clock")
	}
}

// fakeResources is a one-node ledger.
type fakeResources struct {
	mu    sync.Mutex
	total map[string]float64
	held  map[string]map[string]float64
}

func newFakeResources(total map[string]float64) *fakeResources {
	return &fakeResources{total: total, held: map[string]map[string]float64{}}
}

func (r *fakeResources) Total() map[string]float64 { return r.total }

func (r *fakeResources) TryHold(key string, need map[string]float64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	used := map[string]float64{}
	for _, h := range r.held {
		for k, v := range h {
			used[k] += v
		}
	}
	for k, v := range need {
		if used[k]+v > r.total[k] {
			return false
		}
	}
	r.held[key] = need
	return true
}

func (r *fakeResources) Release(key string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.held, key)
}

func (r *fakeResources) heldCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.held)
}

type fakeDrivers struct{ list []Driver }

func (d fakeDrivers) Drivers() []Driver { return append([]Driver(nil), d.list...) }

func testManager(t *testing.T, edit func(*Config)) (*Manager, *fakeClock) {
	t.Helper()
	clk := newFakeClock()
	dir := t.TempDir()
	cfg := Config{
		Clock: clk, LogDir: filepath.Join(dir, "logs"), JobsDir: filepath.Join(dir, "jobs"),
		BaseEnv: []string{"PATH=" + os.Getenv("PATH"), "RAY_ADDRESS=should-be-replaced", "RAY_JOB_ID=01000000"},
		Addresses: func() Addresses {
			return Addresses{Client: "127.0.0.1:10001", NodeID: "aa", NodeIP: "127.0.0.1", APIServer: "http://127.0.0.1:8265"}
		},
		Resources: newFakeResources(map[string]float64{"CPU": 1}),
		Wrapper:   testWrapper(t),
	}
	if edit != nil {
		edit(&cfg)
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		m.Close()
	})
	return m, clk
}

// TestMain lets the test binary be the entrypoint wrapper too, as the
// gray binary is.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == WrapperCommand {
		os.Exit(RunWrapper(os.Args[2:]))
	}
	os.Exit(m.Run())
}

func testWrapper(t *testing.T) []string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return []string{exe, WrapperCommand}
}

func wait(t *testing.T, m *Manager, sid string) Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rec, err := m.Wait(ctx, sid)
	if err != nil {
		t.Fatalf("waiting for %s: %v (last %+v)", sid, err, rec)
	}
	return rec
}

// fifo makes a named pipe the test and an entrypoint meet at.
func fifo(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(p, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// readFifo blocks until the entrypoint writes a line to the pipe.
func readFifo(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p) // opens once the writer does; EOF when it closes
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func writeFifo(t *testing.T, p, s string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

// groupAlive reports whether a process of group pgid is alive (zombies
// waiting to be reaped do not count).
func groupAlive(pgid int) bool {
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		if _, err := strconv.Atoi(p.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", p.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		f := strings.Fields(s[i+1:])
		if len(f) > 2 && f[2] == strconv.Itoa(pgid) && f[0] != "Z" {
			return true
		}
	}
	return false
}

// groupGone waits until no process of the group is left (SIGKILL reaches
// the group's other processes asynchronously: the leader may be reaped
// before they are gone) and reports whether that happened within 10 s.
func groupGone(pgid int) bool {
	deadline := time.Now().Add(10 * time.Second)
	for groupAlive(pgid) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond) // polling /proc for a condition, not a synchronisation
	}
	return true
}

func makeZip(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, body := range files {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: name, Method: zip.Store})
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprint(w, body)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

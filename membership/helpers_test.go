package membership

import (
	"context"
	"io"
	"log/slog"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// fakeClock is a manual Clock: timers fire only inside Advance.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	c     *fakeClock
	at    time.Time
	f     func()
	state int // 0 pending, 1 fired, 2 stopped
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, at: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	return t
}

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	if t.state != 0 {
		return false
	}
	t.state = 2
	return true
}

// Advance moves time forward and runs the timers that came due, in order,
// on the caller's goroutine.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []*fakeTimer
	keep := c.timers[:0]
	for _, t := range c.timers {
		switch {
		case t.state != 0:
		case !t.at.After(c.now):
			t.state = 1
			due = append(due, t)
		default:
			keep = append(keep, t)
		}
	}
	c.timers = keep
	c.mu.Unlock()
	sort.SliceStable(due, func(i, j int) bool { return due[i].at.Before(due[j].at) })
	for _, t := range due {
		t.f()
	}
}

// recorder collects a node's events and lets tests wait for them.
type recorder struct {
	mu      sync.Mutex
	events  []Event
	changed chan struct{}
}

func newRecorder() *recorder { return &recorder{changed: make(chan struct{})} }

func (r *recorder) add(e Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
	close(r.changed)
	r.changed = make(chan struct{})
}

// mark returns a cursor: waitFrom(mark, …) ignores earlier events.
func (r *recorder) mark() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.events)
}

func (r *recorder) all() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

func (r *recorder) dump() string {
	var b strings.Builder
	for _, e := range r.all() {
		b.WriteString("\n  " + e.String())
	}
	return b.String()
}

// waitFrom blocks until an event at index >= from matches pred.
func (r *recorder) waitFrom(ctx context.Context, t *testing.T, from int, what string, pred func(Event) bool) Event {
	t.Helper()
	for {
		r.mu.Lock()
		for _, e := range r.events[min(from, len(r.events)):] {
			if pred(e) {
				r.mu.Unlock()
				return e
			}
		}
		ch := r.changed
		r.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s; events so far:%s", what, r.dump())
		}
	}
}

func (r *recorder) wait(ctx context.Context, t *testing.T, what string, pred func(Event) bool) Event {
	t.Helper()
	return r.waitFrom(ctx, t, 0, what, pred)
}

// count returns how many recorded events match pred.
func (r *recorder) count(pred func(Event) bool) int {
	n := 0
	for _, e := range r.all() {
		if pred(e) {
			n++
		}
	}
	return n
}

func is(typ EventType, name string) func(Event) bool {
	return func(e Event) bool { return e.Type == typ && e.Member.Name == name }
}

func isReason(typ EventType, name string, r Reason) func(Event) bool {
	return func(e Event) bool { return e.Type == typ && e.Member.Name == name && e.Reason == r }
}

var testKey = []byte("0123456789abcdef0123456789abcdef")

// fastTune shortens memberlist's timings so failures are detected in about
// a second on loopback while leaving slack for a loaded CI machine.
func fastTune(mc *memberlist.Config) {
	mc.ProbeInterval = 200 * time.Millisecond
	mc.ProbeTimeout = 100 * time.Millisecond
	mc.GossipInterval = 20 * time.Millisecond
	mc.PushPullInterval = 2 * time.Second
	mc.SuspicionMult = 3
	mc.SuspicionMaxTimeoutMult = 2
	mc.TCPTimeout = 2 * time.Second
	mc.IndirectChecks = 1
	mc.GossipToTheDeadTime = 2 * time.Second
}

// testNode is a started Membership with its event recorder and fake clock.
type testNode struct {
	*Membership
	rec   *recorder
	clock *fakeClock
	port  int
}

// syncWriter forwards to w until closed (no writes after the test ends).
type syncWriter struct {
	mu     sync.Mutex
	w      io.Writer
	closed bool
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return len(p), nil
	}
	return s.w.Write(p)
}

func testConfig(t *testing.T, name string) Config {
	level := slog.LevelWarn
	if os.Getenv("MEMBERSHIP_DEBUG") != "" {
		level = slog.LevelDebug
	}
	w := &syncWriter{w: t.Output()}
	t.Cleanup(func() { w.mu.Lock(); w.closed = true; w.mu.Unlock() })
	return Config{
		Name:     name,
		BindAddr: "127.0.0.1",
		Meta: Meta{
			Role: RoleRaylet, Region: "eu-west", ControlAddr: "127.0.0.1:9000",
			GPUs: "8xH100", Labels: map[string]string{"node": name},
		},
		SecretKey:    testKey,
		Profile:      ProfileLocal,
		DeadAfter:    30 * time.Second,
		SuspectAfter: 5 * time.Second,
		Logger:       slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})),
		Tune:         fastTune,
	}
}

// startNode starts a member; edit may adjust the config first.
func startNode(t *testing.T, name string, edit func(*Config)) *testNode {
	t.Helper()
	cfg := testConfig(t, name)
	n := &testNode{rec: newRecorder(), clock: newFakeClock()}
	cfg.Clock = n.clock
	cfg.OnEvent = n.rec.add
	if edit != nil {
		edit(&cfg)
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatalf("New(%s): %v", name, err)
	}
	if err := m.Start(t.Context()); err != nil {
		t.Fatalf("Start(%s): %v", name, err)
	}
	t.Cleanup(func() { _ = m.Close() })
	n.Membership = m
	n.port = int(m.ml.LocalNode().Port)
	return n
}

func mustJoin(t *testing.T, n *testNode, to ...*testNode) {
	t.Helper()
	var addrs []string
	for _, o := range to {
		addrs = append(addrs, o.Addr())
	}
	if got, err := n.Join(addrs); err != nil || got != len(addrs) {
		t.Fatalf("%s.Join(%v) = %d, %v", n.Name(), addrs, got, err)
	}
}

func testCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

func flush(ctx context.Context, t *testing.T, n *testNode) {
	t.Helper()
	if err := n.flush(ctx); err != nil {
		t.Fatalf("flush %s: %v", n.Name(), err)
	}
}

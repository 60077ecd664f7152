package membership

import (
	"errors"
	"maps"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

func TestThreeMembersSeeEachOther(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	a := startNode(t, "a", func(c *Config) { c.Meta.Role = RoleHead; c.Meta.GPUs = "" })
	b := startNode(t, "b", nil)
	c := startNode(t, "c", func(c *Config) { c.Meta.GPUs = "4xA100"; c.Meta.Region = "us-east" })
	acked := make(chan string, 64)
	a.mu.Lock()
	a.pingHook = func(name string, _ time.Duration) {
		select {
		case acked <- name:
		default:
		}
	}
	a.mu.Unlock()

	mustJoin(t, b, a)
	mustJoin(t, c, a)

	nodes := []*testNode{a, b, c}
	for _, n := range nodes {
		for _, o := range nodes {
			if o != n {
				n.rec.wait(ctx, t, n.Name()+" sees "+o.Name()+" join", is(EventJoined, o.Name()))
			}
		}
	}
	want := map[string]Meta{}
	for _, n := range nodes {
		want[n.Name()] = n.Local().Meta
	}
	for _, n := range nodes {
		ms := n.Members()
		if len(ms) != 3 {
			t.Fatalf("%s.Members() = %d members, want 3: %+v", n.Name(), len(ms), ms)
		}
		for _, m := range ms {
			if !m.Meta.Equal(want[m.Name]) {
				t.Errorf("%s sees %s meta %+v, want %+v", n.Name(), m.Name, m.Meta, want[m.Name])
			}
			if m.State != StateAlive || m.Addr == "" || m.Local != (m.Name == n.Name()) {
				t.Errorf("%s sees %+v", n.Name(), m)
			}
		}
	}
	if m, _ := b.Member("a"); m.Meta.Role != RoleHead || m.Meta.NodeID != "a" {
		t.Errorf("b sees a as %+v", m.Meta)
	}
	if m, _ := a.Member("c"); m.Meta.GPUs != "4xA100" || m.Meta.Region != "us-east" || m.Meta.Labels["node"] != "c" {
		t.Errorf("a sees c as %+v", m.Meta)
	}

	// RTT hints: a's probes of b and c are acked and show up in Members().
	seen := map[string]bool{}
	for len(seen) < 2 {
		select {
		case name := <-acked:
			seen[name] = true
		case <-ctx.Done():
			t.Fatalf("no probe acks from both peers; got %v", seen)
		}
	}
	for _, name := range []string{"b", "c"} {
		if m, ok := a.Member(name); !ok || m.RTT <= 0 {
			t.Errorf("a.Member(%s) = %+v, want RTT > 0", name, m)
		}
	}
}

func TestUpdateMetaPropagates(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	a := startNode(t, "a", nil)
	b := startNode(t, "b", nil)
	mustJoin(t, b, a)
	a.rec.wait(ctx, t, "a sees b join", is(EventJoined, "b"))

	meta := b.Local().Meta
	meta.GPUs = "2xH200"
	meta.Labels = map[string]string{"node": "b", "zone": "z1"}
	if err := b.UpdateMeta(meta); err != nil {
		t.Fatalf("UpdateMeta: %v", err)
	}
	ev := a.rec.wait(ctx, t, "a sees b's update", func(e Event) bool {
		return e.Type == EventUpdated && e.Member.Name == "b" && e.Member.Meta.GPUs == "2xH200"
	})
	if !maps.Equal(ev.Member.Meta.Labels, meta.Labels) {
		t.Errorf("labels = %v, want %v", ev.Member.Meta.Labels, meta.Labels)
	}
	if m, _ := a.Member("b"); !m.Meta.Equal(meta) || m.State != StateAlive {
		t.Errorf("a.Member(b) = %+v, want meta %+v", m, meta)
	}
	if got := b.Local().Meta; !got.Equal(meta) {
		t.Errorf("b.Local().Meta = %+v", got)
	}

	// Invalid updates are refused before anything is gossiped.
	big := meta.Clone()
	big.Labels = map[string]string{}
	for i := range 40 {
		big.Labels[string(rune('a'+i%26))+string(rune('a'+i/26))] = "0123456789"
	}
	if err := b.UpdateMeta(big); !errors.Is(err, ErrMetaTooLarge) {
		t.Errorf("UpdateMeta(too large) = %v, want ErrMetaTooLarge", err)
	}
	other := meta.Clone()
	other.NodeID = "someone-else"
	if err := b.UpdateMeta(other); !errors.Is(err, ErrInvalidMeta) {
		t.Errorf("UpdateMeta(new NodeID) = %v, want ErrInvalidMeta", err)
	}
}

func TestWrongSecretKeyCannotJoin(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	a := startNode(t, "a", nil)
	x := startNode(t, "intruder", func(c *Config) { c.SecretKey = []byte("another-16B-key!") })

	n, err := x.Join([]string{a.Addr()})
	if !errors.Is(err, ErrJoin) || n != 0 {
		t.Fatalf("Join with wrong key = %d, %v; want 0, ErrJoin", n, err)
	}
	t.Logf("join error: %v", err)
	flush(ctx, t, a)
	flush(ctx, t, x)
	if got := a.rec.count(is(EventJoined, "intruder")); got != 0 {
		t.Errorf("a reported the intruder joining")
	}
	if ms := a.Members(); len(ms) != 1 {
		t.Errorf("a.Members() = %+v, want only itself", ms)
	}
	if ms := x.Members(); len(ms) != 1 {
		t.Errorf("intruder.Members() = %+v, want only itself", ms)
	}
}

func TestCloseWithoutLeaveIsSuspectThenDead(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	a := startNode(t, "a", nil)
	b := startNode(t, "b", nil)
	c := startNode(t, "c", nil)
	mustJoin(t, b, a)
	mustJoin(t, c, a)
	a.rec.wait(ctx, t, "a sees b", is(EventJoined, "b"))
	a.rec.wait(ctx, t, "a sees c", is(EventJoined, "c"))

	if err := c.Close(); err != nil { // crash: no Leave
		t.Fatal(err)
	}
	ev := a.rec.wait(ctx, t, "c suspect (failed)", isReason(EventSuspect, "c", ReasonFailed))
	if ev.Member.State != StateSuspect {
		t.Errorf("suspect event member state = %v", ev.Member.State)
	}
	if earliest := ev.At.Add(a.cfg.DeadAfter); ev.Deadline.Before(earliest) {
		t.Errorf("deadline %v is before At+DeadAfter %v", ev.Deadline, earliest)
	}
	if m, ok := a.Member("c"); !ok || m.State != StateSuspect {
		t.Errorf("a.Member(c) = %+v, %v; want Suspect", m, ok)
	}

	// Not dead before the grace period has elapsed.
	a.clock.Advance(a.cfg.DeadAfter / 2)
	flush(ctx, t, a)
	if a.rec.count(is(EventDead, "c")) != 0 {
		t.Fatalf("c reported dead before DeadAfter:%s", a.rec.dump())
	}

	a.clock.Advance(a.cfg.DeadAfter)
	dead := a.rec.wait(ctx, t, "c dead", is(EventDead, "c"))
	if dead.Reason != ReasonGraceExpired || dead.Member.State != StateDead {
		t.Errorf("dead event = %+v", dead)
	}
	if _, ok := a.Member("c"); ok {
		t.Errorf("dead member c still listed")
	}
	if a.rec.count(is(EventLeft, "c")) != 0 {
		t.Errorf("crashed member reported as Left")
	}
	if m, ok := a.Member("b"); !ok || m.State == StateDead {
		t.Errorf("a.Member(b) = %+v, %v", m, ok)
	}
}

// TestRestartWithinGraceNeverDead emulates a node that becomes unreachable
// and comes back: it is closed without Leave (so memberlist declares it
// failed) and restarted with the same name on the same address before
// DeadAfter. memberlist treats the restart as the old node refuting its death
// (higher incarnation), exactly as after a healed partition.
func TestRestartWithinGraceNeverDead(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	a := startNode(t, "a", nil)
	c := startNode(t, "c", nil)
	mustJoin(t, c, a)
	a.rec.wait(ctx, t, "a sees c", is(EventJoined, "c"))

	port := c.port
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	a.rec.wait(ctx, t, "c suspect (failed)", isReason(EventSuspect, "c", ReasonFailed))
	a.clock.Advance(a.cfg.DeadAfter / 2) // part of the grace passes

	c2 := startNode(t, "c", func(cfg *Config) { cfg.BindPort = port; cfg.Meta.GPUs = "7xH100" })
	mustJoin(t, c2, a)
	back := a.rec.wait(ctx, t, "c alive again", isReason(EventAlive, "c", ReasonRejoined))
	if back.Member.State != StateAlive {
		t.Errorf("alive event state = %v", back.Member.State)
	}
	a.rec.wait(ctx, t, "c's new meta", func(e Event) bool {
		return e.Type == EventUpdated && e.Member.Name == "c" && e.Member.Meta.GPUs == "7xH100"
	})

	// Far past the original deadline: the cancelled timer must not fire.
	a.clock.Advance(3 * a.cfg.DeadAfter)
	flush(ctx, t, a)
	if n := a.rec.count(is(EventDead, "c")); n != 0 {
		t.Fatalf("c reported dead after coming back:%s", a.rec.dump())
	}
	if m, ok := a.Member("c"); !ok || m.State != StateAlive {
		t.Errorf("a.Member(c) = %+v, %v; want Alive", m, ok)
	}
	if n := a.rec.count(is(EventJoined, "c")); n != 1 {
		t.Errorf("c joined %d times, want 1 (the return is Alive/rejoined)", n)
	}
}

func TestGracefulLeaveIsLeft(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	a := startNode(t, "a", nil)
	b := startNode(t, "b", nil)
	mustJoin(t, b, a)
	a.rec.wait(ctx, t, "a sees b", is(EventJoined, "b"))

	if err := b.Leave(3 * time.Second); err != nil {
		t.Fatalf("Leave: %v", err)
	}
	left := a.rec.wait(ctx, t, "b left", is(EventLeft, "b"))
	if left.Member.State != StateLeft {
		t.Errorf("left event state = %v", left.Member.State)
	}
	if err := b.UpdateMeta(b.Local().Meta); !errors.Is(err, ErrLeft) {
		t.Errorf("UpdateMeta after Leave = %v, want ErrLeft", err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	a.clock.Advance(2 * a.cfg.DeadAfter)
	flush(ctx, t, a)
	for _, typ := range []EventType{EventSuspect, EventDead, EventUpdated} {
		if n := a.rec.count(is(typ, "b")); n != 0 {
			t.Errorf("a saw %d %v events for b:%s", n, typ, a.rec.dump())
		}
	}
	if _, ok := a.Member("b"); ok {
		t.Errorf("b still listed after leaving")
	}
}

// TestProbeSilenceSuspect checks the early warning: with memberlist's own
// failure verdict slowed down (large SuspicionMult), a member that stops
// answering probes is reported Suspect from probe silence alone, and Alive
// again once probes are acked.
func TestProbeSilenceSuspect(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	a := startNode(t, "a", func(c *Config) {
		c.SuspectAfter = 600 * time.Millisecond
		c.Tune = func(mc *memberlist.Config) {
			fastTune(mc)
			mc.SuspicionMult = 100 // memberlist would take 20 s to declare failure
		}
	})
	b := startNode(t, "b", nil)
	mustJoin(t, b, a)
	a.rec.wait(ctx, t, "a sees b", is(EventJoined, "b"))

	port := b.port
	from := a.rec.mark()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	a.rec.waitFrom(ctx, t, from, "b suspect (probe silence)", isReason(EventSuspect, "b", ReasonProbeSilence))
	if m, ok := a.Member("b"); !ok || m.State != StateSuspect {
		t.Errorf("a.Member(b) = %+v, %v; want Suspect", m, ok)
	}

	from = a.rec.mark()
	b2 := startNode(t, "b", func(c *Config) { c.BindPort = port })
	mustJoin(t, b2, a)
	a.rec.waitFrom(ctx, t, from, "b alive (ack)", isReason(EventAlive, "b", ReasonAck))
	if n := a.rec.count(is(EventDead, "b")); n != 0 {
		t.Errorf("b reported dead:%s", a.rec.dump())
	}
}

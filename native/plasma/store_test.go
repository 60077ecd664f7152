package plasma

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gray-cluster/gray/internal/testlog"
	fb "github.com/gray-cluster/gray/native/fbs/plasmafb"
)

func newStore(t *testing.T, cfg Config) *Store {
	t.Helper()
	dir, err := os.MkdirTemp("", "plasma")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if cfg.SocketPath == "" {
		cfg.SocketPath = filepath.Join(dir, "plasma_store")
	}
	if cfg.Capacity == 0 {
		cfg.Capacity = 1 << 20
	}
	if cfg.SpillDir == "spill" {
		cfg.SpillDir = filepath.Join(dir, "spill")
	}
	cfg.Logger = testlog.New(t)
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return s
}

// eventually waits (up to 10 s) for cond, which reads state that another
// goroutine of the store updates asynchronously.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

// events collects a store's events on a channel.
func events(t *testing.T, s *Store) <-chan Event {
	ch := make(chan Event, 1024)
	cancel := s.Subscribe(func(ev Event) { ch <- ev })
	t.Cleanup(cancel)
	return ch
}

func nextEvent(t *testing.T, ch <-chan Event, kind EventKind, id ObjectID) Event {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev := <-ch:
			if ev.Kind == kind && ev.ID == id {
				return ev
			}
		case <-timeout:
			t.Fatalf("no %v event for %s", kind, id)
		}
	}
}

func TestClientPutInProcessRead(t *testing.T) {
	s := newStore(t, Config{Capacity: 1 << 20})
	evs := events(t, s)
	c := dial(t, s.cfg.SocketPath)
	if got := c.connect(); got != 1<<20 {
		t.Fatalf("memory_capacity %d", got)
	}
	owner := Owner{NodeID: bytes.Repeat([]byte{1}, 28), WorkerID: bytes.Repeat([]byte{2}, 28), IP: "192.0.2.2", Port: 14633}
	id := oid(1)
	cr := c.create(id, 5, 6, owner)
	if cr.err != fb.PlasmaErrorOK || len(cr.buf) != 11 {
		t.Fatalf("create: %+v", cr)
	}
	if s.Contains(id) {
		t.Fatal("unsealed object is contained")
	}
	copy(cr.buf, "helloPYTHON")
	if e := c.seal(id); e != fb.PlasmaErrorOK {
		t.Fatalf("seal: %v", e)
	}
	ev := nextEvent(t, evs, Sealed, id)
	if ev.Size != 11 || ev.Owner.IP != "192.0.2.2" || ev.Owner.Port != 14633 || !bytes.Equal(ev.Owner.WorkerID, owner.WorkerID) {
		t.Fatalf("sealed event %+v", ev)
	}
	data, meta, ok := s.Read(id)
	if !ok || string(data) != "hello" || string(meta) != "PYTHON" {
		t.Fatalf("Read: %q %q %v", data, meta, ok)
	}
	if !s.Contains(id) || !c.contains(id) {
		t.Fatal("sealed object not contained")
	}
	// A second create on the same connection reuses the mapping: no new fd.
	c.release(id)
	c.put(oid(2), []byte("second"), nil)
	if data, _, _ := s.Read(oid(2)); string(data) != "second" {
		t.Fatalf("second object %q", data)
	}
	if c.contains(oid(3)) {
		t.Fatal("contains an object never created")
	}
	if u := s.Usage(); u.Objects != 2 || u.Used != 128 || u.Clients != 1 {
		t.Fatalf("usage %+v", u)
	}
}

func TestInProcessPutClientGet(t *testing.T) {
	s := newStore(t, Config{})
	ids := []ObjectID{oid(1), oid(2), oid(3)}
	for i, id := range ids[:2] {
		if err := s.Put(id, []byte{byte(i), 9, 9}, []byte("M"), Owner{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Put(ids[0], nil, nil, Owner{}); err == nil {
		t.Fatal("second Put of the same id succeeded")
	}
	c := dial(t, s.cfg.SocketPath)
	c.connect()
	for round := 0; round < 2; round++ { // the fd is passed on round 0 only
		got := c.get(ids, 0)
		for i := 0; i < 2; i++ {
			if !bytes.Equal(got[i].data, []byte{byte(i), 9, 9}) || string(got[i].meta) != "M" {
				t.Fatalf("round %d object %d: %v %q", round, i, got[i].data, got[i].meta)
			}
		}
		if got[2].data != nil {
			t.Fatal("absent object returned")
		}
	}
	if !c.contains(ids[1]) {
		t.Fatal("contains after get")
	}
}

func TestGetWaitsForSeal(t *testing.T) {
	s := newStore(t, Config{})
	a, b := dial(t, s.cfg.SocketPath), dial(t, s.cfg.SocketPath)
	a.connect()
	b.connect()
	id := oid(7)
	a.sendGet([]ObjectID{id}, -1)
	cr := b.create(id, 3, 0, Owner{})
	copy(cr.buf, "abc")
	// Not sealed yet: a's reply must not come.
	a.nc.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, err := a.nc.Read(make([]byte, 1)); err == nil {
		t.Fatalf("get answered (%d bytes) before the seal", n)
	}
	b.seal(id)
	got := a.getReply([]ObjectID{id})
	if string(got[0].data) != "abc" {
		t.Fatalf("waited get: %q", got[0].data)
	}
	// A held-open get with a timeout returns the missing entries.
	start := time.Now()
	got = a.get([]ObjectID{oid(8), id}, 50)
	if got[0].data != nil || string(got[1].data) != "abc" || time.Since(start) < 50*time.Millisecond {
		t.Fatalf("timed-out get: %v after %v", got, time.Since(start))
	}
}

func TestInProcessWaitSealed(t *testing.T) {
	s := newStore(t, Config{})
	ids := []ObjectID{oid(1), oid(2), oid(3)}
	done := make(chan []ObjectID)
	go func() { done <- s.WaitSealed(context.Background(), ids, 2) }()
	s.Put(ids[2], []byte("x"), nil, Owner{})
	s.Put(ids[0], []byte("y"), nil, Owner{})
	if got := <-done; len(got) != 2 || got[0] != ids[0] || got[1] != ids[2] {
		t.Fatalf("WaitSealed: %v", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if got := s.WaitSealed(ctx, ids, 3); len(got) != 2 {
		t.Fatalf("WaitSealed past its deadline: %v", got)
	}
}

func TestDeleteDeferredWhileHeld(t *testing.T) {
	s := newStore(t, Config{})
	evs := events(t, s)
	a, b := dial(t, s.cfg.SocketPath), dial(t, s.cfg.SocketPath)
	a.connect()
	b.connect()
	id := oid(1)
	a.put(id, []byte("data"), nil)
	a.get([]ObjectID{id}, 0) // a holds it
	b.get([]ObjectID{id}, 0) // so does b
	if errs := b.delete(id, oid(2)); errs[0] != fb.PlasmaErrorObjectInUse || errs[1] != fb.PlasmaErrorObjectNonexistent {
		t.Fatalf("delete while held: %v", errs)
	}
	a.release(id)
	if !a.contains(id) {
		t.Fatal("deleted while b still holds it")
	}
	b.release(id)
	if b.contains(id) {
		t.Fatal("not deleted after the last release")
	}
	nextEvent(t, evs, Deleted, id)
	if u := s.Usage(); u.Objects != 0 || u.Used != 0 {
		t.Fatalf("usage after delete %+v", u)
	}
	// An unsealed object cannot be deleted.
	a.create(oid(3), 1, 0, Owner{})
	if errs := b.delete(oid(3)); errs[0] != fb.PlasmaErrorObjectNotSealed {
		t.Fatalf("delete unsealed: %v", errs)
	}
}

func TestDisconnectReleases(t *testing.T) {
	s := newStore(t, Config{})
	evs := events(t, s)
	a := dial(t, s.cfg.SocketPath)
	a.connect()
	held, unsealed := oid(1), oid(2)
	s.Put(held, []byte("x"), nil, Owner{})
	a.get([]ObjectID{held}, 0)
	a.create(unsealed, 100, 0, Owner{})
	s.Delete(held) // deferred: a holds it
	if !s.Contains(held) {
		t.Fatal("deleted while held")
	}
	a.close()
	nextEvent(t, evs, Deleted, held)
	eventually(t, "the unsealed object to be aborted", func() bool { return s.Usage().Objects == 0 })
	b := dial(t, s.cfg.SocketPath)
	b.connect()
	if cr := b.create(unsealed, 1, 0, Owner{}); cr.err != fb.PlasmaErrorOK {
		t.Fatalf("re-create after the creator died: %v", cr.err)
	}
}

func TestAbort(t *testing.T) {
	s := newStore(t, Config{})
	c := dial(t, s.cfg.SocketPath)
	c.connect()
	id := oid(1)
	c.create(id, 1000, 0, Owner{})
	if cr := c.create(id, 1000, 0, Owner{}); cr.err != fb.PlasmaErrorObjectExists {
		t.Fatalf("second create: %v", cr.err)
	}
	c.abort(id)
	if u := s.Usage(); u.Used != 0 || u.Objects != 0 {
		t.Fatalf("usage after abort %+v", u)
	}
	c.put(id, []byte("again"), nil)
	if d, _, _ := s.Read(id); string(d) != "again" {
		t.Fatalf("after abort and put: %q", d)
	}
}

func TestPinAndInProcessDelete(t *testing.T) {
	s := newStore(t, Config{})
	id := oid(1)
	if s.Pin(id) {
		t.Fatal("pinned a missing object")
	}
	s.Put(id, []byte("p"), nil, Owner{})
	if !s.Pin(id) || s.Usage().Pinned != 1 {
		t.Fatal("pin")
	}
	c := dial(t, s.cfg.SocketPath)
	c.connect()
	if errs := c.delete(id); errs[0] != fb.PlasmaErrorObjectInUse {
		t.Fatalf("client delete of a pinned object: %v", errs)
	}
	if !s.Contains(id) {
		t.Fatal("pinned object deleted by a client")
	}
	s.Unpin(id) // the pending delete completes
	if s.Contains(id) {
		t.Fatal("still there after unpin")
	}
	s.Put(oid(2), []byte("q"), nil, Owner{})
	s.Pin(oid(2))
	s.Delete(oid(2)) // drops the pin
	if s.Contains(oid(2)) || s.Usage().Pinned != 0 {
		t.Fatalf("in-process delete of a pinned object: %+v", s.Usage())
	}
}

func TestDebugString(t *testing.T) {
	s := newStore(t, Config{})
	s.Put(oid(1), []byte("x"), nil, Owner{})
	c := dial(t, s.cfg.SocketPath)
	c.send(fb.MessageTypePlasmaGetDebugStringRequest, emptyTable())
	m := fb.GetRootAsPlasmaGetDebugStringReply(c.recv(fb.MessageTypePlasmaGetDebugStringReply), 0)
	if !bytes.Contains(m.DebugString(), []byte("1 sealed")) {
		t.Fatalf("debug string %q", m.DebugString())
	}
}

func TestShmDir(t *testing.T) {
	if _, err := os.Stat("/dev/shm"); err != nil {
		t.Skip("no /dev/shm")
	}
	s := newStore(t, Config{ShmDir: "/dev/shm"})
	c := dial(t, s.cfg.SocketPath)
	c.connect()
	c.put(oid(1), []byte("shm"), nil)
	if d, _, _ := s.Read(oid(1)); string(d) != "shm" {
		t.Fatalf("read %q", d)
	}
}

func TestDisconnectDuringHeldGet(t *testing.T) {
	s := newStore(t, Config{})
	a := dial(t, s.cfg.SocketPath)
	a.connect()
	id := oid(1)
	a.sendGet([]ObjectID{id}, -1)
	a.close()
	eventually(t, "the waiting client to be cleaned up", func() bool { return s.Usage().Clients == 0 })
	if err := s.Put(id, []byte("late"), nil, Owner{}); err != nil {
		t.Fatal(err)
	}
	s.Delete(id) // nobody may hold it: it goes at once
	if s.Contains(id) {
		t.Fatal("a departed client's get took a reference")
	}
}

package plasma

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	fb "github.com/gray-cluster/gray/native/fbs/plasmafb"
)

// gatedStore is a 64 KiB store with spilling whose spill writes wait for
// the test: started reports each spill, release lets one proceed.
func gatedStore(t *testing.T) (s *Store, started chan ObjectID, release chan struct{}) {
	started, release = make(chan ObjectID, 16), make(chan struct{})
	s = newStore(t, Config{Capacity: 64 * kb, SpillDir: "spill"})
	s.mu.Lock()
	s.spillHook = func(id ObjectID) {
		started <- id
		<-release
	}
	s.mu.Unlock()
	t.Cleanup(func() { close(release) }) // runs before Close: no spill stays blocked
	return s, started, release
}

// fillPinned puts n pinned 16 KiB objects (4 fill the store).
func fillPinned(t *testing.T, s *Store, n int) {
	for i := 0; i < n; i++ {
		if err := s.Put(oid(i), fill(16*kb, byte(i)), nil, Owner{}); err != nil {
			t.Fatal(err)
		}
		s.Pin(oid(i))
	}
}

func TestCreateRetriesWhileSpilling(t *testing.T) {
	s, started, release := gatedStore(t)
	fillPinned(t, s, 4)
	c := dial(t, s.cfg.SocketPath)
	c.connect()
	cr := c.create(oid(9), 16*kb, 0, Owner{})
	if cr.retry == 0 || <-started != oid(0) {
		t.Fatalf("create during a spill: %+v", cr)
	}
	// The spill is still writing: retries keep saying retry.
	if again := c.createRetry(oid(9), cr.retry); again.retry != cr.retry {
		t.Fatalf("retry during the spill: %+v", again)
	}
	release <- struct{}{}
	for cr.retry != 0 {
		cr = c.createRetry(oid(9), cr.retry)
	}
	if cr.err != fb.PlasmaErrorOK || len(cr.buf) != 16*kb {
		t.Fatalf("create after the spill: %+v", cr)
	}
	if u := s.Usage(); u.Spilled != 1 || u.Spills != 1 {
		t.Fatalf("usage %+v", u)
	}
}

func TestInProcessPutWaitsForSpill(t *testing.T) {
	s, started, release := gatedStore(t)
	fillPinned(t, s, 4)
	done := make(chan error)
	go func() { done <- s.Put(oid(9), fill(16*kb, 9), nil, Owner{}) }()
	if <-started != oid(0) {
		t.Fatal("spilled the wrong object")
	}
	select {
	case err := <-done:
		t.Fatalf("Put returned before the spill ended: %v", err)
	default:
	}
	release <- struct{}{}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if d, _, ok := s.Read(oid(0)); !ok || !bytes.Equal(d, fill(16*kb, 0)) {
		t.Fatal("spilled object unreadable")
	}
}

func TestDeleteDuringSpill(t *testing.T) {
	s, started, release := gatedStore(t)
	evs := events(t, s)
	fillPinned(t, s, 4)
	c := dial(t, s.cfg.SocketPath)
	c.connect()
	cr := c.create(oid(9), 16*kb, 0, Owner{})
	<-started
	s.Delete(oid(0))
	if s.Contains(oid(0)) {
		t.Fatal("contained after delete")
	}
	nextEvent(t, evs, Deleted, oid(0))
	release <- struct{}{}
	for cr.retry != 0 {
		cr = c.createRetry(oid(9), cr.retry)
	}
	if cr.err != fb.PlasmaErrorOK {
		t.Fatalf("create: %v", cr.err)
	}
	if _, err := spillFile(s, oid(0)); !os.IsNotExist(err) {
		t.Fatalf("spill file of a deleted object: %v", err)
	}
	if u := s.Usage(); u.Spilled != 0 || u.Used != 64*kb || u.Objects != 4 {
		t.Fatalf("usage %+v", u)
	}
}

func TestGetDuringSpillKeepsItInMemory(t *testing.T) {
	s, started, release := gatedStore(t)
	fillPinned(t, s, 4)
	a, b := dial(t, s.cfg.SocketPath), dial(t, s.cfg.SocketPath)
	a.connect()
	b.connect()
	cr := a.create(oid(9), 16*kb, 0, Owner{})
	<-started
	got := b.get([]ObjectID{oid(0)}, 0) // still in memory: served from there
	if !bytes.Equal(got[0].data, fill(16*kb, 0)) {
		t.Fatal("get during spill")
	}
	release <- struct{}{}
	// b holds object 0, so it stays; a later retry (once the first spill
	// has settled) spills object 1.
	var next ObjectID
	for found := false; !found; {
		if cr = a.createRetry(oid(9), cr.retry); cr.retry == 0 {
			t.Fatal("room without a second spill")
		}
		select {
		case next = <-started:
			found = true
		default:
		}
	}
	if next != oid(1) {
		t.Fatalf("second spill took %s", next)
	}
	if u := s.Usage(); u.Spilled != 0 {
		t.Fatalf("object spilled while held: %+v", u)
	}
	release <- struct{}{}
	for cr.retry != 0 {
		cr = a.createRetry(oid(9), cr.retry)
	}
	if !bytes.Equal(got[0].data, fill(16*kb, 0)) || cr.err != fb.PlasmaErrorOK {
		t.Fatal("held object changed")
	}
}

func TestLostSpillFile(t *testing.T) {
	s := newStore(t, Config{Capacity: 64 * kb, SpillDir: "spill"})
	evs := events(t, s)
	fillPinned(t, s, 5) // the fifth Put spills object 0
	nextEvent(t, evs, Spilled, oid(0))
	removeSpillFile(t, s, oid(0))
	c := dial(t, s.cfg.SocketPath)
	c.connect()
	if got := c.get([]ObjectID{oid(0)}, 0); got[0].data != nil {
		t.Fatal("got an object whose spill file is gone")
	}
	nextEvent(t, evs, Deleted, oid(0))
	if s.Contains(oid(0)) {
		t.Fatal("lost object still contained")
	}
}

// spillFile stats the spill file of id (os.ErrNotExist when it has none).
func spillFile(s *Store, id ObjectID) (os.FileInfo, error) {
	matches, _ := filepath.Glob(filepath.Join(s.cfg.SpillDir, id.String()+"-*"))
	if len(matches) == 0 {
		return nil, os.ErrNotExist
	}
	return os.Stat(matches[0])
}

func removeSpillFile(t *testing.T, s *Store, id ObjectID) {
	matches, _ := filepath.Glob(filepath.Join(s.cfg.SpillDir, id.String()+"-*"))
	if len(matches) != 1 {
		t.Fatalf("spill files of %s: %v", id, matches)
	}
	os.Remove(matches[0])
}

package plasma

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	fb "github.com/gray-cluster/gray/native/fbs/plasmafb"
)

const kb = 1024

func fill(n int, b byte) []byte { return bytes.Repeat([]byte{b}, n) }

func TestEvictsLRU(t *testing.T) {
	s := newStore(t, Config{Capacity: 64 * kb})
	evs := events(t, s)
	c := dial(t, s.cfg.SocketPath)
	c.connect()
	for i := 0; i < 4; i++ { // 4 x 16 KiB fills the store
		c.put(oid(i), fill(16*kb, byte(i)), nil)
	}
	c.get([]ObjectID{oid(0)}, 0) // 0 is now the most recently used...
	c.release(oid(0))
	c.get([]ObjectID{oid(2)}, 0) // ...and 2 is held: neither may go
	c.put(oid(4), fill(16*kb, 4), nil)
	nextEvent(t, evs, Deleted, oid(1)) // the least recently used
	c.put(oid(5), fill(16*kb, 5), nil)
	nextEvent(t, evs, Deleted, oid(3))
	for i, want := range []bool{true, false, true, false, true, true} {
		if s.Contains(oid(i)) != want {
			t.Fatalf("object %d contained = %v", i, !want)
		}
	}
	if got := c.get([]ObjectID{oid(0)}, 0); !bytes.Equal(got[0].data, fill(16*kb, 0)) {
		t.Fatal("surviving object corrupted")
	}
	if u := s.Usage(); u.Evictions != 2 || u.Used != 64*kb {
		t.Fatalf("usage %+v", u)
	}
}

func TestCreateRetryThenSucceeds(t *testing.T) {
	s := newStore(t, Config{Capacity: 64 * kb, OOMGrace: time.Minute})
	c := dial(t, s.cfg.SocketPath)
	c.connect()
	for i := 0; i < 2; i++ { // pinned, no spill dir: not evictable
		c.put(oid(i), fill(32*kb, 1), nil)
		s.Pin(oid(i))
	}
	cr := c.create(oid(9), 32*kb, 0, Owner{})
	if cr.err != fb.PlasmaErrorOK || cr.retry == 0 {
		t.Fatalf("create under pressure: %+v", cr)
	}
	again := c.createRetry(oid(9), cr.retry)
	if again.retry != cr.retry {
		t.Fatalf("retry with no room: %+v", again)
	}
	s.Unpin(oid(0)) // evictable now
	done := c.createRetry(oid(9), cr.retry)
	if done.err != fb.PlasmaErrorOK || done.retry != 0 || len(done.buf) != 32*kb {
		t.Fatalf("retry after room was made: %+v", done)
	}
	copy(done.buf, fill(32*kb, 9))
	c.seal(oid(9))
	if d, _, _ := s.Read(oid(9)); !bytes.Equal(d, fill(32*kb, 9)) {
		t.Fatal("retried object's bytes")
	}
	if s.Contains(oid(0)) || !s.Contains(oid(1)) {
		t.Fatal("evicted the wrong object")
	}
	if bad := c.createRetry(oid(9), 12345); bad.err == fb.PlasmaErrorOK {
		t.Fatal("retry of an unknown request succeeded")
	}
}

func TestCreateRetryRunsOutOfMemory(t *testing.T) {
	s := newStore(t, Config{Capacity: 64 * kb, OOMGrace: 30 * time.Millisecond})
	c := dial(t, s.cfg.SocketPath)
	c.connect()
	c.put(oid(0), fill(48*kb, 1), nil)
	s.Pin(oid(0))
	cr := c.create(oid(1), 32*kb, 0, Owner{})
	for cr.retry != 0 { // the client polls, as the core worker does
		cr = c.createRetry(oid(1), cr.retry)
	}
	if cr.err != fb.PlasmaErrorOutOfMemory {
		t.Fatalf("after the grace period: %+v", cr)
	}
	if s.Contains(oid(1)) || !s.Contains(oid(0)) {
		t.Fatal("store state after OOM")
	}
}

func TestLargerThanCapacity(t *testing.T) {
	s := newStore(t, Config{Capacity: 64 * kb})
	c := dial(t, s.cfg.SocketPath)
	c.connect()
	if cr := c.create(oid(1), 64*kb+1, 0, Owner{}); cr.err != fb.PlasmaErrorOutOfMemory || cr.retry != 0 {
		t.Fatalf("create bigger than the store: %+v", cr)
	}
	if err := s.Put(oid(2), fill(65*kb, 0), nil, Owner{}); !errors.Is(err, ErrOutOfMemory) {
		t.Fatalf("Put bigger than the store: %v", err)
	}
	// Exactly the capacity fits.
	c.put(oid(3), fill(64*kb, 3), nil)
}

func TestSpillAndRestore(t *testing.T) {
	s := newStore(t, Config{Capacity: 64 * kb, SpillDir: "spill"})
	evs := events(t, s)
	c := dial(t, s.cfg.SocketPath)
	c.connect()
	for i := 0; i < 4; i++ { // primary copies, pinned by the raylet
		c.put(oid(i), fill(16*kb-2, byte(i)), []byte{'m', byte(i)})
		if !s.Pin(oid(i)) {
			t.Fatal("pin")
		}
	}
	// No room and nothing evictable: the least recently used pinned copy spills.
	c.put(oid(4), fill(16*kb, 4), nil)
	s.Pin(oid(4))
	ev := nextEvent(t, evs, Spilled, oid(0))
	if ev.Size != 16*kb {
		t.Fatalf("spill event %+v", ev)
	}
	if !s.Contains(oid(0)) {
		t.Fatal("spilled object not contained")
	}
	if _, err := spillFile(s, oid(0)); err != nil {
		t.Fatalf("spill file: %v", err)
	}
	if d, m, ok := s.Read(oid(0)); !ok || !bytes.Equal(d, fill(16*kb-2, 0)) || string(m) != "m\x00" {
		t.Fatal("in-process read of a spilled object")
	}
	if u := s.Usage(); u.Spilled != 1 || u.SpilledBytes != 16*kb || u.Spills != 1 {
		t.Fatalf("usage %+v", u)
	}
	// A client get restores it (spilling the next least recently used).
	got := c.get([]ObjectID{oid(0)}, 0)
	if !bytes.Equal(got[0].data, fill(16*kb-2, 0)) || string(got[0].meta) != "m\x00" {
		t.Fatal("restored bytes")
	}
	nextEvent(t, evs, Spilled, oid(1))
	if u := s.Usage(); u.Restores != 1 || u.Spilled != 1 {
		t.Fatalf("usage after restore %+v", u)
	}
	if _, err := spillFile(s, oid(0)); !os.IsNotExist(err) {
		t.Fatalf("spill file after restore: %v", err)
	}
	// Deleting a spilled object removes its file.
	s.Delete(oid(1))
	nextEvent(t, evs, Deleted, oid(1))
	if _, err := spillFile(s, oid(1)); !os.IsNotExist(err) {
		t.Fatalf("spill file after delete: %v", err)
	}
	if u := s.Usage(); u.Spilled != 0 || u.SpilledBytes != 0 {
		t.Fatalf("usage after deleting the spilled object %+v", u)
	}
}

func TestAllocator(t *testing.T) {
	const capacity = 1 << 20
	a := newAllocator(capacity)
	type block struct{ off, size int64 }
	var live []block
	r := rand.New(rand.NewSource(1))
	overlaps := func(b block) bool {
		for _, l := range live {
			if b.off < l.off+l.size && l.off < b.off+b.size {
				return true
			}
		}
		return false
	}
	for i := 0; i < 5000; i++ {
		if len(live) > 0 && r.Intn(3) == 0 {
			j := r.Intn(len(live))
			a.release(live[j].off, live[j].size)
			live = append(live[:j], live[j+1:]...)
			continue
		}
		size := alignUp(int64(r.Intn(20000)))
		off, ok := a.alloc(size)
		if !ok {
			if a.largest() >= size {
				t.Fatalf("alloc %d failed with a %d-byte free range", size, a.largest())
			}
			continue
		}
		b := block{off, size}
		if off%Alignment != 0 || off+size > capacity || overlaps(b) {
			t.Fatalf("bad block %+v", b)
		}
		live = append(live, b)
	}
	for _, b := range live {
		a.release(b.off, b.size)
	}
	if a.free != capacity || a.fragments() != 1 || a.largest() != capacity {
		t.Fatalf("after freeing everything: free %d in %d ranges", a.free, a.fragments())
	}
}

// segmentBytes is how much memory the segment really holds (st_blocks).
func segmentBytes(t *testing.T, s *Store) int64 {
	var st unix.Stat_t
	if err := unix.Fstat(s.seg.fd, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

func TestFreedMemoryGoesBackToTheKernel(t *testing.T) {
	s := newStore(t, Config{Capacity: 16 << 20, ReleaseFreedPages: true})
	before := segmentBytes(t, s)
	if err := s.Put(oid(1), fill(8<<20, 1), nil, Owner{}); err != nil {
		t.Fatal(err)
	}
	if got := segmentBytes(t, s) - before; got < 8<<20 {
		t.Fatalf("an 8 MiB object holds %d bytes", got)
	}
	s.Delete(oid(1))
	if got := segmentBytes(t, s) - before; got > 64<<10 {
		t.Fatalf("%d bytes still held after the delete", got)
	}
}

func TestConcurrentClients(t *testing.T) {
	s := newStore(t, Config{Capacity: 4 << 20})
	const clients, rounds = 4, 50
	errs := make(chan error, clients)
	for w := 0; w < clients; w++ {
		go func(w int) {
			c := dial(t, s.cfg.SocketPath)
			c.connect()
			for i := 0; i < rounds; i++ {
				id := oid(w*1000 + i)
				want := fill(1000+i, byte(w))
				c.put(id, want, []byte{byte(i)})
				next := oid(((w+1)%clients)*1000 + i) // a neighbour's object: may or may not exist yet
				got := c.get([]ObjectID{id, next}, 1)
				if !bytes.Equal(got[0].data, want) || got[0].meta[0] != byte(i) {
					errs <- fmt.Errorf("client %d round %d: bad bytes", w, i)
					return
				}
				c.release(id)
				if got[1].data != nil {
					c.release(next)
				}
			}
			errs <- nil
		}(w)
	}
	for w := 0; w < clients; w++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if u := s.Usage(); u.Objects != clients*rounds {
		t.Fatalf("usage %+v", u)
	}
}

func TestSizesThatOverflow(t *testing.T) {
	s := newStore(t, Config{Capacity: 64 * kb})
	c := dial(t, s.cfg.SocketPath)
	c.connect()
	for _, sz := range [][2]uint64{{1 << 62, 1 << 62}, {^uint64(0), 1}, {1, ^uint64(0) - 10}} {
		if cr := c.create(oid(1), sz[0], sz[1], Owner{}); cr.err != fb.PlasmaErrorOutOfMemory {
			t.Fatalf("create of %d+%d bytes: %+v", sz[0], sz[1], cr)
		}
	}
	if u := s.Usage(); u.Objects != 0 || u.Used != 0 {
		t.Fatalf("usage %+v", u)
	}
}

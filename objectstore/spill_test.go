package objectstore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"testing"

	"github.com/gray-cluster/gray/internal/ids"
)

// patByte is byte i of id's test value: values restored from disk are
// checked byte for byte.
func patByte(id ids.ObjectID, i int) byte { return id[0]*31 + id[1]*7 + byte(i*13+i>>8) }

// pobj builds a value of size bytes in n chunks filled with id's pattern.
func pobj(id ids.ObjectID, size, n int, contained ...ids.ObjectID) *Object {
	o := &Object{ID: id, Size: int64(size), Contained: contained}
	off := 0
	for i := 0; i < n; i++ {
		l := size / n
		if i == n-1 {
			l = size - off
		}
		c := make([]byte, l)
		for j := range c {
			c[j] = patByte(id, off+j)
		}
		o.Chunks = append(o.Chunks, c)
		off += l
	}
	return o
}

// valueErr says what is wrong with o as id's value of size bytes.
func valueErr(o *Object, id ids.ObjectID, size int64) error {
	if o == nil {
		return fmt.Errorf("no value")
	}
	if o.ID != id || o.Size != size {
		return fmt.Errorf("value is %s of %d bytes, want %s of %d", o.ID.Hex(), o.Size, id.Hex(), size)
	}
	off := 0
	for _, c := range o.Chunks {
		for j, b := range c {
			if b != patByte(id, off+j) {
				return fmt.Errorf("byte %d is %d, want %d", off+j, b, patByte(id, off+j))
			}
		}
		off += len(c)
	}
	if int64(off) != size {
		return fmt.Errorf("chunks hold %d bytes, want %d", off, size)
	}
	return nil
}

func mustValue(t *testing.T, s *Store, id ids.ObjectID, size int64) *Object {
	t.Helper()
	o, err := s.Get(id)
	if err != nil {
		t.Fatalf("Get(%s): %v", id.Hex(), err)
	}
	if err := valueErr(o, id, size); err != nil {
		t.Fatalf("Get(%s): %v", id.Hex(), err)
	}
	return o
}

// spillFilesErr checks that the spill directory holds exactly the files of
// the spilled live objects and that the counters agree with the entries.
func spillFilesErr(s *Store) error {
	s.mu.Lock()
	want := map[string]bool{}
	var bytes int64
	for _, e := range s.objects {
		if e.file != "" {
			want[filepath.Base(e.file)] = true
			bytes += e.meta.Size
			if e.obj != nil {
				s.mu.Unlock()
				return fmt.Errorf("%s is both in memory and spilled", e.meta.ID.Hex())
			}
		}
	}
	spilled, spilledBytes := s.spilled, s.spilledBytes
	s.mu.Unlock()
	if spilled != len(want) || spilledBytes != bytes {
		return fmt.Errorf("counters say %d spilled (%d bytes), entries %d (%d bytes)", spilled, spilledBytes, len(want), bytes)
	}
	got := map[string]bool{}
	if list, err := os.ReadDir(s.dir); err == nil {
		for _, d := range list {
			got[d.Name()] = true
		}
	}
	var extra, missing []string
	for n := range got {
		if !want[n] {
			extra = append(extra, n)
		}
	}
	for n := range want {
		if !got[n] {
			missing = append(missing, n)
		}
	}
	if len(extra)+len(missing) > 0 {
		sort.Strings(extra)
		sort.Strings(missing)
		return fmt.Errorf("spill dir: files of no spilled object %v, spilled objects without a file %v", extra, missing)
	}
	return nil
}

func checkSpill(t *testing.T, s *Store, used int64, spilled int, spilledBytes int64) {
	t.Helper()
	if err := spillFilesErr(s); err != nil {
		t.Fatal(err)
	}
	if s.Used() != used || s.Spilled() != spilled || s.SpilledBytes() != spilledBytes {
		t.Fatalf("used %d, spilled %d (%d bytes); want %d, %d (%d bytes)",
			s.Used(), s.Spilled(), s.SpilledBytes(), used, spilled, spilledBytes)
	}
}

func isSpilled(s *Store, id ids.ObjectID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.objects[id]
	return ok && e.file != ""
}

// unwritableDir is a spill directory that cannot be made (even by root).
func unwritableDir(t *testing.T) string {
	f := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(f, "spill")
}

func TestSpillOnPressureLRU(t *testing.T) {
	s := NewWithSpill(100, t.TempDir())
	a, b, c, d := oid(1), oid(2), oid(3), oid(4)
	mustPut(t, s, pobj(a, 40, 1), "h")
	mustPut(t, s, pobj(b, 40, 2), "h")
	checkSpill(t, s, 80, 0, 0)
	mustPut(t, s, pobj(c, 40, 3), "h")
	checkSpill(t, s, 80, 1, 40)
	if !isSpilled(s, a) {
		t.Fatal("the least recently used value was not the one spilled")
	}
	// b is used: c is now the least recently used.
	mustValue(t, s, b, 40)
	mustPut(t, s, pobj(d, 30, 1), "h")
	checkSpill(t, s, 70, 2, 80)
	if !isSpilled(s, c) || isSpilled(s, b) {
		t.Fatal("spilled the recently read value instead of the least recently used one")
	}
	if s.Len() != 4 {
		t.Fatalf("Len = %d, want 4", s.Len())
	}
	// Reserve makes room the same way.
	if err := s.Reserve(100); err != nil {
		t.Fatalf("Reserve: %v", err)
	}
	checkSpill(t, s, 0, 4, 150)
	st := s.Stats()
	if st.SpillCount != 4 || st.SpillBytesTotal != 150 || st.SpilledObjects != 4 {
		t.Fatalf("Stats = %+v", st)
	}
}

func TestSpillPrefersUnpinned(t *testing.T) {
	s := NewWithSpill(100, t.TempDir())
	a, b, c := oid(1), oid(2), oid(3)
	mustPut(t, s, pobj(a, 50, 1), "h")
	mustPut(t, s, pobj(b, 50, 1), "h")
	s.Pin([]ids.ObjectID{a}) // a running task's argument
	mustPut(t, s, pobj(c, 50, 1), "h")
	if isSpilled(s, a) || !isSpilled(s, b) {
		t.Fatal("spilled a pinned value while an unpinned one was there")
	}
	// With nothing else left, pinned values are spilled too.
	if err := s.Reserve(100); err != nil {
		t.Fatal(err)
	}
	checkSpill(t, s, 0, 3, 150)
	s.Unpin([]ids.ObjectID{a})
	mustValue(t, s, a, 50)
}

func TestRestoreOnGet(t *testing.T) {
	s := NewWithSpill(100, t.TempDir())
	a, b, c := oid(1), oid(2), oid(3)
	want := pobj(a, 60, 3, c)
	want.IsError = true
	mustPut(t, s, want, "h")
	mustPut(t, s, pobj(b, 60, 1), "h")
	checkSpill(t, s, 60, 1, 60)
	o := mustValue(t, s, a, 60)
	if o == want {
		t.Fatal("Get of a spilled value returned the original object")
	}
	if !o.IsError || !slices.Equal(o.Contained, []ids.ObjectID{c}) || len(o.Chunks) != 3 ||
		len(o.Chunks[0]) != 20 || len(o.Chunks[2]) != 20 {
		t.Fatalf("restored value lost its header or chunk layout: %+v", o)
	}
	// a is back in memory, b went out to make room.
	checkSpill(t, s, 60, 1, 60)
	if isSpilled(s, a) || !isSpilled(s, b) {
		t.Fatal("restore did not bring a back in place of b")
	}
	if o2 := mustValue(t, s, a, 60); o2 != o {
		t.Fatal("a restored value is not kept in memory")
	}
	// Wait restores as Get does.
	if o, err := s.Wait(context.Background(), b); err != nil || valueErr(o, b, 60) != nil {
		t.Fatalf("Wait of a spilled value = %v, %v", o, err)
	}
	st := s.Stats()
	if st.RestoreCount != 2 || st.RestoreBytesTotal != 120 || st.DiskReads != 0 {
		t.Fatalf("Stats = %+v", st)
	}
	if !s.Ready(a) || !s.Ready(b) || s.Ready(c) {
		t.Fatal("Ready is wrong")
	}
}

func TestSpillKeepsReferences(t *testing.T) {
	s := NewWithSpill(100, t.TempDir())
	a, b, c, x := oid(1), oid(2), oid(3), oid(9)
	mustPut(t, s, pobj(c, 30, 1), "h1")
	mustPut(t, s, pobj(b, 30, 1, c), "h1")
	mustPut(t, s, pobj(a, 30, 1, b), "h1")
	s.Hold(a, "h2")
	s.Pin([]ids.ObjectID{c})
	// Spill all three.
	if err := s.Reserve(100); err != nil {
		t.Fatal(err)
	}
	checkSpill(t, s, 0, 3, 90)
	s.Release(c, "h1")
	s.Release(b, "h1")
	s.Release(a, "h1")
	if got := present(s, a, b, c); !slices.Equal(got, []bool{true, true, true}) {
		t.Fatalf("spilled objects lost their references: %v", got)
	}
	s.Release(a, "h2") // frees a, then b; c stays pinned
	if got := present(s, a, b, c); !slices.Equal(got, []bool{false, false, true}) {
		t.Fatalf("after the last holder of a: %v", got)
	}
	checkSpill(t, s, 0, 1, 30)
	s.Unpin([]ids.ObjectID{c})
	checkSpill(t, s, 0, 0, 0)
	if s.Len() != 0 {
		t.Fatalf("Len = %d", s.Len())
	}
	// A pending object is never spilled and seals fine under pressure.
	s.Create(x, "h")
	mustPut(t, s, pobj(a, 100, 1), "h")
	if !s.Seal(pobj(x, 50, 1)) {
		t.Fatal("Seal failed")
	}
	checkSpill(t, s, 50, 1, 100)
	mustValue(t, s, x, 50)
}

func TestFreeDeletesSpillFile(t *testing.T) {
	dir := t.TempDir()
	s := NewWithSpill(10, dir)
	mustPut(t, s, pobj(oid(1), 10, 1), "h")
	mustPut(t, s, pobj(oid(2), 10, 1), "h")
	list, _ := os.ReadDir(dir)
	if len(list) != 1 {
		t.Fatalf("%d spill files, want 1", len(list))
	}
	s.Release(oid(1), "h")
	checkSpill(t, s, 10, 0, 0)
	if list, _ := os.ReadDir(dir); len(list) != 0 {
		t.Fatalf("spill file left after free: %v", list)
	}
	// A restored value's file goes too.
	mustPut(t, s, pobj(oid(3), 10, 1), "h")
	mustValue(t, s, oid(2), 10)
	checkSpill(t, s, 10, 1, 10)
	// Close removes what is left.
	s.Close()
	if list, _ := os.ReadDir(dir); len(list) != 0 {
		t.Fatalf("spill files left after Close: %v", list)
	}
	if _, err := s.Get(oid(3)); !errors.Is(err, ErrRestore) {
		t.Fatalf("Get of a value spilled before Close = %v, want ErrRestore", err)
	}
}

func TestSpillUnwritableDir(t *testing.T) {
	s := NewWithSpill(100, unwritableDir(t))
	mustPut(t, s, pobj(oid(1), 60, 1), "h1")
	for _, size := range []int{41, 101} {
		err := s.Put(pobj(oid(2), size, 1), "h2")
		if !errors.Is(err, ErrFull) || !errors.Is(err, ErrSpill) {
			t.Fatalf("Put of %d bytes = %v, want ErrFull and ErrSpill", size, err)
		}
		var pe *fs.PathError
		if !errors.As(err, &pe) {
			t.Fatalf("Put = %v: the disk error is not wrapped", err)
		}
		if s.Used() != 60 || s.Len() != 1 || s.Spilled() != 0 || s.Release(oid(2), "h2") {
			t.Fatalf("failed Put changed the store: used %d len %d spilled %d", s.Used(), s.Len(), s.Spilled())
		}
		mustValue(t, s, oid(1), 60)
	}
	if err := s.Reserve(41); !errors.Is(err, ErrFull) || !errors.Is(err, ErrSpill) {
		t.Fatalf("Reserve = %v", err)
	}
	// Seal cannot fail: the value stays in memory beyond the capacity, as
	// without spilling.
	s.Create(oid(3), "h")
	if !s.Seal(pobj(oid(3), 50, 1)) {
		t.Fatal("Seal failed")
	}
	s.Create(oid(4), "h")
	if !s.Seal(pobj(oid(4), 150, 1)) {
		t.Fatal("Seal failed")
	}
	if s.Used() != 260 || s.Spilled() != 0 {
		t.Fatalf("used %d spilled %d", s.Used(), s.Spilled())
	}
	if st := s.Stats(); st.SpillErrors == 0 {
		t.Fatalf("no spill errors counted: %+v", st)
	}
}

func TestLargerThanCapacity(t *testing.T) {
	s := NewWithSpill(100, t.TempDir())
	a, b := oid(1), oid(2)
	mustPut(t, s, pobj(oid(3), 50, 1), "h")
	if err := s.Reserve(250); err != nil {
		t.Fatalf("Reserve of more than the capacity = %v", err)
	}
	mustPut(t, s, pobj(a, 250, 4), "h")
	checkSpill(t, s, 50, 1, 250)
	if err := s.Put(pobj(a, 250, 1), "h2"); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate Put = %v", err)
	}
	for i := 0; i < 2; i++ {
		o := mustValue(t, s, a, 250)
		if len(o.Chunks) != 4 {
			t.Fatalf("%d chunks, want 4", len(o.Chunks))
		}
		checkSpill(t, s, 50, 1, 250) // read, not cached
	}
	if st := s.Stats(); st.DiskReads != 2 {
		t.Fatalf("DiskReads = %d, want 2", st.DiskReads)
	}
	s.Create(b, "h")
	if !s.Seal(pobj(b, 101, 1)) {
		t.Fatal("Seal failed")
	}
	checkSpill(t, s, 50, 2, 351)
	mustValue(t, s, b, 101)
	s.ReleaseAll("h")
	checkSpill(t, s, 0, 0, 0)
}

func TestHeldObjectSurvivesSpill(t *testing.T) {
	s := NewWithSpill(100, t.TempDir())
	a := oid(1)
	orig := pobj(a, 80, 2)
	mustPut(t, s, orig, "h")
	held := mustValue(t, s, a, 80)
	first := held.Chunks[0]
	mustPut(t, s, pobj(oid(2), 80, 1), "h")
	if !isSpilled(s, a) {
		t.Fatal("a not spilled")
	}
	if held != orig || &held.Chunks[0][0] != &first[0] || valueErr(held, a, 80) != nil {
		t.Fatal("spilling changed an object a caller holds")
	}
}

func TestSpillIOOutsideLock(t *testing.T) {
	s := NewWithSpill(100, t.TempDir())
	a, b, c := oid(1), oid(2), oid(3)
	mustPut(t, s, pobj(a, 60, 1), "h")
	entered, proceed := make(chan ids.ObjectID), make(chan struct{})
	s.hooks.write = func(id ids.ObjectID) {
		entered <- id
		<-proceed
	}
	done := make(chan error)
	go func() { done <- s.Put(pobj(b, 60, 1), "h") }()
	if id := <-entered; id != a {
		t.Fatalf("spilling %s, want a", id.Hex())
	}
	// While a is written the store serves everyone; a is still in memory
	// (and b not yet in).
	if s.Len() != 1 || s.Used() != 60 || !s.Contains(a) {
		t.Fatal("store state while spilling")
	}
	mustValue(t, s, a, 60)
	mustPut(t, s, pobj(c, 10, 1), "h2")
	// Freed while being written: its file must not outlive it.
	s.Release(a, "h")
	close(proceed)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	s.hooks.write = nil
	checkSpill(t, s, 70, 0, 0)
	if s.Contains(a) {
		t.Fatal("a came back")
	}
}

func TestRestoreIOOutsideLockAndShared(t *testing.T) {
	s := NewWithSpill(100, t.TempDir())
	a, b := oid(1), oid(2)
	mustPut(t, s, pobj(a, 60, 1), "h")
	mustPut(t, s, pobj(b, 60, 1), "h")
	var mu sync.Mutex
	reads := 0
	entered, proceed := make(chan struct{}), make(chan struct{})
	s.hooks.read = func(ids.ObjectID) {
		mu.Lock()
		reads++
		mu.Unlock()
		entered <- struct{}{}
		<-proceed
	}
	type res struct {
		o   *Object
		err error
	}
	got := make(chan res, 3)
	go func() { o, err := s.Get(a); got <- res{o, err} }()
	<-entered
	// b was spilled to make room before the read began.
	if !isSpilled(s, b) || s.Used() != 0 {
		t.Fatalf("used %d, b spilled %v", s.Used(), isSpilled(s, b))
	}
	if s.Len() != 2 || !s.Ready(a) {
		t.Fatal("store state while restoring")
	}
	// Two more gets join the read under way (or find a restored).
	for i := 0; i < 2; i++ {
		go func() { o, err := s.Get(a); got <- res{o, err} }()
	}
	close(proceed)
	var first *Object
	for i := 0; i < 3; i++ {
		r := <-got
		if r.err != nil || valueErr(r.o, a, 60) != nil {
			t.Fatalf("Get = %v, %v", r.o, r.err)
		}
		if first == nil {
			first = r.o
		} else if r.o != first {
			t.Fatal("concurrent gets read the value more than once")
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if reads != 1 {
		t.Fatalf("%d reads, want 1", reads)
	}
	s.hooks.read = nil
	checkSpill(t, s, 60, 1, 60)
}

func TestRestoreOfFreedObject(t *testing.T) {
	s := NewWithSpill(10, t.TempDir())
	a := oid(1)
	mustPut(t, s, pobj(a, 10, 1), "h")
	mustPut(t, s, pobj(oid(2), 10, 1), "h")
	entered, proceed := make(chan struct{}), make(chan struct{})
	s.hooks.read = func(ids.ObjectID) {
		entered <- struct{}{}
		<-proceed
	}
	done := make(chan error)
	go func() {
		o, err := s.Get(a)
		if err == nil {
			err = valueErr(o, a, 10)
		}
		done <- err
	}()
	<-entered
	s.Release(a, "h") // removes the file before the read opens it
	close(proceed)
	if err := <-done; !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get of an object freed during its restore = %v, want ErrNotFound", err)
	}
	s.hooks.read = nil
	checkSpill(t, s, 0, 1, 10)
}

func TestSpillConcurrent(t *testing.T) {
	const capacity, workers, steps = 300, 6, 300
	s := NewWithSpill(capacity, t.TempDir())
	shared := oid(0xffff)
	mustPut(t, s, pobj(shared, 50, 2), "shared")
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(w)))
			holder := fmt.Sprint("worker", w)
			s.Hold(shared, holder)
			sizes := map[ids.ObjectID]int64{}
			var held []ids.ObjectID
			fail := func(format string, args ...any) {
				errs <- fmt.Errorf("worker %d: "+format, append([]any{w}, args...)...)
			}
			for i := 0; i < steps; i++ {
				switch k := rng.Intn(10); {
				case k < 3:
					id := oid(1 + w*steps + i)
					size := 1 + rng.Intn(80)
					if rng.Intn(20) == 0 {
						size = capacity + rng.Intn(50)
					}
					var contained []ids.ObjectID
					if len(held) > 0 && rng.Intn(3) == 0 {
						contained = append(contained, held[rng.Intn(len(held))])
					}
					if rng.Intn(2) == 0 {
						if err := s.Put(pobj(id, size, 1+rng.Intn(3), contained...), holder); err != nil {
							fail("Put: %v", err)
							return
						}
					} else {
						s.Create(id, holder)
						if !s.Seal(pobj(id, size, 1+rng.Intn(3), contained...)) {
							fail("Seal failed")
							return
						}
					}
					sizes[id] = int64(size)
					held = append(held, id)
				case k < 7 && len(held) > 0:
					id := held[rng.Intn(len(held))]
					o, err := s.Wait(context.Background(), id)
					if err == nil {
						err = valueErr(o, id, sizes[id])
					}
					if err != nil {
						fail("Get of a held object: %v", err)
						return
					}
				case k < 8:
					o, err := s.Get(shared)
					if err == nil {
						err = valueErr(o, shared, 50)
					}
					if err != nil {
						fail("Get of the shared object: %v", err)
						return
					}
				case len(held) > 0:
					j := rng.Intn(len(held))
					id := held[j]
					held = append(held[:j], held[j+1:]...)
					s.Pin([]ids.ObjectID{id})
					s.Release(id, holder)
					if o, err := s.Get(id); err != nil || valueErr(o, id, sizes[id]) != nil {
						fail("Get of a pinned object: %v", err)
						return
					}
					s.Unpin([]ids.ObjectID{id})
				}
				if u := s.Used(); u > capacity {
					fail("Used %d > capacity", u)
					return
				}
			}
			s.ReleaseAll(holder)
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	mustValue(t, s, shared, 50)
	s.Release(shared, "shared")
	checkSpill(t, s, 0, 0, 0)
	if s.Len() != 0 {
		t.Fatalf("Len = %d after every holder let go", s.Len())
	}
	if st := s.Stats(); st.SpillCount == 0 || st.RestoreCount == 0 {
		t.Fatalf("the test did not spill and restore: %+v", st)
	}
}

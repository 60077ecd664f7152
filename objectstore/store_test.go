package objectstore

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/gray-cluster/gray/internal/ids"
)

// oid returns a distinct object id for n.
func oid(n int) ids.ObjectID {
	var t ids.TaskID
	t[0], t[1] = byte(n), byte(n>>8)
	return t.ReturnID(1)
}

// obj builds a sealed value of size bytes containing the given refs.
func obj(id ids.ObjectID, size int, contained ...ids.ObjectID) *Object {
	return &Object{ID: id, Chunks: [][]byte{make([]byte, size)}, Size: int64(size), Contained: contained}
}

func mustPut(t *testing.T, s *Store, o *Object, holder string) {
	t.Helper()
	if err := s.Put(o, holder); err != nil {
		t.Fatalf("Put(%s, %q): %v", o.ID.Hex(), holder, err)
	}
}

// present lists which of the ids the store knows.
func present(s *Store, list ...ids.ObjectID) []bool {
	out := make([]bool, len(list))
	for i, id := range list {
		out[i] = s.Contains(id)
	}
	return out
}

func TestStoreScenarios(t *testing.T) {
	a, b, c := oid(1), oid(2), oid(3)
	tests := []struct {
		name string
		run  func(t *testing.T, s *Store)
		// after run: which of a, b, c remain and the bytes in use
		want []bool
		used int64
	}{
		{"put then release frees", func(t *testing.T, s *Store) {
			mustPut(t, s, obj(a, 10), "h1")
			if !s.Release(a, "h1") {
				t.Error("Release of a held object reported false")
			}
		}, []bool{false, false, false}, 0},
		{"release by a non-holder is a no-op", func(t *testing.T, s *Store) {
			mustPut(t, s, obj(a, 10), "h1")
			if s.Release(a, "h2") {
				t.Error("Release by a non-holder reported true")
			}
		}, []bool{true, false, false}, 10},
		{"two holders: object lives until both release", func(t *testing.T, s *Store) {
			mustPut(t, s, obj(a, 10), "h1")
			s.Hold(a, "h2")
			s.Release(a, "h1")
		}, []bool{true, false, false}, 10},
		{"release drops every ref of the holder", func(t *testing.T, s *Store) {
			mustPut(t, s, obj(a, 10), "h1")
			s.Hold(a, "h1")
			s.Hold(a, "h1")
			s.Release(a, "h1")
		}, []bool{false, false, false}, 0},
		{"HoldOnce does not stack and fails for unknown ids", func(t *testing.T, s *Store) {
			mustPut(t, s, obj(a, 10), "h1")
			for i := 0; i < 3; i++ {
				if !s.HoldOnce(a, "h2") {
					t.Error("HoldOnce of a present object reported false")
				}
			}
			if s.HoldOnce(b, "h2") || s.Hold(b, "h2") {
				t.Error("holding an unknown object reported true")
			}
			s.Release(a, "h1")
			s.Release(a, "h2")
		}, []bool{false, false, false}, 0},
		{"ReleaseAll counts and frees the holder's objects", func(t *testing.T, s *Store) {
			mustPut(t, s, obj(a, 10), "h1")
			mustPut(t, s, obj(b, 20), "h1")
			mustPut(t, s, obj(c, 30), "h2")
			s.Hold(b, "h2")
			if n := s.ReleaseAll("h1"); n != 2 {
				t.Errorf("ReleaseAll = %d, want 2", n)
			}
			if n := s.ReleaseAll("h1"); n != 0 {
				t.Errorf("second ReleaseAll = %d, want 0", n)
			}
		}, []bool{false, true, true}, 50},
		{"pin keeps a released object until unpinned", func(t *testing.T, s *Store) {
			mustPut(t, s, obj(a, 10), "h1")
			s.Pin([]ids.ObjectID{a, a})
			s.Release(a, "h1")
			if !s.Contains(a) {
				t.Fatal("pinned object freed")
			}
			s.Unpin([]ids.ObjectID{a})
			if !s.Contains(a) {
				t.Fatal("object freed with one pin left")
			}
			s.Unpin([]ids.ObjectID{a})
		}, []bool{false, false, false}, 0},
		{"pending object: Create, Seal, release", func(t *testing.T, s *Store) {
			s.Create(a, "h1")
			if o, err := s.Get(a); err != nil || o != nil {
				t.Fatalf("Get of pending = %v, %v; want nil, nil", o, err)
			}
			if !s.Seal(obj(a, 7)) {
				t.Fatal("Seal of pending reported false")
			}
			if s.Seal(obj(a, 7)) {
				t.Error("second Seal reported true")
			}
		}, []bool{true, false, false}, 7},
		{"Seal of a freed pending object is dropped", func(t *testing.T, s *Store) {
			s.Create(a, "h1")
			s.Release(a, "h1")
			if s.Seal(obj(a, 7)) {
				t.Error("Seal after free reported true")
			}
		}, []bool{false, false, false}, 0},
		{"containment is transitive", func(t *testing.T, s *Store) {
			mustPut(t, s, obj(c, 1), "h1")
			mustPut(t, s, obj(b, 2, c), "h1")
			mustPut(t, s, obj(a, 4, b), "h1")
			s.Release(c, "h1")
			s.Release(b, "h1")
			if got := present(s, a, b, c); !slices.Equal(got, []bool{true, true, true}) {
				t.Fatalf("contained objects freed early: %v", got)
			}
			s.Release(a, "h1")
		}, []bool{false, false, false}, 0},
		{"a pending task return pins what it will contain", func(t *testing.T, s *Store) {
			mustPut(t, s, obj(b, 2), "h1")
			s.Create(a, "h1")
			s.Seal(obj(a, 3, b))
			s.Release(b, "h1")
		}, []bool{true, true, false}, 5},
		{"ReleaseAll frees containers and contents in any order", func(t *testing.T, s *Store) {
			mustPut(t, s, obj(c, 1), "h1")
			mustPut(t, s, obj(b, 2, c), "h1")
			mustPut(t, s, obj(a, 4, b, c), "h1")
			s.ReleaseAll("h1")
		}, []bool{false, false, false}, 0},
		{"ref unknown at seal time is not unpinned later", func(t *testing.T, s *Store) {
			// a contains c, which the store did not have when a was sealed;
			// c created afterwards and pinned by a task must keep that pin
			// when a is freed.
			mustPut(t, s, obj(a, 4, c), "h1")
			mustPut(t, s, obj(c, 1), "h2")
			s.Pin([]ids.ObjectID{c})
			s.Release(a, "h1")
			s.Release(c, "h2")
		}, []bool{false, false, true}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := New(1 << 20)
			tc.run(t, s)
			if got := present(s, a, b, c); !slices.Equal(got, tc.want) {
				t.Errorf("present(a, b, c) = %v, want %v", got, tc.want)
			}
			if got := s.Used(); got != tc.used {
				t.Errorf("Used = %d, want %d", got, tc.used)
			}
		})
	}
}

// errFullOrExists stands for "ErrFull or ErrExists" in TestPutErrors.
var errFullOrExists = errors.New("ErrFull or ErrExists")

func TestPutErrors(t *testing.T) {
	tests := []struct {
		name    string
		prior   []*Object
		put     *Object
		wantErr error
	}{
		{"exact fit", []*Object{obj(oid(1), 60)}, obj(oid(2), 40), nil},
		{"one byte over", []*Object{obj(oid(1), 60)}, obj(oid(2), 41), ErrFull},
		{"alone larger than capacity", nil, obj(oid(2), 101), ErrFull},
		{"duplicate id", []*Object{obj(oid(1), 10)}, obj(oid(1), 10), ErrExists},
		// Both apply: either answer will do, as long as nothing changes.
		{"full and duplicate", []*Object{obj(oid(1), 60)}, obj(oid(1), 60), errFullOrExists},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := New(100)
			for _, o := range tc.prior {
				mustPut(t, s, o, "h1")
			}
			used, n := s.Used(), s.Len()
			err := s.Put(tc.put, "h2")
			ok := errors.Is(err, tc.wantErr) && (err == nil) == (tc.wantErr == nil)
			if tc.wantErr == errFullOrExists {
				ok = errors.Is(err, ErrFull) || errors.Is(err, ErrExists)
			}
			if !ok {
				t.Fatalf("Put = %v, want %v", err, tc.wantErr)
			}
			if err != nil {
				if s.Used() != used || s.Len() != n {
					t.Errorf("failed Put changed the store: used %d->%d, len %d->%d", used, s.Used(), n, s.Len())
				}
				// The failed Put took no reference for h2.
				if s.Release(tc.put.ID, "h2") {
					t.Error("failed Put left a reference for its holder")
				}
			}
			if r := s.Reserve(1); (s.Used()+1 > s.Capacity()) != errors.Is(r, ErrFull) {
				t.Errorf("Reserve(1) with %d/%d used = %v", s.Used(), s.Capacity(), r)
			}
		})
	}
}

func TestPutIntoPendingSeals(t *testing.T) {
	s := New(100)
	s.Create(oid(1), "h1")
	ch, err := s.ReadyChan(oid(1))
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, s, obj(oid(1), 5), "h2")
	<-ch // closed by the Put
	s.Release(oid(1), "h1")
	if !s.Contains(oid(1)) {
		t.Fatal("object freed while h2 holds it")
	}
	s.Release(oid(1), "h2")
	if s.Contains(oid(1)) || s.Used() != 0 {
		t.Fatalf("object left after its last holder released it (used %d)", s.Used())
	}
}

func TestWait(t *testing.T) {
	t.Run("returns when sealed", func(t *testing.T) {
		s := New(100)
		s.Create(oid(1), "h1")
		type res struct {
			o   *Object
			err error
		}
		done := make(chan res, 1)
		go func() {
			o, err := s.Wait(context.Background(), oid(1))
			done <- res{o, err}
		}()
		want := obj(oid(1), 3)
		s.Seal(want)
		r := <-done
		if r.err != nil || r.o != want {
			t.Fatalf("Wait = %v, %v; want the sealed object", r.o, r.err)
		}
	})
	t.Run("respects ctx", func(t *testing.T) {
		s := New(100)
		s.Create(oid(1), "h1")
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			_, err := s.Wait(ctx, oid(1))
			done <- err
		}()
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("Wait = %v, want context.Canceled", err)
		}
	})
	t.Run("unknown id", func(t *testing.T) {
		if _, err := New(100).Wait(context.Background(), oid(1)); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Wait = %v, want ErrNotFound", err)
		}
	})
	t.Run("sealed beats an ended ctx", func(t *testing.T) {
		s := New(100)
		mustPut(t, s, obj(oid(1), 3), "h1")
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		// select chooses at random between ready cases; repeat so that a
		// regression shows up.
		for i := 0; i < 200; i++ {
			if o, err := s.Wait(ctx, oid(1)); err != nil || o == nil {
				t.Fatalf("try %d: Wait = %v, %v; want the sealed object", i, o, err)
			}
		}
	})
	t.Run("freed while pending wakes waiters", func(t *testing.T) {
		s := New(100)
		s.Create(oid(1), "h1")
		done := make(chan error, 1)
		go func() {
			_, err := s.Wait(context.Background(), oid(1))
			done <- err
		}()
		s.Release(oid(1), "h1")
		if err := <-done; !errors.Is(err, ErrNotFound) {
			t.Fatalf("Wait = %v, want ErrNotFound", err)
		}
	})
}

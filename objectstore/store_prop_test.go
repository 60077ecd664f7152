package objectstore

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"path/filepath"
	"sort"
	"testing"

	"github.com/gray-cluster/gray/internal/ids"
)

// model is a reference implementation of the store's liveness rules written
// as a fixpoint: after every operation, an object that has no holder, no
// explicit pin and no incoming containment edge from a live sealed object is
// removed, until nothing changes.
type model struct {
	capacity int64
	// spill: the store spills to a working directory, so a Put is never
	// refused for room.
	spill bool
	objs  map[ids.ObjectID]*mobj
}

type mobj struct {
	sealed  bool
	size    int64
	holders map[string]int
	pins    int
	// edges are the contained ids that were present when it was sealed.
	edges []ids.ObjectID
}

func newModel(capacity int64) *model {
	return &model{capacity: capacity, objs: map[ids.ObjectID]*mobj{}}
}

func (m *model) used() int64 {
	var n int64
	for _, o := range m.objs {
		if o.sealed {
			n += o.size
		}
	}
	return n
}

func (m *model) entry(id ids.ObjectID) *mobj {
	o := m.objs[id]
	if o == nil {
		o = &mobj{holders: map[string]int{}}
		m.objs[id] = o
	}
	return o
}

func (m *model) seal(o *mobj, size int64, contained []ids.ObjectID) {
	o.sealed, o.size = true, size
	for _, c := range contained {
		if _, ok := m.objs[c]; ok {
			o.edges = append(o.edges, c)
		}
	}
}

func (m *model) collect() {
	for {
		incoming := map[ids.ObjectID]int{}
		for _, o := range m.objs {
			for _, c := range o.edges {
				incoming[c]++
			}
		}
		removed := false
		for id, o := range m.objs {
			if len(o.holders) == 0 && o.pins == 0 && incoming[id] == 0 {
				delete(m.objs, id)
				removed = true
			}
		}
		if !removed {
			return
		}
	}
}

// propRun drives a store and the model with one random operation sequence.
type propRun struct {
	t      *testing.T
	rng    *rand.Rand
	s      *Store
	m      *model
	big    bool             // sometimes store values larger than the capacity
	minted int              // ids 0..minted-1 have been created at least once
	pins   [][]ids.ObjectID // outstanding Pin lists, as given to the store
	step   int
	op     string
}

var holders = []string{"session:a", "session:b", "worker:c"}

func (r *propRun) fail(format string, args ...any) {
	r.t.Helper()
	r.t.Fatalf("step %d (%s): %s", r.step, r.op, fmt.Sprintf(format, args...))
}

// anyID picks a minted id, sometimes one minted a little later (a ref to an
// object the store does not have yet).
func (r *propRun) anyID() ids.ObjectID {
	return oid(r.rng.Intn(r.minted + 3))
}

func (r *propRun) holder() string { return holders[r.rng.Intn(len(holders))] }

func (r *propRun) apply() {
	s, m, rng := r.s, r.m, r.rng
	switch k := rng.Intn(100); {
	case k < 15: // Create a fresh or an existing id
		id := oid(r.minted)
		if rng.Intn(4) == 0 && r.minted > 0 {
			id = r.anyID()
		} else {
			r.minted++
		}
		h := r.holder()
		r.op = "Create " + h
		s.Create(id, h)
		m.entry(id).holders[h]++
	case k < 35: // Put a fresh, pending or sealed id
		id := oid(r.minted)
		if rng.Intn(4) == 0 && r.minted > 0 {
			id = r.anyID()
		} else {
			r.minted++
		}
		size := r.size(120)
		var contained []ids.ObjectID
		for n := rng.Intn(4); n > 0 && r.minted > 0; n-- {
			contained = append(contained, r.anyID())
		}
		h := r.holder()
		r.op = fmt.Sprintf("Put size %d contained %d by %s", size, len(contained), h)
		before := snapshot(s, r.minted+3)
		err := s.Put(pobj(id, int(size), 1+rng.Intn(3), contained...), h)
		mo, exists := m.objs[id]
		full, dup := !m.spill && m.used()+size > m.capacity, exists && mo.sealed
		switch {
		case full && dup: // either reason may be given
			if !errors.Is(err, ErrFull) && !errors.Is(err, ErrExists) {
				r.fail("Put = %v, want ErrFull or ErrExists", err)
			}
		case full:
			if !errors.Is(err, ErrFull) {
				r.fail("Put = %v, want ErrFull", err)
			}
		case dup:
			if !errors.Is(err, ErrExists) {
				r.fail("Put = %v, want ErrExists", err)
			}
		default:
			if err != nil {
				r.fail("Put = %v, want success", err)
			}
			o := m.entry(id)
			o.holders[h]++
			m.seal(o, size, contained)
		}
		if err != nil {
			if after := snapshot(s, r.minted+3); after != before {
				r.fail("failed Put changed the store:\n%s\n->\n%s", before, after)
			}
		}
	case k < 45: // Seal a pending, sealed or freed id
		id := r.anyID()
		size := r.size(60)
		var contained []ids.ObjectID
		for n := rng.Intn(3); n > 0; n-- {
			contained = append(contained, r.anyID())
		}
		r.op = "Seal"
		mo, exists := m.objs[id]
		want := exists && !mo.sealed
		if got := s.Seal(pobj(id, int(size), 1+rng.Intn(2), contained...)); got != want {
			r.fail("Seal = %v, want %v", got, want)
		}
		if want {
			m.seal(mo, size, contained)
		}
	case k < 55:
		id, h := r.anyID(), r.holder()
		once := rng.Intn(2) == 0
		r.op = fmt.Sprintf("Hold once=%v %s", once, h)
		mo, exists := m.objs[id]
		var got bool
		if once {
			got = s.HoldOnce(id, h)
		} else {
			got = s.Hold(id, h)
		}
		if got != exists {
			r.fail("Hold = %v, want %v", got, exists)
		}
		if exists && (!once || mo.holders[h] == 0) {
			mo.holders[h]++
		}
	case k < 75:
		id, h := r.anyID(), r.holder()
		r.op = "Release " + h
		mo, exists := m.objs[id]
		want := exists && mo.holders[h] > 0
		if got := s.Release(id, h); got != want {
			r.fail("Release = %v, want %v", got, want)
		}
		if want {
			delete(mo.holders, h)
		}
	case k < 80:
		h := r.holder()
		r.op = "ReleaseAll " + h
		want := 0
		for _, o := range m.objs {
			if o.holders[h] > 0 {
				want++
				delete(o.holders, h)
			}
		}
		if got := s.ReleaseAll(h); got != want {
			r.fail("ReleaseAll = %d, want %d", got, want)
		}
	case k < 88: // Pin ids that are live (like a task's arguments)
		var list []ids.ObjectID
		for id := range m.objs {
			if rng.Intn(3) == 0 {
				list = append(list, id)
			}
		}
		r.op = fmt.Sprintf("Pin %d", len(list))
		s.Pin(list)
		for _, id := range list {
			m.objs[id].pins++
		}
		r.pins = append(r.pins, list)
	case k < 96: // Unpin a list pinned before
		if len(r.pins) == 0 {
			r.op = "Unpin (none)"
			return
		}
		i := rng.Intn(len(r.pins))
		list := r.pins[i]
		r.pins = append(r.pins[:i], r.pins[i+1:]...)
		r.op = fmt.Sprintf("Unpin %d", len(list))
		s.Unpin(list)
		for _, id := range list {
			m.objs[id].pins--
		}
	default: // Wait with an ended context never blocks
		id := r.anyID()
		r.op = "Wait"
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		o, err := s.Wait(ctx, id)
		mo, exists := m.objs[id]
		switch {
		case !exists:
			if !errors.Is(err, ErrNotFound) {
				r.fail("Wait = %v, want ErrNotFound", err)
			}
		case mo.sealed:
			if err == nil {
				err = valueErr(o, id, mo.size)
			}
			if err != nil {
				r.fail("Wait: %v; want the sealed object", err)
			}
		default:
			if !errors.Is(err, context.Canceled) {
				r.fail("Wait = %v, want context.Canceled", err)
			}
		}
	}
	m.collect()
}

// size is a value's size: 1..max bytes, or sometimes more than the
// capacity.
func (r *propRun) size(max int) int64 {
	if r.big && r.rng.Intn(12) == 0 {
		return r.m.capacity + 1 + int64(r.rng.Intn(100))
	}
	return int64(1 + r.rng.Intn(max))
}

// check compares the store with the model.
func (r *propRun) check() {
	r.t.Helper()
	s, m := r.s, r.m
	if got, want := s.Used()+s.SpilledBytes(), m.used(); got != want {
		r.fail("Used+SpilledBytes = %d, want %d (sum of live sealed sizes)", got, want)
	}
	if m.spill && s.Used() > m.capacity {
		r.fail("Used = %d, beyond the capacity %d", s.Used(), m.capacity)
	}
	if s.SpillDir() != "" {
		if err := spillFilesErr(s); err != nil {
			r.fail("%v", err)
		}
	} else if s.Spilled() != 0 {
		r.fail("a store without spilling spilled")
	}
	if got, want := s.Len(), len(m.objs); got != want {
		r.fail("Len = %d, want %d", got, want)
	}
	for i := 0; i < r.minted+3; i++ {
		id := oid(i)
		mo, live := m.objs[id]
		if got := s.Contains(id); got != live {
			r.fail("Contains(#%d) = %v, want %v", i, got, live)
		}
		if !live {
			continue
		}
		if got := s.Ready(id); got != mo.sealed {
			r.fail("Ready(#%d) = %v, want %v", i, got, mo.sealed)
		}
		// Reading every spilled value back at each step is slow: with
		// spilling, look at some of them.
		if s.SpillDir() != "" && r.rng.Intn(16) != 0 {
			continue
		}
		o, err := s.Get(id)
		if err != nil || (o != nil) != mo.sealed {
			r.fail("Get(#%d) = %v, %v; sealed %v", i, o, err, mo.sealed)
		}
		if o != nil {
			if err := valueErr(o, id, mo.size); err != nil {
				r.fail("Get(#%d): %v", i, err)
			}
		}
	}
}

// snapshot describes the store's observable state for ids 0..n-1 (without
// reading spilled values back, which moves bytes between memory and disk).
func snapshot(s *Store, n int) string {
	var live []string
	for i := 0; i < n; i++ {
		if s.Contains(oid(i)) {
			live = append(live, fmt.Sprintf("#%d sealed=%v", i, s.Ready(oid(i))))
		}
	}
	sort.Strings(live)
	return fmt.Sprintf("bytes=%d len=%d %v", s.Used()+s.SpilledBytes(), s.Len(), live)
}

func TestStoreProperties(t *testing.T) {
	modes := []struct {
		name     string
		capacity int64
		spill    bool // spill to a working directory
		bad      bool // spill to one that cannot be made: as no spilling
		seeds    int64
	}{
		{"memory", 600, false, false, 40},
		{"spill", 200, true, false, 20},
		{"unwritable", 600, true, true, 20},
	}
	for _, md := range modes {
		t.Run(md.name, func(t *testing.T) {
			var spills, restores, diskReads int64
			for seed := int64(1); seed <= md.seeds; seed++ {
				t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
					s := New(md.capacity)
					if md.spill {
						dir := filepath.Join(t.TempDir(), "spill")
						if md.bad {
							dir = unwritableDir(t)
						}
						s = NewWithSpill(md.capacity, dir)
					}
					m := newModel(md.capacity)
					m.spill = md.spill && !md.bad
					r := &propRun{t: t, rng: rand.New(rand.NewSource(seed)), s: s, m: m, big: md.spill}
					r.run()
					st := s.Stats()
					spills, restores, diskReads = spills+st.SpillCount, restores+st.RestoreCount, diskReads+st.DiskReads
				})
			}
			if md.spill && !md.bad && (spills == 0 || restores == 0 || diskReads == 0) {
				t.Errorf("the runs spilled %d, restored %d, read %d uncached: not exercised", spills, restores, diskReads)
			}
			t.Logf("spilled %d, restored %d, read %d uncached", spills, restores, diskReads)
		})
	}
}

// run applies random operations, checking after each, then drops every
// reference.
func (r *propRun) run() {
	r.t.Helper()
	for r.step = 0; r.step < 400; r.step++ {
		r.apply()
		r.check()
	}
	// Dropping every holder and pin frees everything that is not in a
	// containment cycle.
	for _, h := range holders {
		r.s.ReleaseAll(h)
		for _, o := range r.m.objs {
			delete(o.holders, h)
		}
	}
	for _, list := range r.pins {
		r.s.Unpin(list)
		for _, id := range list {
			r.m.objs[id].pins--
		}
	}
	r.pins = nil
	r.op = "drain"
	r.m.collect()
	r.check()
}

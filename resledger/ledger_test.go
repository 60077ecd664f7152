package resledger

import (
	"math/rand/v2"
	"reflect"
	"testing"
)

// held is one grant a simulated raylet holds.
type held struct {
	by *Member
	a  Allocation
}

// TestLedgerTwoMembersProperty drives random grants and releases from two
// members of one ledger and checks, after every step, that nothing is over
// committed (each instance's holders sum to at most its total, and
// available is total minus what is held), that whole GPUs are held by one
// grant alone, and that releasing everything restores the ledger exactly.
func TestLedgerTwoMembersProperty(t *testing.T) {
	reqs := []map[string]float64{
		{"CPU": 1}, {"CPU": 0.5}, {"CPU": 0.3333}, {"CPU": 2},
		{"GPU": 1}, {"GPU": 0.5}, {"GPU": 0.25}, {"GPU": 2}, {"CPU": 1, "GPU": 0.5},
		{"custom": 0.1}, {"CPU": 1, "memory": 1 << 20},
	}
	total := map[string]float64{"CPU": 3, "GPU": 3, "custom": 1, "memory": 4 << 20}
	for seed := uint64(0); seed < 200; seed++ {
		rng := rand.New(rand.NewPCG(seed, 7))
		l := New(total, nil)
		ms := []*Member{l.Join("ray"), l.Join("native")}
		var grants []held
		for step := 0; step < 200; step++ {
			m := ms[rng.IntN(2)]
			if len(grants) > 0 && rng.IntN(3) == 0 {
				i := rng.IntN(len(grants))
				g := grants[i]
				grants = append(grants[:i], grants[i+1:]...)
				g.by.Release(g.a)
			} else {
				req := reqs[rng.IntN(len(reqs))]
				fitted := m.Fits(req)
				a, ok := m.Acquire(req)
				if ok != fitted {
					t.Fatalf("seed %d step %d: Fits=%v but Acquire=%v", seed, step, fitted, ok)
				}
				if ok {
					grants = append(grants, held{m, a})
				}
			}
			checkLedger(t, l, grants, seed, step)
		}
		for _, g := range grants {
			g.by.Release(g.a)
		}
		if !l.pool.equal(NewPool(total, nil)) {
			t.Fatalf("seed %d: after releasing everything: %v, want %v", seed, l.pool.Available(), total)
		}
	}
}

func checkLedger(t *testing.T, l *Ledger, grants []held, seed uint64, step int) {
	t.Helper()
	type key struct {
		name string
		id   int64
	}
	used := map[key]Fixed{}
	wholeBy := map[key]int{}
	for gi, g := range grants {
		for name, parts := range g.a {
			for _, p := range parts {
				k := key{name, p.ID}
				used[k] += p.Amount
				if IsUnitResource(name) && p.Amount == Unit {
					wholeBy[k] = gi + 1
				}
			}
		}
	}
	for name, insts := range l.pool.res {
		for _, in := range insts {
			k := key{name, in.id}
			if used[k] > in.total {
				t.Fatalf("seed %d step %d: %s[%d] over committed: %d of %d", seed, step, name, in.id, used[k], in.total)
			}
			if in.avail != in.total-used[k] {
				t.Fatalf("seed %d step %d: %s[%d] available %d, want %d", seed, step, name, in.id, in.avail, in.total-used[k])
			}
			if wholeBy[k] != 0 && used[k] != Unit {
				t.Fatalf("seed %d step %d: whole %s[%d] shared with another grant", seed, step, name, in.id)
			}
		}
	}
}

func TestLedgerSignalsTheOtherMember(t *testing.T) {
	l := New(map[string]float64{"CPU": 2}, nil)
	ray, native := l.Join("ray"), l.Join("native")
	a, ok := ray.Acquire(map[string]float64{"CPU": 2})
	if !ok {
		t.Fatal("acquire")
	}
	select {
	case <-native.Changed():
	default:
		t.Fatal("native not told of ray's grant")
	}
	select {
	case <-ray.Changed():
		t.Fatal("ray told of its own grant")
	default:
	}
	if _, ok := native.Acquire(map[string]float64{"CPU": 1}); ok {
		t.Fatal("native granted a CPU ray holds")
	}
	ray.Release(a)
	select {
	case <-native.Changed():
	default:
		t.Fatal("native not told of ray's release")
	}
	if _, ok := native.Acquire(map[string]float64{"CPU": 1}); !ok {
		t.Fatal("native refused a CPU ray freed")
	}
	ray.SetOffer(nil, map[string]float64{"CPU": 2})
	for _, m := range []*Member{ray, native} {
		select {
		case <-m.Changed():
		default:
			t.Fatalf("%s not told of the offer", m.Name())
		}
	}
}

func TestLedgerGPUsDiffer(t *testing.T) {
	l := New(map[string]float64{"GPU": 2}, nil)
	ray, native := l.Join("ray"), l.Join("native")
	a, _ := ray.Acquire(map[string]float64{"GPU": 1})
	b, _ := native.Acquire(map[string]float64{"GPU": 1})
	if got := [][]int{a.IDs("GPU"), b.IDs("GPU")}; !reflect.DeepEqual(got, [][]int{{0}, {1}}) {
		t.Fatalf("GPU ids %v, want [[0] [1]]", got)
	}
	if _, ok := ray.Acquire(map[string]float64{"GPU": 0.5}); ok {
		t.Fatal("a fraction fit on GPUs held whole")
	}
	if got := native.GPUsBusy(); !reflect.DeepEqual(got, []bool{true, true}) {
		t.Fatalf("busy %v", got)
	}
}

func TestPoolSetOffer(t *testing.T) {
	base := map[string]float64{"CPU": 4, "GPU": 2, "accelerator_type:H100": 1}
	p := NewPool(base, nil)
	a, _ := p.Allocate(map[string]float64{"GPU": 1}) // GPU 0
	p.SetOffer([]bool{true, false}, map[string]float64{"CPU": 4, "GPU": 1, "accelerator_type:H100": 1})
	if got := p.Total()["GPU"]; got != 1 {
		t.Fatalf("total GPU %v, want 1", got)
	}
	p.Release(a)
	if got := p.Available()["GPU"]; got != 1 {
		t.Fatalf("work on the withdrawn GPU ended: available GPU %v, want 1", got)
	}
	b, _ := p.Allocate(map[string]float64{"GPU": 1})
	if ids := b.IDs("GPU"); !reflect.DeepEqual(ids, []int{1}) {
		t.Fatalf("grant after withdrawal on %v, want [1]", ids)
	}
	if _, ok := p.Allocate(map[string]float64{"GPU": 0.5}); ok {
		t.Fatal("a grant landed on the withdrawn GPU")
	}
	p.SetOffer([]bool{true, true}, map[string]float64{"CPU": 3})
	if got := p.Total(); !reflect.DeepEqual(got, map[string]float64{"CPU": 3}) {
		t.Fatalf("all withdrawn, CPU 3: total %v", got)
	}
	p.SetOffer(nil, base)
	p.Release(b)
	if !p.equal(NewPool(base, nil)) || !reflect.DeepEqual(p.Available(), base) {
		t.Fatalf("restored: available %v total %v", p.Available(), p.Total())
	}
}

func TestPoolOfAndFree(t *testing.T) {
	node := NewPool(map[string]float64{"CPU": 4, "GPU": 2}, []int{3, 5})
	res, _ := node.Allocate(map[string]float64{"CPU": 2, "GPU": 2})
	bundle := PoolOf(res)
	task, ok := bundle.Allocate(map[string]float64{"CPU": 1, "GPU": 0.5})
	if !ok || !reflect.DeepEqual(task.IDs("GPU"), []int{3}) {
		t.Fatalf("task in the bundle: %v %v", ok, task)
	}
	// The bundle goes away while the task runs: its free part goes back
	// now, the task's part when it ends.
	node.Release(bundle.Free())
	if got := node.Available(); got["CPU"] != 3 || got["GPU"] != 1.5 {
		t.Fatalf("after the bundle's free part went back: %v", got)
	}
	node.Release(task)
	if !node.equal(NewPool(map[string]float64{"CPU": 4, "GPU": 2}, []int{3, 5})) {
		t.Fatalf("after the task ended: %v", node.Available())
	}
}

// TestOfferLeavesOtherResources: the GPU offer (made from the ray://
// raylet's totals) does not withdraw what the native raylet added to a
// shared ledger (node:<ip>) or its bundles.
func TestOfferLeavesOtherResources(t *testing.T) {
	base := map[string]float64{"CPU": 2, "GPU": 1}
	l := New(base, nil)
	l.AddMissing(map[string]float64{"CPU": 8, "node:10.0.0.1": 1})
	m := l.Join("native")
	b, _ := m.PrepareBundle(map[string]float64{"CPU": 1})
	m.CommitBundle(BundleKey{PG: "ab", Index: 0}, b)
	m.SetOffer([]bool{true}, map[string]float64{"CPU": 2})
	got := m.Total()
	want := map[string]float64{"CPU": 2, "node:10.0.0.1": 1, "CPU_group_0_ab": 1, "CPU_group_ab": 1,
		"bundle_group_0_ab": 1000, "bundle_group_ab": 1000}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("total after the offer %v, want %v", got, want)
	}
}

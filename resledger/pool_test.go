package resledger

import (
	"reflect"
	"testing"
)

func TestPoolAllocate(t *testing.T) {
	type step struct {
		req    map[string]float64
		ok     bool
		gpuIDs []int64 // instance ids expected for GPU, when ok
	}
	cases := []struct {
		name   string
		total  map[string]float64
		gpuIDs []int
		steps  []step
		avail  map[string]float64 // after all steps
	}{
		{"cpu quantities", map[string]float64{"CPU": 2}, nil,
			[]step{{map[string]float64{"CPU": 1.5}, true, nil}, {map[string]float64{"CPU": 0.6}, false, nil}, {map[string]float64{"CPU": 0.5}, true, nil}},
			map[string]float64{"CPU": 0}},
		{"fractions add up exactly", map[string]float64{"CPU": 1}, nil,
			[]step{{map[string]float64{"CPU": 0.1}, true, nil}, {map[string]float64{"CPU": 0.2}, true, nil}, {map[string]float64{"CPU": 0.7}, true, nil}},
			map[string]float64{"CPU": 0}},
		{"unknown resource", map[string]float64{"CPU": 1}, nil,
			[]step{{map[string]float64{"TPU": 1}, false, nil}, {map[string]float64{"custom": 0.1}, false, nil}},
			map[string]float64{"CPU": 1}},
		{"zero amounts are ignored", map[string]float64{"CPU": 1}, nil,
			[]step{{map[string]float64{"CPU": 0, "GPU": 0}, true, nil}},
			map[string]float64{"CPU": 1}},
		{"whole gpus by id", map[string]float64{"GPU": 3}, []int{2, 5, 7},
			[]step{{map[string]float64{"GPU": 2}, true, []int64{2, 5}}, {map[string]float64{"GPU": 2}, false, nil}, {map[string]float64{"GPU": 1}, true, []int64{7}}},
			map[string]float64{"GPU": 0}},
		{"gpu fractions pack onto one instance", map[string]float64{"GPU": 2}, nil,
			[]step{{map[string]float64{"GPU": 0.5}, true, []int64{0}}, {map[string]float64{"GPU": 0.25}, true, []int64{0}}, {map[string]float64{"GPU": 1}, true, []int64{1}}, {map[string]float64{"GPU": 0.5}, false, nil}},
			map[string]float64{"GPU": 0.25}},
		{"more than one gpu must be whole", map[string]float64{"GPU": 4}, nil,
			[]step{{map[string]float64{"GPU": 1.5}, false, nil}},
			map[string]float64{"GPU": 4}},
		{"all or nothing", map[string]float64{"CPU": 4, "GPU": 1}, nil,
			[]step{{map[string]float64{"CPU": 1, "GPU": 2}, false, nil}},
			map[string]float64{"CPU": 4, "GPU": 1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := NewPool(tc.total, tc.gpuIDs)
			for i, s := range tc.steps {
				a, ok := p.Allocate(s.req)
				if ok != s.ok {
					t.Fatalf("step %d %v: ok=%v want %v", i, s.req, ok, s.ok)
				}
				if ok && s.gpuIDs != nil {
					var ids []int64
					for _, ia := range a["GPU"] {
						ids = append(ids, ia.ID)
					}
					if !reflect.DeepEqual(ids, s.gpuIDs) {
						t.Fatalf("step %d: GPU ids %v want %v", i, ids, s.gpuIDs)
					}
				}
			}
			if got := p.Available(); !reflect.DeepEqual(got, tc.avail) {
				t.Fatalf("available %v want %v", got, tc.avail)
			}
		})
	}
}

func TestPoolReleaseAndBlocked(t *testing.T) {
	p := NewPool(map[string]float64{"CPU": 2, "GPU": 1}, nil)
	a, _ := p.Allocate(map[string]float64{"CPU": 2, "GPU": 1})
	cpu := p.ReleaseOnly(a, "CPU")
	if p.Available()["CPU"] != 2 || p.Available()["GPU"] != 0 {
		t.Fatalf("after releasing CPU only: %v", p.Available())
	}
	b, ok := p.Allocate(map[string]float64{"CPU": 2})
	if !ok {
		t.Fatal("freed CPU not allocatable")
	}
	p.Reacquire("CPU", cpu)
	if p.Available()["CPU"] != -2 {
		t.Fatalf("oversubscribed CPU: %v", p.Available()["CPU"])
	}
	p.Release(a)
	p.Release(b)
	if !reflect.DeepEqual(p.Available(), p.Total()) {
		t.Fatalf("after release: %v vs total %v", p.Available(), p.Total())
	}
}

func TestPoolBundles(t *testing.T) {
	p := NewPool(map[string]float64{"CPU": 4, "GPU": 2}, []int{0, 1})
	k0 := BundleKey{PG: "abcd", Index: 0}
	k1 := BundleKey{PG: "abcd", Index: 1}
	b0, ok := p.PrepareBundle(map[string]float64{"CPU": 2, "GPU": 1})
	if !ok {
		t.Fatal("prepare 0")
	}
	b1, ok := p.PrepareBundle(map[string]float64{"CPU": 2})
	if !ok {
		t.Fatal("prepare 1")
	}
	if _, ok := p.PrepareBundle(map[string]float64{"CPU": 1}); ok {
		t.Fatal("prepared beyond the node's CPUs")
	}
	p.CommitBundle(k0, b0)
	p.CommitBundle(k1, b1)
	want := map[string]float64{
		"CPU": 0, "GPU": 1,
		"CPU_group_0_abcd": 2, "CPU_group_1_abcd": 2, "CPU_group_abcd": 4,
		"GPU_group_0_abcd": 1, "GPU_group_abcd": 1,
		"bundle_group_0_abcd": 1000, "bundle_group_1_abcd": 1000, "bundle_group_abcd": 2000,
	}
	if got := p.Available(); !reflect.DeepEqual(got, want) {
		t.Fatalf("after commit:\n%v\nwant\n%v", got, want)
	}
	// A task in bundle 0 gets the GPU instance the bundle reserved.
	a, ok := p.Allocate(map[string]float64{"CPU_group_0_abcd": 1, "CPU_group_abcd": 1, "GPU_group_0_abcd": 1, "GPU_group_abcd": 1, "bundle_group_abcd": 0.001})
	if !ok {
		t.Fatal("task in bundle 0 does not fit")
	}
	gpuID := b0.Alloc["GPU"][0].ID
	if a["GPU_group_0_abcd"][0].ID != gpuID {
		t.Fatalf("bundle GPU id %d, want %d", a["GPU_group_0_abcd"][0].ID, gpuID)
	}
	if !a.UsesBundle("abcd", 0) || a.UsesBundle("abcd", 1) || !a.UsesBundle("abcd", -1) {
		t.Fatal("usesBundle")
	}
	p.Release(a)
	p.ReturnBundle(k0, b0)
	p.ReturnBundle(k1, b1)
	if got := p.Available(); !reflect.DeepEqual(got, map[string]float64{"CPU": 4, "GPU": 2}) {
		t.Fatalf("after removal: %v", got)
	}
}

// Ray's implicit per-node resources: every node has one unit of each
// without offering it; Serve's max_replicas_per_node=k asks for 1/k of one
// per replica, so at most k replicas of a deployment share a node.
func TestPoolImplicitResource(t *testing.T) {
	const dep = ImplicitPrefix + "app:Model"
	p := NewPool(map[string]float64{"CPU": 4}, nil)
	if !p.Feasible(map[string]float64{dep: 1}) || p.Feasible(map[string]float64{dep: 1.5}) {
		t.Fatal("an implicit resource is feasible up to exactly one unit")
	}
	if _, ok := p.Total()[dep]; ok {
		t.Fatalf("implicit resource reported in totals: %v", p.Total())
	}
	half := map[string]float64{"CPU": 1, dep: 0.5}
	a1, ok1 := p.Allocate(half)
	a2, ok2 := p.Allocate(half)
	if !ok1 || !ok2 {
		t.Fatal("two replicas of max_replicas_per_node=2 must fit one node")
	}
	if _, ok := p.Allocate(half); ok {
		t.Fatal("a third replica of max_replicas_per_node=2 fit on the same node")
	}
	if got := p.Available()[dep]; got != 0 {
		t.Fatalf("implicit available while both are held = %v, want 0 reported", got)
	}
	if other := (map[string]float64{ImplicitPrefix + "app:Other": 1}); !p.Fits(other) {
		t.Fatal("another deployment's implicit resource is a separate unit")
	}
	p.Release(a1)
	if got := p.Available()[dep]; got != 0.5 {
		t.Fatalf("after one release implicit available = %v, want 0.5", got)
	}
	p.Release(a2)
	if _, ok := p.Available()[dep]; ok {
		t.Fatalf("an implicit resource back to a whole free unit is still reported: %v", p.Available())
	}
	if got := p.Available()["CPU"]; got != 4 {
		t.Fatalf("CPU after releases = %v", got)
	}
	if _, ok := p.Allocate(map[string]float64{dep: 1}); !ok {
		t.Fatal("the whole unit is free again after both releases")
	}
}

func TestHaveOf(t *testing.T) {
	have := map[string]float64{"CPU": 2, ImplicitPrefix + "a:b": 0.25}
	for _, c := range []struct {
		name string
		want float64
	}{{"CPU", 2}, {"GPU", 0}, {ImplicitPrefix + "a:b", 0.25}, {ImplicitPrefix + "x:y", 1}} {
		if got := HaveOf(have, c.name); got != c.want {
			t.Errorf("HaveOf(%q) = %v, want %v", c.name, got, c.want)
		}
	}
}

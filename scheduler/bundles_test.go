package scheduler

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"testing"
)

func gpuNode(id string, cpuT, cpuA, gpuT, gpuA float64) Node {
	return Node{ID: id, Total: map[string]float64{"CPU": cpuT, "GPU": gpuT},
		Available: map[string]float64{"CPU": cpuA, "GPU": gpuA}, Schedulable: true}
}

func cpus(vs ...float64) []map[string]float64 {
	out := make([]map[string]float64, len(vs))
	for i, v := range vs {
		out[i] = cpu(v)
	}
	return out
}

func TestPlaceBundlesTable(t *testing.T) {
	tests := []struct {
		name    string
		s       Snapshot
		bundles []map[string]float64
		st      BundleStrategy
		want    []string
		wantErr error
	}{
		{"pack: all on one node", snap(cpuNode("a", 4, 4), cpuNode("b", 8, 8)), cpus(2, 2, 2), Pack,
			[]string{"b", "b", "b"}, nil},
		{"pack: the only node that fits all", snap(cpuNode("a", 16, 5), cpuNode("b", 8, 6)), cpus(3, 3), Pack,
			[]string{"b", "b"}, nil},
		{"pack: split when no node fits all", snap(cpuNode("a", 4, 4), cpuNode("b", 4, 3)), cpus(3, 2, 2), Pack,
			[]string{"b", "a", "a"}, nil},
		{"pack: waits when they do not fit now", snap(cpuNode("a", 4, 1), cpuNode("b", 4, 1)), cpus(3, 3), Pack,
			nil, ErrUnavailable},
		{"pack: bin packing on totals is infeasible", snap(cpuNode("a", 4, 4), cpuNode("b", 4, 4)), cpus(3, 3, 3), Pack,
			nil, ErrInfeasible},
		{"pack: a bundle too big for any node", snap(cpuNode("a", 4, 4)), cpus(5), Pack, nil, ErrInfeasible},
		{"pack: exhaustive search finds what greedy misses",
			// Greedy puts the 5 on b (more room), then neither 4 nor 2 fits
			// beside it and 4+2 does not fit on a; a=5, b=4+2 does.
			snap(cpuNode("a", 5, 5), cpuNode("b", 6, 6)), cpus(2, 5, 4), Pack, []string{"b", "a", "b"}, nil},
		{"spread: exhaustive search finds what greedy misses",
			snap(cpuNode("a", 5, 5), cpuNode("b", 6, 6)), cpus(2, 5, 4), BundleSpread, []string{"b", "a", "b"}, nil},
		{"spread: distinct nodes", snap(cpuNode("a", 4, 4), cpuNode("b", 4, 4), cpuNode("c", 4, 4)), cpus(1, 1, 1), BundleSpread,
			nil, nil},
		{"spread: reuse when nodes run out", snap(cpuNode("a", 4, 4), cpuNode("b", 8, 8)), cpus(2, 2, 2), BundleSpread,
			nil, nil},
		{"spread: accounts for bundles already placed", snap(cpuNode("a", 4, 4), cpuNode("b", 4, 4)), cpus(3, 3), BundleSpread,
			nil, nil},
		{"strict pack: one node", snap(cpuNode("a", 4, 4), cpuNode("b", 8, 8)), cpus(2, 3), StrictPack, []string{"b", "b"}, nil},
		{"strict pack: waits", snap(cpuNode("a", 4, 4), cpuNode("b", 8, 4)), cpus(3, 3), StrictPack, nil, ErrUnavailable},
		{"strict pack: infeasible", snap(cpuNode("a", 4, 4), cpuNode("b", 4, 4)), cpus(3, 3), StrictPack, nil, ErrInfeasible},
		{"strict pack: unschedulable node counts for feasibility", snap(cpuNode("a", 4, 4), away(cpuNode("b", 8, 8))), cpus(3, 3), StrictPack,
			nil, ErrUnavailable},
		{"strict spread: distinct nodes", snap(cpuNode("a", 4, 4), cpuNode("b", 4, 4)), cpus(1, 1), StrictSpread, nil, nil},
		{"strict spread: more bundles than nodes", snap(cpuNode("a", 4, 4), cpuNode("b", 4, 4)), cpus(1, 1, 1), StrictSpread,
			nil, ErrInfeasible},
		{"strict spread: a node is away", snap(cpuNode("a", 4, 4), away(cpuNode("b", 4, 4))), cpus(1, 1), StrictSpread,
			nil, ErrUnavailable},
		{"strict spread: matching finds what greedy misses",
			// The GPU bundle goes first; greedy would give it g (most free CPU),
			// leaving the 6-CPU bundle nowhere. Matching puts it on h.
			snap(gpuNode("g", 8, 8, 1, 1), gpuNode("h", 4, 4, 1, 1)),
			[]map[string]float64{{"CPU": 6}, {"CPU": 1, "GPU": 1}}, StrictSpread, []string{"g", "h"}, nil},
		{"strict spread: no matching on totals", snap(gpuNode("g", 8, 8, 1, 1), cpuNode("c", 8, 8)),
			[]map[string]float64{{"GPU": 1}, {"GPU": 1}}, StrictSpread, nil, ErrInfeasible},
		{"GPU bundles are placed first",
			snap(gpuNode("g", 4, 4, 1, 1), cpuNode("c", 2, 2)),
			[]map[string]float64{{"CPU": 2}, {"CPU": 2, "GPU": 1}}, BundleSpread, []string{"c", "g"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for seed := range uint64(10) {
				got, err := PlaceBundles(tc.s, tc.bundles, tc.st, rng(seed))
				if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
					t.Fatalf("seed %d: err = %v, want %v", seed, err, tc.wantErr)
				}
				if err != nil {
					if got != nil {
						t.Fatalf("result %v with error", got)
					}
					return
				}
				if tc.want != nil && !slices.Equal(got, tc.want) {
					t.Fatalf("seed %d: got %v, want %v", seed, got, tc.want)
				}
				if msg := checkPlacement(tc.s, tc.bundles, tc.st, got); msg != "" {
					t.Fatalf("seed %d: %v: %s", seed, got, msg)
				}
			}
		})
	}
}

func TestPlaceBundlesSpreadShape(t *testing.T) {
	s := snap(cpuNode("a", 4, 4), cpuNode("b", 8, 8), cpuNode("c", 4, 4))
	got, err := PlaceBundles(s, cpus(1, 1, 1), BundleSpread, rng(1))
	if err != nil || distinct(got) != 3 {
		t.Fatalf("spread over 3 nodes: %v, %v", got, err)
	}
	got, err = PlaceBundles(s, cpus(2, 2, 2, 2, 2), BundleSpread, rng(1))
	if err != nil || distinct(got) != 3 {
		t.Fatalf("spread of 5 over 3 nodes: %v, %v", got, err)
	}
	got, err = PlaceBundles(s, cpus(1, 1, 1), Pack, rng(1))
	if err != nil || distinct(got) != 1 {
		t.Fatalf("pack: %v, %v", got, err)
	}
}

func distinct(ids []string) int {
	m := map[string]bool{}
	for _, id := range ids {
		m[id] = true
	}
	return len(m)
}

func TestPlaceBundlesInvalid(t *testing.T) {
	ok := snap(cpuNode("a", 4, 4))
	for name, tc := range map[string]struct {
		s  Snapshot
		b  []map[string]float64
		st BundleStrategy
	}{
		"no bundles":       {ok, nil, Pack},
		"negative":         {ok, cpus(-1), Pack},
		"NaN":              {ok, cpus(math.NaN()), StrictSpread},
		"unknown strategy": {ok, cpus(1), BundleStrategy(7)},
		"bad snapshot":     {snap(cpuNode("a", 1, 1), cpuNode("a", 1, 1)), cpus(1), Pack},
	} {
		if got, err := PlaceBundles(tc.s, tc.b, tc.st, rng(0)); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, %v; want ErrInvalid", name, got, err)
		}
	}
}

// The exhaustive search gives up (unknown, not impossible) when its budget
// is spent, so it never turns a hard case into ErrInfeasible by accident.
func TestSearchPackingBudget(t *testing.T) {
	var bundles [][]demand
	var caps []map[string]amount
	for i := range 12 {
		bundles = append(bundles, []demand{{"CPU", toAmount(float64(10 + i))}})
		caps = append(caps, map[string]amount{"CPU": toAmount(float64(11 + i))})
	}
	// One slot short of room: impossible, found out only by search.
	bundles = append(bundles, []demand{{"CPU", toAmount(5)}})
	caps[0]["CPU"] += toAmount(1)
	if _, res := searchPacking(bundles, caps, true, 50); res != searchUnknown {
		t.Fatalf("small budget: %v, want unknown", res)
	}
	if _, res := searchPacking(bundles[:1], caps[:1], true, 50); res != searchFound {
		t.Fatalf("trivial: %v", res)
	}
	if _, res := searchPacking([][]demand{{{"CPU", 5}}, {{"CPU", 5}}}, []map[string]amount{{"CPU": 9}}, true, 50); res != searchImpossible {
		t.Fatalf("sum exceeds capacity: %v", res)
	}
}

// A packing that is impossible only by a parity argument (odd capacities,
// even bundles, one bundle too many for the nodes' even room) is beyond the
// search budget: PlaceBundles must then say ErrUnavailable, never claim
// ErrInfeasible without proof.
func TestPlaceBundlesUnprovenIsNotInfeasible(t *testing.T) {
	var nodes []Node
	room := 0.0
	for i := range 10 {
		c := float64(21 + 2*i) // 21, 23, ..., 39
		nodes = append(nodes, cpuNode(fmt.Sprintf("n%02d", i), c, 0))
		room += c - 1
	}
	bundles := cpus(slices.Repeat([]float64{2}, int(room)/2+1)...)
	got, err := PlaceBundles(snap(nodes...), bundles, Pack, rng(1))
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("got %v, %v; want ErrUnavailable", got, err)
	}
	// One bundle fewer fills the even room exactly: feasible, found at once.
	if _, err := PlaceBundles(snap(nodes...), bundles[1:], BundleSpread, rng(1)); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("feasible shape: %v", err)
	}
	// Small and impossible: proven, so ErrInfeasible.
	if _, err := PlaceBundles(snap(nodes[:2]...), cpus(slices.Repeat([]float64{2}, 22)...), Pack, rng(1)); !errors.Is(err, ErrInfeasible) {
		t.Fatalf("small impossible: %v", err)
	}
}

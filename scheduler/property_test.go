package scheduler

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"testing"
)

// Property tests: random snapshots and requests from fixed seeds, checked
// against independent brute-force oracles written directly from the rules.

var regions = []string{"us-west1", "us-east1"}

func genSnapshot(r *rand.Rand, maxNodes int) Snapshot {
	n := r.IntN(maxNodes + 1)
	ids := r.Perm(256)
	var s Snapshot
	for i := range n {
		total := map[string]float64{}
		avail := map[string]float64{}
		add := func(name string, t float64) {
			if t == 0 && r.IntN(2) == 0 {
				return // absent rather than zero
			}
			total[name] = t
			avail[name] = float64(r.IntN(int(2*t)+1)) / 2 // multiples of 0.5, ≤ total
		}
		add("CPU", []float64{0, 1, 2, 4, 8}[r.IntN(5)])
		add("GPU", []float64{0, 0, 1, 2}[r.IntN(4)])
		add("memory", []float64{0, 4, 16}[r.IntN(3)])
		if r.IntN(4) == 0 {
			add("acc", 1)
		}
		labels := map[string]string{"ray.io/node-id": fmt.Sprintf("%02x", ids[i])}
		if k := r.IntN(3); k < 2 {
			labels["region"] = regions[k]
		}
		s.Nodes = append(s.Nodes, Node{ID: fmt.Sprintf("%02x", ids[i]), Total: total, Available: avail,
			Labels: labels, Schedulable: r.IntN(5) > 0})
	}
	return s
}

var selectorPool = []map[string]string{
	nil, {"region": "us-west1"}, {"region": "!us-west1"}, {"region": "in(us-west1,us-east1)"},
	{"region": "!in(us-west1,us-east1)"}, {"region": "eu"},
}

func genRequest(r *rand.Rand, s Snapshot) Request {
	res := map[string]float64{}
	if v := []float64{0, 0.5, 1, 2, 3, 5, 9}[r.IntN(7)]; v > 0 || r.IntN(2) == 0 {
		res["CPU"] = v
	}
	if r.IntN(4) == 0 {
		res["GPU"] = 1
	}
	if r.IntN(6) == 0 {
		res["acc"] = 0.5
	}
	pick := func() string {
		if len(s.Nodes) == 0 || r.IntN(5) == 0 {
			return "zz"
		}
		return s.Nodes[r.IntN(len(s.Nodes))].ID
	}
	req := Request{Resources: res, SpreadIndex: r.IntN(20) - 5}
	req.Strategy.Kind = Kind(r.IntN(3))
	if req.Strategy.Kind == NodeAffinity {
		req.Strategy.NodeID = pick()
		req.Strategy.Soft = r.IntN(2) == 0
	}
	req.Strategy.LabelSelector = selectorPool[r.IntN(len(selectorPool))]
	for range r.IntN(3) {
		req.Strategy.FallbackLabelSelectors = append(req.Strategy.FallbackLabelSelectors, selectorPool[r.IntN(len(selectorPool))])
	}
	if r.IntN(2) == 0 {
		req.Preferred = pick()
	}
	if r.IntN(3) == 0 {
		req.ArgBytes = map[string]int64{pick(): int64(r.IntN(100)), pick(): int64(r.IntN(100))}
	}
	return req
}

// covers is the oracle's resource check (plain floats; test amounts are
// multiples of 0.5, so exact).
func covers(have, want map[string]float64) bool {
	for k, v := range want {
		if v > 0 && have[k] < v {
			return false
		}
	}
	return true
}

func mustMatch(t *testing.T, labels, sel map[string]string) bool {
	ok, err := Matches(labels, sel)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

// oracleScore recomputes the hybrid score from the definition.
func oracleScore(n Node) float64 {
	u := 0.0
	for _, k := range []string{"CPU", "memory", "object_store_memory"} {
		if n.Total[k] > 0 {
			u = max(u, 1-n.Available[k]/n.Total[k])
		}
	}
	if u < 0.5 {
		return 0
	}
	return u
}

func checkSelect(t *testing.T, seed uint64, s Snapshot, r Request, d Decision, err error) {
	t.Helper()
	fail := func(format string, a ...any) {
		t.Helper()
		t.Fatalf("seed %d: %s\nrequest %+v\nsnapshot %+v\ndecision %+v err %v", seed, fmt.Sprintf(format, a...), r, s, d, err)
	}
	sels := append([]map[string]string{r.Strategy.LabelSelector}, r.Strategy.FallbackLabelSelectors...)
	byID := map[string]Node{}
	for _, n := range s.Nodes {
		byID[n.ID] = n
	}
	feasible := func(n Node) bool { // under some selector
		for _, sel := range sels {
			if covers(n.Total, r.Resources) && mustMatch(t, n.Labels, sel) {
				return true
			}
		}
		return false
	}
	anyFeasible, anyCandidate, anyNow := false, false, false
	for _, n := range s.Nodes {
		if feasible(n) {
			anyFeasible = true
			if n.Schedulable {
				anyCandidate = true
				anyNow = anyNow || covers(n.Available, r.Resources)
			}
		}
	}
	target, targetOK := byID[r.Strategy.NodeID]
	hard := r.Strategy.Kind == NodeAffinity && !r.Strategy.Soft

	if err == nil {
		n, ok := byID[d.NodeID]
		switch {
		case !ok:
			fail("chosen node not in snapshot")
		case !n.Schedulable:
			fail("chosen node unschedulable")
		case !feasible(n):
			fail("chosen node infeasible")
		case d.Queued == covers(n.Available, r.Resources):
			fail("Queued=%v but fits now=%v", d.Queued, !d.Queued)
		case hard && d.NodeID != r.Strategy.NodeID:
			fail("hard affinity chose another node")
		case !hard && anyNow && d.Queued:
			fail("queued although some node fits now")
		}
		if r.Strategy.Kind != Spread && d.SpreadNext != r.SpreadIndex {
			fail("SpreadNext changed")
		}
		return
	}
	switch {
	case errors.Is(err, ErrNoNode):
		if !hard || targetOK {
			fail("ErrNoNode")
		}
	case errors.Is(err, ErrInfeasible):
		if hard && (!targetOK || feasible(target)) || !hard && anyFeasible {
			fail("ErrInfeasible but a feasible node exists")
		}
	case errors.Is(err, ErrUnavailable):
		if hard && (!targetOK || !feasible(target) || target.Schedulable) || !hard && (!anyFeasible || anyCandidate) {
			fail("ErrUnavailable wrongly")
		}
	default:
		fail("unexpected error")
	}
}

func TestSelectProperties(t *testing.T) {
	for seed := range uint64(4000) {
		gen := rand.New(rand.NewPCG(seed, 7))
		s := genSnapshot(gen, 7)
		r := genRequest(gen, s)
		d, err := Select(s, r, rng(seed))
		checkSelect(t, seed, s, r, d, err)
		// Deterministic for a seed.
		d2, err2 := Select(s, r, rng(seed))
		if d2 != d || fmt.Sprint(err2) != fmt.Sprint(err) {
			t.Fatalf("seed %d: not deterministic: %+v %v vs %+v %v", seed, d, err, d2, err2)
		}
	}
}

// The hybrid draw never reaches past the k lowest scores, and an idle
// preferred node that fits always wins.
func TestHybridTopKProperty(t *testing.T) {
	for seed := range uint64(3000) {
		gen := rand.New(rand.NewPCG(seed, 8))
		s := genSnapshot(gen, 12)
		r := genRequest(gen, s)
		r.Strategy = Strategy{LabelSelector: r.Strategy.LabelSelector}
		r.ArgBytes = nil
		d, err := Select(s, r, rng(seed))
		if err != nil || d.Queued {
			continue
		}
		var scores []float64
		for _, n := range s.Nodes {
			if n.Schedulable && covers(n.Total, r.Resources) && covers(n.Available, r.Resources) && mustMatch(t, n.Labels, r.Strategy.LabelSelector) {
				scores = append(scores, oracleScore(n))
			}
		}
		sort.Float64s(scores)
		k := min(len(scores), max(1, len(s.Nodes)/5))
		var chosen, pref Node
		for _, n := range s.Nodes {
			if n.ID == d.NodeID {
				chosen = n
			}
			if n.ID == r.Preferred {
				pref = n
			}
		}
		prefIdle := pref.ID != "" && pref.Schedulable && covers(pref.Total, r.Resources) &&
			covers(pref.Available, r.Resources) && mustMatch(t, pref.Labels, r.Strategy.LabelSelector) && oracleScore(pref) == 0
		if prefIdle && d.NodeID != pref.ID {
			t.Fatalf("seed %d: idle preferred %s fits but %s chosen", seed, pref.ID, d.NodeID)
		}
		if d.NodeID != r.Preferred && oracleScore(chosen) > scores[k-1] {
			t.Fatalf("seed %d: chose score %v beyond the %d lowest %v", seed, oracleScore(chosen), k, scores)
		}
	}
}

// Following SpreadNext visits every node that fits now, once each, before
// any repeats.
func TestSpreadCoversProperty(t *testing.T) {
	for seed := range uint64(1500) {
		gen := rand.New(rand.NewPCG(seed, 9))
		s := genSnapshot(gen, 8)
		res := cpu([]float64{0, 0.5, 1, 2}[gen.IntN(4)])
		want := map[string]bool{}
		for _, n := range s.Nodes {
			if n.Schedulable && covers(n.Available, res) {
				want[n.ID] = true
			}
		}
		idx := gen.IntN(10)
		got := map[string]bool{}
		for range len(want) {
			d, err := Select(s, Request{Resources: res, Strategy: Strategy{Kind: Spread}, SpreadIndex: idx}, nil)
			if err != nil || d.Queued || got[d.NodeID] || !want[d.NodeID] {
				t.Fatalf("seed %d: %+v %v; visited %v want %v", seed, d, err, got, want)
			}
			got[d.NodeID] = true
			idx = d.SpreadNext
		}
	}
}

func genBundles(r *rand.Rand) []map[string]float64 {
	out := make([]map[string]float64, 1+r.IntN(4))
	for i := range out {
		b := map[string]float64{"CPU": []float64{0, 0.5, 1, 2, 3}[r.IntN(5)]}
		if r.IntN(4) == 0 {
			b["GPU"] = 1
		}
		if r.IntN(5) == 0 {
			b["memory"] = 4
		}
		out[i] = b
	}
	return out
}

// checkPlacement validates a result: one schedulable node per bundle, no
// node over-committed against Available, strict constraints held.
func checkPlacement(s Snapshot, bundles []map[string]float64, st BundleStrategy, got []string) string {
	if len(got) != len(bundles) {
		return fmt.Sprintf("%d nodes for %d bundles", len(got), len(bundles))
	}
	byID := map[string]Node{}
	for _, n := range s.Nodes {
		byID[n.ID] = n
	}
	used := map[string]map[string]float64{}
	for i, id := range got {
		n, ok := byID[id]
		if !ok || !n.Schedulable {
			return fmt.Sprintf("bundle %d on missing or unschedulable node %q", i, id)
		}
		if used[id] == nil {
			used[id] = map[string]float64{}
		}
		for k, v := range bundles[i] {
			used[id][k] += v
		}
	}
	for id, u := range used {
		if !covers(byID[id].Available, u) {
			return fmt.Sprintf("node %s over-committed: %v > %v", id, u, byID[id].Available)
		}
	}
	switch {
	case st == StrictPack && len(used) != 1:
		return "strict pack on several nodes"
	case st == StrictSpread && len(used) != len(bundles):
		return "strict spread repeats a node"
	}
	return ""
}

// placementExists enumerates every assignment of bundles to the given nodes
// (capacity from Total or Available) and reports whether one is valid.
func placementExists(nodes []Node, bundles []map[string]float64, st BundleStrategy, useTotal bool) bool {
	at := make([]int, len(bundles))
	var rec func(i int) bool
	rec = func(i int) bool {
		if i < len(bundles) {
			for j := range nodes {
				at[i] = j
				if rec(i + 1) {
					return true
				}
			}
			return false
		}
		used := map[int]map[string]float64{}
		for b, j := range at {
			if used[j] == nil {
				used[j] = map[string]float64{}
			}
			for k, v := range bundles[b] {
				used[j][k] += v
			}
		}
		if st == StrictPack && len(used) != 1 || st == StrictSpread && len(used) != len(bundles) {
			return false
		}
		for j, u := range used {
			c := nodes[j].Available
			if useTotal {
				c = nodes[j].Total
			}
			if !covers(c, u) {
				return false
			}
		}
		return true
	}
	return len(nodes) > 0 && rec(0)
}

func TestPlaceBundlesProperties(t *testing.T) {
	for seed := range uint64(3000) {
		gen := rand.New(rand.NewPCG(seed, 10))
		s := genSnapshot(gen, 5)
		bundles := genBundles(gen)
		st := BundleStrategy(gen.IntN(4))
		got, err := PlaceBundles(s, bundles, st, rng(seed))

		var sched []Node
		for _, n := range s.Nodes {
			if n.Schedulable {
				sched = append(sched, n)
			}
		}
		now := placementExists(sched, bundles, st, false)
		ever := placementExists(s.Nodes, bundles, st, true)
		fail := func(msg string) {
			t.Fatalf("seed %d %v: %s\nbundles %v\nsnapshot %+v\ngot %v err %v (now=%v ever=%v)", seed, st, msg, bundles, s, got, err, now, ever)
		}
		switch {
		case err == nil:
			if msg := checkPlacement(s, bundles, st, got); msg != "" {
				fail(msg)
			}
			if st == Pack && placementExists(sched, bundles, StrictPack, false) && distinct(got) != 1 {
				fail("pack split although one node fits all")
			}
		case errors.Is(err, ErrInfeasible):
			if ever {
				fail("ErrInfeasible but a placement on totals exists")
			}
		case errors.Is(err, ErrUnavailable):
			if !ever || now {
				fail("ErrUnavailable wrongly")
			}
		default:
			fail("unexpected error")
		}
		if err != nil && now {
			fail("a placement exists now but none was returned")
		}
		again, err2 := PlaceBundles(s, bundles, st, rng(seed))
		if fmt.Sprint(again, err2) != fmt.Sprint(got, err) {
			fail("not deterministic")
		}
	}
}

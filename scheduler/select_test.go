package scheduler

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// cpuNode is a schedulable node with CPU total and available.
func cpuNode(id string, total, avail float64) Node {
	return Node{ID: id, Total: map[string]float64{"CPU": total}, Available: map[string]float64{"CPU": avail}, Schedulable: true}
}

func labelled(n Node, kv ...string) Node {
	n.Labels = map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		n.Labels[kv[i]] = kv[i+1]
	}
	return n
}

func away(n Node) Node { n.Schedulable = false; return n }

func snap(nodes ...Node) Snapshot { return Snapshot{Nodes: nodes} }

func cpu(v float64) map[string]float64 { return map[string]float64{"CPU": v} }

func rng(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 0x5eed)) }

func TestSelectTable(t *testing.T) {
	idle3 := snap(cpuNode("a", 8, 8), cpuNode("b", 8, 8), cpuNode("c", 8, 8))
	tests := []struct {
		name    string
		s       Snapshot
		r       Request
		want    Decision
		wantErr error
	}{
		{"preferred idle node packs locally", idle3,
			Request{Resources: cpu(1), Preferred: "b"}, Decision{NodeID: "b"}, nil},
		{"preferred over threshold but least loaded",
			snap(cpuNode("a", 8, 2), cpuNode("b", 8, 1), cpuNode("c", 8, 1)),
			Request{Resources: cpu(1), Preferred: "a"}, Decision{NodeID: "a"}, nil},
		{"preferred over threshold spills to idle node",
			snap(cpuNode("a", 8, 2), cpuNode("b", 8, 1), cpuNode("c", 8, 8)),
			Request{Resources: cpu(1), Preferred: "a"}, Decision{NodeID: "c"}, nil},
		{"no preference: lowest score, ties by id (k=1 for 3 nodes)",
			snap(cpuNode("a", 8, 3), cpuNode("b", 8, 5), cpuNode("c", 8, 6)),
			Request{Resources: cpu(1)}, Decision{NodeID: "b"}, nil},
		{"unknown preferred node is ignored", idle3,
			Request{Resources: cpu(1), Preferred: "zz"}, Decision{NodeID: "a"}, nil},
		{"preferred node that cannot fit is skipped",
			snap(cpuNode("a", 8, 8), cpuNode("b", 2, 2)),
			Request{Resources: cpu(4), Preferred: "b"}, Decision{NodeID: "a"}, nil},
		{"all full: queue on the least utilised",
			snap(cpuNode("a", 8, 0), cpuNode("b", 8, 0.5), cpuNode("c", 4, 1)),
			Request{Resources: cpu(2)}, Decision{NodeID: "c", Queued: true}, nil},
		{"all full: queue on the preferred when it is least utilised",
			snap(cpuNode("a", 8, 1), cpuNode("b", 8, 1), cpuNode("c", 8, 0)),
			Request{Resources: cpu(2), Preferred: "b"}, Decision{NodeID: "b", Queued: true}, nil},
		{"full node is not chosen while another fits",
			snap(cpuNode("a", 8, 8), cpuNode("b", 8, 8)),
			Request{Resources: cpu(1), Preferred: "zz", ArgBytes: map[string]int64{"b": 1}}, Decision{NodeID: "b"}, nil},
		{"unschedulable nodes get no work",
			snap(away(cpuNode("a", 8, 8)), cpuNode("b", 8, 1)),
			Request{Resources: cpu(2), Preferred: "a"}, Decision{NodeID: "b", Queued: true}, nil},
		{"only unschedulable nodes fit: unavailable, not infeasible",
			snap(away(cpuNode("a", 8, 8)), cpuNode("b", 1, 1)),
			Request{Resources: cpu(2)}, Decision{}, ErrUnavailable},
		{"nothing fits the totals", snap(cpuNode("a", 1, 1), away(cpuNode("b", 1, 1))),
			Request{Resources: cpu(2)}, Decision{}, ErrInfeasible},
		{"empty snapshot", snap(), Request{Resources: cpu(1)}, Decision{}, ErrInfeasible},
		{"missing resource counts as zero", idle3,
			Request{Resources: map[string]float64{"GPU": 1}}, Decision{}, ErrInfeasible},
		{"zero-valued requests are ignored", idle3,
			Request{Resources: map[string]float64{"GPU": 0, "CPU": 1}, Preferred: "c"}, Decision{NodeID: "c"}, nil},
		{"empty request fits anywhere", idle3, Request{Preferred: "a"}, Decision{NodeID: "a"}, nil},
		{"custom resource",
			snap(cpuNode("a", 8, 8), Node{ID: "b", Total: map[string]float64{"CPU": 8, "accelerator_type:H100": 1},
				Available: map[string]float64{"CPU": 8, "accelerator_type:H100": 1}, Schedulable: true}),
			Request{Resources: map[string]float64{"accelerator_type:H100": 0.001}, Preferred: "a"}, Decision{NodeID: "b"}, nil},
		{"fixed point: 0.1+0.2 available fits 0.3",
			snap(Node{ID: "a", Total: cpu(1), Available: cpu(0.1 + 0.2), Schedulable: true}),
			Request{Resources: cpu(0.3)}, Decision{NodeID: "a"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for seed := range uint64(20) {
				got, err := Select(tc.s, tc.r, rng(seed))
				if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
					t.Fatalf("seed %d: err = %v, want %v", seed, err, tc.wantErr)
				}
				if got != tc.want {
					t.Fatalf("seed %d: got %+v, want %+v", seed, got, tc.want)
				}
			}
		})
	}
}

func TestSelectLabelSelectors(t *testing.T) {
	s := snap(
		labelled(cpuNode("e1", 8, 0), "region", "us-east1"),
		labelled(cpuNode("w1", 8, 8), "region", "us-west1"),
		labelled(away(cpuNode("x1", 8, 8)), "region", "eu"),
		cpuNode("n1", 8, 8),
	)
	sel := func(m map[string]string, fb ...map[string]string) Strategy {
		return Strategy{LabelSelector: m, FallbackLabelSelectors: fb}
	}
	east := map[string]string{"region": "us-east1"}
	west := map[string]string{"region": "us-west1"}
	eu := map[string]string{"region": "eu"}
	mars := map[string]string{"region": "mars"}
	tests := []struct {
		name    string
		st      Strategy
		want    Decision
		wantErr error
	}{
		{"hard selector queues on the matching node", sel(east), Decision{NodeID: "e1", Queued: true}, nil},
		{"not-equal excludes", sel(map[string]string{"region": "!us-west1"}), Decision{NodeID: "n1"}, nil},
		{"in()", sel(map[string]string{"region": "in(us-west1,eu)"}), Decision{NodeID: "w1"}, nil},
		{"no match anywhere", sel(mars), Decision{}, ErrInfeasible},
		{"matching node unschedulable", sel(eu), Decision{}, ErrUnavailable},
		{"fallback used when primary is full", sel(east, west), Decision{NodeID: "w1"}, nil},
		{"fallback used when primary is infeasible", sel(mars, west), Decision{NodeID: "w1"}, nil},
		{"primary full, fallback impossible: queue under primary", sel(east, mars), Decision{NodeID: "e1", Queued: true}, nil},
		{"primary infeasible, fallback unschedulable", sel(mars, eu), Decision{}, ErrUnavailable},
		{"all impossible", sel(mars, mars), Decision{}, ErrInfeasible},
		{"spread honours selectors", Strategy{Kind: Spread, LabelSelector: mars, FallbackLabelSelectors: []map[string]string{west}}, Decision{NodeID: "w1", SpreadNext: 3}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Select(s, Request{Resources: cpu(1), Strategy: tc.st, Preferred: "n1"}, rng(1))
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestSelectDataLocality(t *testing.T) {
	s := snap(cpuNode("a", 8, 8), cpuNode("b", 8, 8), cpuNode("c", 8, 8), cpuNode("d", 8, 0), away(cpuNode("e", 8, 8)))
	tests := []struct {
		name string
		args map[string]int64
		want Decision
	}{
		{"no args: preferred", nil, Decision{NodeID: "b"}},
		{"largest holder wins over preferred", map[string]int64{"a": 10, "c": 30}, Decision{NodeID: "c"}},
		{"ties go to the smaller id", map[string]int64{"c": 30, "a": 30}, Decision{NodeID: "a"}},
		{"zero bytes count for nothing", map[string]int64{"c": 0}, Decision{NodeID: "b"}},
		{"holder not in snapshot: preferred", map[string]int64{"zz": 99}, Decision{NodeID: "b"}},
		{"holder unschedulable: preferred", map[string]int64{"e": 99}, Decision{NodeID: "b"}},
		// The holder replaces the preferred node; when it is full the task
		// spills to the best available node, as Ray's raylet does.
		{"holder full: spill to best node", map[string]int64{"d": 99}, Decision{NodeID: "a"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Select(s, Request{Resources: cpu(1), Preferred: "b", ArgBytes: tc.args}, rng(3))
			if err != nil || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
	// Locality is ignored by Spread and NodeAffinity.
	got, err := Select(s, Request{Resources: cpu(1), Strategy: Strategy{Kind: Spread}, ArgBytes: map[string]int64{"c": 5}}, rng(3))
	if err != nil || got.NodeID != "a" {
		t.Fatalf("spread with args: %+v, %v", got, err)
	}
}

func TestSelectTopK(t *testing.T) {
	// Ten nodes over the spread threshold with distinct utilisation:
	// k = max(1, floor(0.2*10)) = 2, so only the two least loaded are drawn.
	var nodes []Node
	for i := range 10 {
		nodes = append(nodes, cpuNode(fmt.Sprintf("n%d", i), 100, float64(40-i*3)))
	}
	seen := map[string]int{}
	for seed := range uint64(400) {
		d, err := Select(snap(nodes...), Request{Resources: cpu(1)}, rng(seed))
		if err != nil {
			t.Fatal(err)
		}
		seen[d.NodeID]++
	}
	if len(seen) != 2 || seen["n0"] == 0 || seen["n1"] == 0 {
		t.Fatalf("draws = %v, want only n0 and n1, both drawn", seen)
	}
	// A nil rand takes the first of the k.
	if d, _ := Select(snap(nodes...), Request{Resources: cpu(1)}, nil); d.NodeID != "n0" {
		t.Fatalf("nil rand chose %s", d.NodeID)
	}
	if got := []int{topK(0), topK(4), topK(5), topK(9), topK(10), topK(100)}; !slices.Equal(got, []int{1, 1, 1, 1, 2, 20}) {
		t.Fatalf("topK = %v", got)
	}
}

func TestSelectSpread(t *testing.T) {
	s := snap(cpuNode("d", 8, 8), cpuNode("b", 8, 0), cpuNode("a", 8, 8), away(cpuNode("e", 8, 8)), cpuNode("c", 8, 8))
	spread := func(idx int, res float64) (Decision, error) {
		return Select(s, Request{Resources: cpu(res), Strategy: Strategy{Kind: Spread}, SpreadIndex: idx}, nil)
	}
	// Sorted order a b c d e; b is full, e unschedulable.
	var order []string
	idx := 0
	for range 6 {
		d, err := spread(idx, 1)
		if err != nil || d.Queued {
			t.Fatalf("spread: %+v, %v", d, err)
		}
		order = append(order, d.NodeID)
		idx = d.SpreadNext
	}
	if want := []string{"a", "c", "d", "a", "c", "d"}; !slices.Equal(order, want) {
		t.Fatalf("order %v, want %v", order, want)
	}
	tests := []struct {
		idx  int
		res  float64
		want Decision
	}{
		{1, 1, Decision{NodeID: "c", SpreadNext: 3}},
		{4, 1, Decision{NodeID: "a", SpreadNext: 1}},
		{-1, 1, Decision{NodeID: "a", SpreadNext: 1}},
		{13, 1, Decision{NodeID: "d", SpreadNext: 4}},
	}
	for _, tc := range tests {
		if d, err := spread(tc.idx, tc.res); err != nil || d != tc.want {
			t.Errorf("spread(%d) = %+v, %v; want %+v", tc.idx, d, err, tc.want)
		}
	}
	// Nothing fits now: the queue is spread over feasible nodes the same way.
	full := snap(cpuNode("a", 8, 0), cpuNode("b", 8, 1), cpuNode("c", 8, 0))
	d, err := Select(full, Request{Resources: cpu(2), Strategy: Strategy{Kind: Spread}, SpreadIndex: 1}, nil)
	if err != nil || d != (Decision{NodeID: "b", Queued: true, SpreadNext: 2}) {
		t.Fatalf("all full: %+v, %v", d, err)
	}
	if _, err := spread(0, 9); !errors.Is(err, ErrInfeasible) {
		t.Fatalf("too big: %v", err)
	}
	if _, err := Select(snap(away(cpuNode("a", 8, 8))), Request{Strategy: Strategy{Kind: Spread}}, nil); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("unschedulable only: %v", err)
	}
}

func TestSelectNodeAffinity(t *testing.T) {
	s := snap(cpuNode("a", 8, 8), cpuNode("b", 8, 1), away(cpuNode("c", 8, 8)), cpuNode("d", 4, 2))
	aff := func(id string, soft bool) Strategy { return Strategy{Kind: NodeAffinity, NodeID: id, Soft: soft} }
	tests := []struct {
		name    string
		st      Strategy
		cpus    float64
		want    Decision
		wantErr error
	}{
		{"hard: fits", aff("b", false), 1, Decision{NodeID: "b", SpreadNext: 7}, nil},
		{"hard: full queues on target", aff("d", false), 2.5, Decision{NodeID: "d", Queued: true, SpreadNext: 7}, nil},
		{"hard: absent", aff("zz", false), 1, Decision{}, ErrNoNode},
		{"hard: unschedulable", aff("c", false), 1, Decision{}, ErrUnavailable},
		{"hard: too big", aff("d", false), 5, Decision{}, ErrInfeasible},
		{"hard: label mismatch", Strategy{Kind: NodeAffinity, NodeID: "a", LabelSelector: map[string]string{"k": "v"}}, 1, Decision{}, ErrInfeasible},
		{"hard: fallback selector matches", Strategy{Kind: NodeAffinity, NodeID: "a", LabelSelector: map[string]string{"k": "v"},
			FallbackLabelSelectors: []map[string]string{{"k": "!v"}}}, 1, Decision{NodeID: "a", SpreadNext: 7}, nil},
		{"soft: fits", aff("b", true), 1, Decision{NodeID: "b", SpreadNext: 7}, nil},
		{"soft: full falls back", aff("d", true), 2.5, Decision{NodeID: "a", SpreadNext: 7}, nil},
		{"soft: too big falls back", aff("d", true), 5, Decision{NodeID: "a", SpreadNext: 7}, nil},
		{"soft: absent falls back", aff("zz", true), 2.5, Decision{NodeID: "a", SpreadNext: 7}, nil},
		{"soft: unschedulable falls back", aff("c", true), 2.5, Decision{NodeID: "a", SpreadNext: 7}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Select(s, Request{Resources: cpu(tc.cpus), Strategy: tc.st, SpreadIndex: 7}, rng(9))
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
	// Soft affinity when nothing fits anywhere queues on the target.
	full := snap(cpuNode("a", 8, 1), cpuNode("b", 8, 1), cpuNode("c", 8, 0))
	d, err := Select(full, Request{Resources: cpu(2), Strategy: aff("b", true)}, rng(1))
	if err != nil || d != (Decision{NodeID: "b", Queued: true}) {
		t.Fatalf("soft all full: %+v, %v", d, err)
	}
	// Soft affinity to an infeasible target falls back; if the only other
	// feasible node is away, the caller waits.
	d, err = Select(snap(cpuNode("a", 1, 1), away(cpuNode("b", 8, 8))), Request{Resources: cpu(2), Strategy: aff("a", true)}, rng(1))
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("soft infeasible target: %+v, %v", d, err)
	}
}

func TestSelectInvalid(t *testing.T) {
	ok := snap(cpuNode("a", 1, 1))
	tests := []struct {
		name string
		s    Snapshot
		r    Request
	}{
		{"negative request", ok, Request{Resources: cpu(-1)}},
		{"NaN request", ok, Request{Resources: cpu(math.NaN())}},
		{"infinite request", ok, Request{Resources: cpu(math.Inf(1))}},
		{"negative total", snap(cpuNode("a", -1, 1)), Request{}},
		{"NaN available", snap(cpuNode("a", 1, math.NaN())), Request{}},
		{"empty id", snap(cpuNode("", 1, 1)), Request{}},
		{"duplicate id", snap(cpuNode("a", 1, 1), cpuNode("a", 2, 2)), Request{}},
		{"bad selector", ok, Request{Strategy: Strategy{LabelSelector: map[string]string{"k": "in()"}}}},
		{"bad fallback selector", ok, Request{Strategy: Strategy{FallbackLabelSelectors: []map[string]string{{"k": "!"}}}}},
		{"unknown kind", ok, Request{Strategy: Strategy{Kind: Kind(9)}}},
		{"affinity without node", ok, Request{Strategy: Strategy{Kind: NodeAffinity}}},
	}
	for _, tc := range tests {
		if d, err := Select(tc.s, tc.r, rng(0)); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: got %+v, %v; want ErrInvalid", tc.name, d, err)
		}
	}
}

// A node whose unblocked workers took their CPUs back beyond its total has
// negative availability for a while: it takes no new work, and a request
// that fits elsewhere goes there; it is no reason to fail the request.
func TestOversubscribedNodeHasNothingAvailable(t *testing.T) {
	s := snap(cpuNode("a", 2, -1), cpuNode("b", 2, 1))
	d, err := Select(s, Request{Resources: cpu(1)}, rng(0))
	if err != nil || d.NodeID != "b" || d.Queued {
		t.Fatalf("got %+v, %v; want b now", d, err)
	}
	d, err = Select(snap(cpuNode("a", 2, -1)), Request{Resources: cpu(1)}, rng(0))
	if err != nil || d.NodeID != "a" || !d.Queued {
		t.Fatalf("alone: got %+v, %v; want queued on a", d, err)
	}
}

func TestKindStrings(t *testing.T) {
	got := []string{Default.String(), Spread.String(), NodeAffinity.String(), Kind(7).String(),
		Pack.String(), BundleSpread.String(), StrictPack.String(), StrictSpread.String(), BundleStrategy(9).String()}
	want := []string{"DEFAULT", "SPREAD", "NODE_AFFINITY", "Kind(7)", "PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD", "BundleStrategy(9)"}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v", got)
	}
}

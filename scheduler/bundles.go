package scheduler

import (
	"fmt"
	"math/rand/v2"
	"sort"
)

// PlaceBundles chooses a node for each bundle of a placement group and
// returns the node ids in bundle order.
//
// Only Schedulable nodes receive bundles, and every placement fits in the
// nodes' Available resources counting the bundles already placed by this
// call. Bundles are considered largest first in Ray's order (GPU, then custom
// resources by name, then object_store_memory, memory, CPU; larger first,
// ties keep input order), and a node's score for a bundle is Ray's
// least-resource score: the sum over requested resources of
// (available − requested)/available, higher is better; equal best scores are
// broken by rnd (nil: smallest ID).
//
//   - StrictPack: every bundle on the best-scoring node that fits their sum.
//   - Pack: the same when one node fits the sum; otherwise repeatedly take the
//     best node for the first unplaced bundle and put on it every unplaced
//     bundle that still fits (bundle_scheduling_policy.cc).
//   - BundleSpread: each bundle on the best node not yet used by this group,
//     else on the best already-used node.
//   - StrictSpread: each bundle on a distinct node; bundles are matched to
//     nodes by augmenting paths, so a placement is found whenever one exists.
//
// When the greedy Pack or BundleSpread pass fails, a bounded exhaustive
// search looks for any placement before giving up.
//
// Errors: ErrInfeasible when the bundles could never be placed on the Totals
// of all nodes in the snapshot, schedulable or not (StrictPack: no node's
// Total covers the sum; StrictSpread: no assignment to distinct nodes; Pack
// and BundleSpread: some bundle fits no node, or an exhaustive search proves
// no packing exists); ErrUnavailable when they are feasible but cannot be
// placed now; ErrInvalid for no bundles, bad amounts or an unknown strategy.
func PlaceBundles(s Snapshot, bundles []map[string]float64, st BundleStrategy, rnd *rand.Rand) ([]string, error) {
	c, err := compile(s)
	if err != nil {
		return nil, err
	}
	if len(bundles) == 0 {
		return nil, fmt.Errorf("%w: placement group without bundles", ErrInvalid)
	}
	if st < Pack || st > StrictSpread {
		return nil, fmt.Errorf("%w: bundle strategy %v", ErrInvalid, st)
	}
	reqs := make([][]demand, len(bundles))
	for i, b := range bundles {
		if reqs[i], err = compileDemand(b); err != nil {
			return nil, fmt.Errorf("bundle %d: %w", i, err)
		}
	}
	order := bundleOrder(reqs)
	sorted := make([][]demand, len(order))
	for i, j := range order {
		sorted[i] = reqs[j]
	}

	if err := c.checkBundlesFeasible(sorted, st); err != nil {
		return nil, err
	}

	var cands []*node
	for _, n := range c.nodes {
		if n.schedulable {
			cands = append(cands, n)
		}
	}
	p := newPlacer(cands, rnd)
	var at []int // node index into cands per sorted bundle
	switch st {
	case StrictPack:
		at = p.strictPack(sorted)
	case StrictSpread:
		at = p.strictSpread(sorted)
	case Pack:
		if at = p.strictPack(sorted); at == nil {
			at = p.pack(sorted)
		}
	case BundleSpread:
		at = p.spread(sorted)
	}
	if at == nil && (st == Pack || st == BundleSpread) {
		caps := make([]map[string]amount, len(cands))
		for i, n := range cands {
			caps[i] = n.avail
		}
		at, _ = searchPacking(sorted, caps, st == Pack, searchBudget)
	}
	if at == nil {
		return nil, fmt.Errorf("%w: %d bundle(s) %v do not fit in the available resources now", ErrUnavailable, len(bundles), st)
	}
	out := make([]string, len(bundles))
	for i, j := range order {
		out[j] = cands[at[i]].id
	}
	return out, nil
}

// searchBudget bounds the exhaustive packing search (node examinations), so
// one search costs at most some tens of milliseconds.
const searchBudget = 1_000_000

// checkBundlesFeasible decides ErrInfeasible on the Totals of every node.
func (c *cluster) checkBundlesFeasible(sorted [][]demand, st BundleStrategy) error {
	caps := make([]map[string]amount, len(c.nodes))
	for i, n := range c.nodes {
		caps[i] = n.total
	}
	switch st {
	case StrictPack:
		sum := sumDemands(sorted)
		for _, t := range caps {
			if fits(t, sum) {
				return nil
			}
		}
		return fmt.Errorf("%w: no node's total covers the %d bundles together", ErrInfeasible, len(sorted))
	case StrictSpread:
		if len(sorted) > len(caps) {
			return fmt.Errorf("%w: %d bundles need distinct nodes but the cluster has %d", ErrInfeasible, len(sorted), len(caps))
		}
		prefs := make([][]int, len(sorted))
		for i, b := range sorted {
			for j, t := range caps {
				if fits(t, b) {
					prefs[i] = append(prefs[i], j)
				}
			}
		}
		if matchDistinct(prefs, len(caps)) == nil {
			return fmt.Errorf("%w: the bundles cannot go on distinct nodes", ErrInfeasible)
		}
		return nil
	}
	for _, b := range sorted {
		ok := false
		for _, t := range caps {
			if fits(t, b) {
				ok = true
				break
			}
		}
		if !ok {
			return fmt.Errorf("%w: bundle of %s fits no node", ErrInfeasible, describe(b, nil))
		}
	}
	if _, res := searchPacking(sorted, caps, true, searchBudget); res == searchImpossible {
		return fmt.Errorf("%w: the bundles cannot be packed into the nodes' totals", ErrInfeasible)
	}
	return nil
}

func sumDemands(bs [][]demand) []demand {
	m := map[string]amount{}
	for _, b := range bs {
		for _, d := range b {
			m[d.name] += d.amt
		}
	}
	out := make([]demand, 0, len(m))
	for k, v := range m {
		out = append(out, demand{k, v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// bundleOrder returns bundle indexes in Ray's placement order.
func bundleOrder(reqs [][]demand) []int {
	get := func(b []demand, name string) amount {
		for _, d := range b {
			if d.name == name {
				return d.amt
			}
		}
		return 0
	}
	predefined := func(name string) bool {
		switch name {
		case ResourceCPU, ResourceGPU, ResourceMemory, ResourceObjectStoreMemory:
			return true
		}
		return false
	}
	order := make([]int, len(reqs))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(x, y int) bool {
		a, b := reqs[order[x]], reqs[order[y]]
		if ga, gb := get(a, ResourceGPU), get(b, ResourceGPU); ga != gb {
			return ga > gb
		}
		var custom []string
		for _, d := range a {
			if !predefined(d.name) {
				custom = append(custom, d.name)
			}
		}
		for _, d := range b {
			if !predefined(d.name) {
				custom = append(custom, d.name)
			}
		}
		sort.Strings(custom)
		for _, name := range custom {
			if va, vb := get(a, name), get(b, name); va != vb {
				return va > vb
			}
		}
		for _, name := range [...]string{ResourceObjectStoreMemory, ResourceMemory, ResourceCPU} {
			if va, vb := get(a, name), get(b, name); va != vb {
				return va > vb
			}
		}
		return false
	})
	return order
}

// placer tracks what this call has taken from each candidate node.
type placer struct {
	nodes []*node
	free  []map[string]amount // copies of Available, reduced as bundles land
	rnd   *rand.Rand
}

func newPlacer(nodes []*node, rnd *rand.Rand) *placer {
	p := &placer{nodes: nodes, free: make([]map[string]amount, len(nodes)), rnd: rnd}
	for i, n := range nodes {
		m := make(map[string]amount, len(n.avail))
		for k, v := range n.avail {
			m[k] = v
		}
		p.free[i] = m
	}
	return p
}

func (p *placer) take(i int, b []demand) {
	for _, d := range b {
		p.free[i][d.name] -= d.amt
	}
}

// leastResourceScore is Ray's LeastResourceScorer; ok is false when b does
// not fit.
func leastResourceScore(free map[string]amount, b []demand) (score float64, ok bool) {
	if !fits(free, b) {
		return 0, false
	}
	for _, d := range b {
		if a := free[d.name]; a > 0 {
			score += float64(a-d.amt) / float64(a)
		}
	}
	return score, true
}

// best returns the allowed node with the highest score for b, -1 if none
// fits; ties are drawn with rnd.
func (p *placer) best(b []demand, allowed func(int) bool) int {
	var ties []int
	bestScore := 0.0
	for i := range p.nodes {
		if allowed != nil && !allowed(i) {
			continue
		}
		sc, ok := leastResourceScore(p.free[i], b)
		switch {
		case !ok:
		case len(ties) == 0 || sc > bestScore:
			ties, bestScore = append(ties[:0], i), sc
		case sc == bestScore:
			ties = append(ties, i)
		}
	}
	switch {
	case len(ties) == 0:
		return -1
	case len(ties) == 1 || p.rnd == nil:
		return ties[0]
	}
	return ties[p.rnd.IntN(len(ties))]
}

func (p *placer) strictPack(sorted [][]demand) []int {
	sum := sumDemands(sorted)
	i := p.best(sum, nil)
	if i < 0 {
		return nil
	}
	at := make([]int, len(sorted))
	for k := range at {
		at[k] = i
	}
	return at
}

func (p *placer) pack(sorted [][]demand) []int {
	at := make([]int, len(sorted))
	placed := make([]bool, len(sorted))
	used := make([]bool, len(p.nodes))
	left := len(sorted)
	for left > 0 {
		first := 0
		for placed[first] {
			first++
		}
		i := p.best(sorted[first], func(j int) bool { return !used[j] })
		if i < 0 {
			return nil
		}
		used[i] = true
		for k := first; k < len(sorted); k++ {
			if !placed[k] && fits(p.free[i], sorted[k]) {
				p.take(i, sorted[k])
				at[k], placed[k] = i, true
				left--
			}
		}
	}
	return at
}

func (p *placer) spread(sorted [][]demand) []int {
	at := make([]int, len(sorted))
	used := make([]bool, len(p.nodes))
	for k, b := range sorted {
		i := p.best(b, func(j int) bool { return !used[j] })
		if i < 0 {
			i = p.best(b, func(j int) bool { return used[j] })
		}
		if i < 0 {
			return nil
		}
		used[i] = true
		p.take(i, b)
		at[k] = i
	}
	return at
}

func (p *placer) strictSpread(sorted [][]demand) []int {
	if len(sorted) > len(p.nodes) {
		return nil
	}
	// Random order first, then a stable sort by score, breaks ties randomly.
	perm := make([]int, len(p.nodes))
	for i := range perm {
		perm[i] = i
	}
	if p.rnd != nil {
		p.rnd.Shuffle(len(perm), func(i, j int) { perm[i], perm[j] = perm[j], perm[i] })
	}
	prefs := make([][]int, len(sorted))
	for k, b := range sorted {
		type cand struct {
			i  int
			sc float64
		}
		var cs []cand
		for _, i := range perm {
			if sc, ok := leastResourceScore(p.free[i], b); ok {
				cs = append(cs, cand{i, sc})
			}
		}
		sort.SliceStable(cs, func(x, y int) bool { return cs[x].sc > cs[y].sc })
		for _, c := range cs {
			prefs[k] = append(prefs[k], c.i)
		}
	}
	return matchDistinct(prefs, len(p.nodes))
}

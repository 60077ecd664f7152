package scheduler

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
)

// Select chooses a node for one task or actor.
//
// Filter: a node is a candidate under a label selector when it is feasible
// (Total covers the request, labels match) and Schedulable. The selectors
// tried are Strategy.LabelSelector and then each FallbackLabelSelectors entry
// in order; the first selector with a node that fits now wins, otherwise the
// first selector that produced a queued decision wins.
//
// Default (hybrid, hybrid_scheduling_policy.cc): each candidate scores its
// critical utilisation (max used fraction of CPU, memory, object store
// memory; below SpreadThreshold it scores 0). If any candidate fits in
// Available now, choose among those, else among the full ones with
// Queued=true. The preferred node is taken when it is in that group and its
// score is no higher than the lowest score there; otherwise the group is
// ordered by (score, ID) and one of the first k is drawn uniformly, where
// k = max(1, floor(0.2 × len(snapshot))). The preferred node is Request.Preferred,
// replaced by the data-locality node when there is one: the node holding the
// most ArgBytes (ties to the smaller ID, only counts > 0) provided it is in
// the snapshot, feasible and Schedulable (Ray's LocalityAwareLeasePolicy
// sends the lease to that node, which then runs hybrid with itself local).
//
// Spread (spread_scheduling_policy.cc): walk the snapshot's nodes sorted by
// ID starting at SpreadIndex mod N and take the first candidate that fits
// now; if none fits, the first candidate with Queued=true. SpreadNext is one
// past the chosen position. Preferred and ArgBytes are ignored.
//
// NodeAffinity (node_affinity_scheduling_policy.cc): hard → the target only:
// ErrNoNode if it is not in the snapshot, ErrInfeasible if it can never fit,
// ErrUnavailable if it is unschedulable, Queued=true if it is full. Soft →
// the target when it fits now, otherwise the hybrid policy over all nodes,
// favouring the target (so when nothing fits anywhere it queues on the
// target, as Ray does).
//
// rnd supplies the hybrid top-k draw; with a nil rnd the first of the k is
// taken.
func Select(s Snapshot, r Request, rnd *rand.Rand) (Decision, error) {
	c, err := compile(s)
	if err != nil {
		return Decision{}, err
	}
	req, err := compileDemand(r.Resources)
	if err != nil {
		return Decision{}, err
	}
	sels, err := compileSelectors(r.Strategy)
	if err != nil {
		return Decision{}, err
	}
	switch r.Strategy.Kind {
	case Default, Spread:
	case NodeAffinity:
		if r.Strategy.NodeID == "" {
			return Decision{}, fmt.Errorf("%w: node affinity without a node id", ErrInvalid)
		}
	default:
		return Decision{}, fmt.Errorf("%w: strategy %v", ErrInvalid, r.Strategy.Kind)
	}

	var (
		queued     *Decision
		firstErr   error
		unavailErr error
	)
	for _, sel := range sels {
		d, err := c.selectOnce(req, sel, r, rnd)
		switch {
		case err == nil && !d.Queued:
			return d, nil
		case err == nil:
			if queued == nil {
				queued = &d
			}
		case errors.Is(err, ErrUnavailable):
			if unavailErr == nil {
				unavailErr = err
			}
		default:
			if firstErr == nil {
				firstErr = err
			}
		}
	}
	switch {
	case queued != nil:
		return *queued, nil
	case unavailErr != nil:
		return Decision{}, unavailErr
	default:
		return Decision{}, firstErr
	}
}

// compileSelectors returns the primary selector followed by the fallbacks.
func compileSelectors(st Strategy) ([]LabelSelector, error) {
	out := make([]LabelSelector, 0, 1+len(st.FallbackLabelSelectors))
	for _, m := range append([]map[string]string{st.LabelSelector}, st.FallbackLabelSelectors...) {
		sel, err := ParseLabelSelector(m)
		if err != nil {
			return nil, err
		}
		out = append(out, sel)
	}
	return out, nil
}

// feasible is the filter: Total covers the demand and the labels match.
func (n *node) feasible(req []demand, sel LabelSelector) bool {
	return fits(n.total, req) && sel.Matches(n.labels)
}

// selectOnce runs the strategy under one label selector.
func (c *cluster) selectOnce(req []demand, sel LabelSelector, r Request, rnd *rand.Rand) (Decision, error) {
	switch r.Strategy.Kind {
	case Spread:
		return c.spread(req, sel, r.SpreadIndex)
	case NodeAffinity:
		return c.affinity(req, sel, r, rnd)
	default:
		pref := r.Preferred
		if loc := c.localityNode(req, sel, r.ArgBytes); loc != "" {
			pref = loc
		}
		d, err := c.hybrid(req, sel, pref, rnd)
		d.SpreadNext = r.SpreadIndex
		return d, err
	}
}

// localityNode is the node holding the most argument bytes, if it is in the
// snapshot, feasible and schedulable; "" otherwise.
func (c *cluster) localityNode(req []demand, sel LabelSelector, argBytes map[string]int64) string {
	best, bestBytes := "", int64(0)
	for id, b := range argBytes {
		if b > bestBytes || (b == bestBytes && b > 0 && id < best) {
			best, bestBytes = id, b
		}
	}
	if best == "" {
		return ""
	}
	n := c.byID[best]
	if n == nil || !n.schedulable || !n.feasible(req, sel) {
		return ""
	}
	return best
}

// noCandidate is the error when no feasible schedulable node exists.
func noCandidate(anyFeasible bool, req []demand, sel LabelSelector) error {
	if anyFeasible {
		return fmt.Errorf("%w: every node that could fit %s is unschedulable", ErrUnavailable, describe(req, sel))
	}
	return fmt.Errorf("%w: no node can ever fit %s", ErrInfeasible, describe(req, sel))
}

func describe(req []demand, sel LabelSelector) string {
	m := make(map[string]float64, len(req))
	for _, d := range req {
		m[d.name] = float64(d.amt) / fixedScale
	}
	if len(sel) == 0 {
		return fmt.Sprintf("%v", m)
	}
	return fmt.Sprintf("%v with labels %v", m, sel.Map())
}

// hybrid is Ray's default policy over the whole cluster.
func (c *cluster) hybrid(req []demand, sel LabelSelector, preferred string, rnd *rand.Rand) (Decision, error) {
	var availNow, full []*node
	anyFeasible := false
	prefNow, prefFull := false, false
	for _, n := range c.nodes {
		if !n.feasible(req, sel) {
			continue
		}
		anyFeasible = true
		if !n.schedulable {
			continue
		}
		if fits(n.avail, req) {
			availNow = append(availNow, n)
			prefNow = prefNow || n.id == preferred
		} else {
			full = append(full, n)
			prefFull = prefFull || n.id == preferred
		}
	}
	k := topK(len(c.nodes))
	switch {
	case len(availNow) > 0:
		return Decision{NodeID: bestNode(availNow, prefNow, c.byID[preferred], k, rnd)}, nil
	case len(full) > 0:
		return Decision{NodeID: bestNode(full, prefFull, c.byID[preferred], k, rnd), Queued: true}, nil
	}
	return Decision{}, noCandidate(anyFeasible, req, sel)
}

// bestNode orders the group by (score, ID); it returns the preferred node
// when usePref is set and its score is no higher than the group's lowest,
// else a uniform draw among the first k.
func bestNode(group []*node, usePref bool, pref *node, k int, rnd *rand.Rand) string {
	// c.nodes is sorted by ID, so a stable sort by score orders by (score, ID).
	sort.SliceStable(group, func(i, j int) bool { return group[i].score < group[j].score })
	if usePref && pref != nil && pref.score <= group[0].score {
		return pref.id
	}
	k = min(k, len(group))
	i := 0
	if rnd != nil && k > 1 {
		i = rnd.IntN(k)
	}
	return group[i].id
}

// spread is Ray's round-robin spread policy.
func (c *cluster) spread(req []demand, sel LabelSelector, index int) (Decision, error) {
	n := len(c.nodes)
	if n == 0 {
		return Decision{SpreadNext: index}, noCandidate(false, req, sel)
	}
	start := ((index % n) + n) % n
	anyFeasible := false
	for _, needNow := range [...]bool{true, false} {
		for i := range n {
			j := (start + i) % n
			nd := c.nodes[j]
			if !nd.feasible(req, sel) {
				continue
			}
			anyFeasible = true
			if !nd.schedulable || (needNow && !fits(nd.avail, req)) {
				continue
			}
			return Decision{NodeID: nd.id, Queued: !needNow, SpreadNext: (j + 1) % n}, nil
		}
	}
	return Decision{SpreadNext: index}, noCandidate(anyFeasible, req, sel)
}

// affinity is Ray's node-affinity policy.
func (c *cluster) affinity(req []demand, sel LabelSelector, r Request, rnd *rand.Rand) (Decision, error) {
	st := r.Strategy
	keep := func(d Decision, err error) (Decision, error) {
		d.SpreadNext = r.SpreadIndex
		return d, err
	}
	t := c.byID[st.NodeID]
	switch {
	case t == nil:
		if !st.Soft {
			return keep(Decision{}, fmt.Errorf("%w: %q", ErrNoNode, st.NodeID))
		}
		return keep(c.hybrid(req, sel, r.Preferred, rnd))
	case !t.feasible(req, sel):
		if !st.Soft {
			return keep(Decision{}, fmt.Errorf("%w: node %q can never fit %s", ErrInfeasible, t.id, describe(req, sel)))
		}
		return keep(c.hybrid(req, sel, r.Preferred, rnd))
	case !t.schedulable:
		if !st.Soft {
			return keep(Decision{}, fmt.Errorf("%w: node %q is unschedulable", ErrUnavailable, t.id))
		}
		return keep(c.hybrid(req, sel, r.Preferred, rnd))
	case fits(t.avail, req):
		return keep(Decision{NodeID: t.id}, nil)
	case !st.Soft:
		return keep(Decision{NodeID: t.id, Queued: true}, nil)
	}
	return keep(c.hybrid(req, sel, t.id, rnd))
}

// Package scheduler is the pure cluster scheduling policy the head uses to
// choose a node for a task or actor, and nodes for placement-group bundles.
//
// It follows Ray's raylet scheduling semantics and is organised like Nomad's
// scheduler: every call works on an immutable Snapshot and runs
// filter → score → select. The policy does no I/O, reads no clock and uses no
// global random source; the only randomness comes from the *rand.Rand passed
// in, so a fixed seed gives a fixed answer.
//
// # Feasibility
//
// A node is feasible for a request when its Total covers every requested
// resource (requests of zero are ignored; a resource a node does not list
// counts as 0) and its labels match the label selector. Quantities are
// compared in fixed point with 1/10000 resolution, as in Ray, so that adding
// up fractional bundles such as 0.1 CPU never drifts. Nodes that are not
// Schedulable (suspect, unreachable, draining) still count as feasible, so
// work is not called infeasible while a node is briefly away, but they never
// get new work. The outcomes are:
//
//   - a Decision with Queued false: the node has the resources available now;
//   - a Decision with Queued true: the node is feasible and schedulable but is
//     full right now, and the work should wait there;
//   - ErrUnavailable: feasible nodes exist but none is schedulable;
//   - ErrInfeasible: no node in the snapshot could ever run it;
//   - ErrNoNode: hard node affinity to a node that is not in the snapshot;
//   - ErrInvalid: malformed input.
//
// See Select for the task and actor strategies and PlaceBundles for
// placement groups.
package scheduler

import (
	"errors"
	"fmt"
	"math"
	"sort"
)

// Sentinel errors. Returned errors wrap one of these; test with errors.Is.
var (
	// ErrInfeasible means no node in the snapshot, schedulable or not, could
	// ever fit the request (its Totals or labels rule every node out).
	ErrInfeasible = errors.New("scheduler: infeasible")
	// ErrNoNode means hard node affinity names a node that is not in the
	// snapshot (dead or unknown).
	ErrNoNode = errors.New("scheduler: no such node")
	// ErrUnavailable means the request is feasible but cannot be placed now:
	// for Select, every feasible node is unschedulable; for PlaceBundles, the
	// bundles do not fit in what is available now. The caller should wait and
	// retry.
	ErrUnavailable = errors.New("scheduler: unavailable")
	// ErrInvalid means the snapshot or the request is malformed (negative or
	// non-finite amounts, duplicate or empty node ids, a bad label selector, an
	// unknown strategy, no bundles).
	ErrInvalid = errors.New("scheduler: invalid input")
)

// Policy constants, Ray's defaults (ray_config_def.h, scheduling_options.h).
const (
	// SpreadThreshold: a node whose critical resource utilisation is below it
	// scores 0, so all lightly loaded nodes tie.
	SpreadThreshold = 0.5
	// TopKFraction and TopKAbsolute size the hybrid candidate set:
	// k = max(TopKAbsolute, floor(TopKFraction × number of nodes)).
	TopKFraction = 0.2
	TopKAbsolute = 1
)

// Well-known resource names used by the scoring functions.
const (
	ResourceCPU               = "CPU"
	ResourceGPU               = "GPU"
	ResourceMemory            = "memory"
	ResourceObjectStoreMemory = "object_store_memory"
)

// Node is one node of the cluster as the head sees it.
type Node struct {
	ID        string             // hex node id
	Total     map[string]float64 // e.g. CPU, GPU, memory, "accelerator_type:H100", custom
	Available map[string]float64
	Labels    map[string]string // e.g. "ray.io/availability-region": "us-west1"
	// Schedulable is false for nodes that are suspect/unreachable/draining:
	// they count for feasibility (so work is not declared infeasible because
	// a node is briefly away) but never get new work.
	Schedulable bool
}

// Snapshot is the cluster state one decision is made against. The policy
// never modifies it.
type Snapshot struct{ Nodes []Node }

// Kind is a task/actor scheduling strategy.
type Kind int

const (
	// Default is Ray's hybrid policy: pack onto the preferred node while it is
	// lightly used, otherwise pick randomly among the least utilised nodes.
	Default Kind = iota
	// Spread places work round robin over the nodes.
	Spread
	// NodeAffinity targets one node, hard or soft.
	NodeAffinity
)

func (k Kind) String() string {
	switch k {
	case Default:
		return "DEFAULT"
	case Spread:
		return "SPREAD"
	case NodeAffinity:
		return "NODE_AFFINITY"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Strategy is how a request chooses among feasible nodes.
type Strategy struct {
	Kind   Kind
	NodeID string // NodeAffinity target
	// Soft NodeAffinity falls back to the hybrid policy when the target is
	// not in the snapshot, infeasible, unschedulable or full right now.
	Soft bool
	// LabelSelector is a hard constraint every chosen node must match. Values
	// use Ray's syntax: "v", "!v", "in(a,b)", "!in(a,b)".
	LabelSelector map[string]string
	// FallbackLabelSelectors (Ray's fallback_strategy) are tried in order
	// after LabelSelector. The first selector under which some node can take
	// the work now wins; if none can, the work queues under the first
	// selector that has a feasible schedulable node.
	FallbackLabelSelectors []map[string]string
}

// Request is one task or actor to place.
type Request struct {
	Resources map[string]float64
	Strategy  Strategy
	// Preferred is the node to favour first in the hybrid policy (Ray's
	// "local node": the submitter's node), "" for none.
	Preferred string
	// ArgBytes maps node id -> bytes of this task's arguments stored there
	// (data locality; Default strategy only).
	ArgBytes map[string]int64
	// SpreadIndex is the round-robin position for the Spread strategy: the
	// search starts at this index into the snapshot's nodes sorted by ID
	// (taken modulo the node count). Pass the previous Decision.SpreadNext.
	SpreadIndex int
}

// Decision is where a request goes.
type Decision struct {
	NodeID string
	// Queued is true when the chosen node is feasible but lacks available
	// resources now (the task should wait there / be retried), false when it
	// fits right now.
	Queued bool
	// SpreadNext is the SpreadIndex to pass with the next Spread request: one
	// past the chosen node for Spread, Request.SpreadIndex unchanged for
	// other strategies.
	SpreadNext int
}

// BundleStrategy is a placement-group strategy.
type BundleStrategy int

const (
	// Pack puts all bundles on one node if one can take them all, else on
	// as few nodes as the greedy packing finds.
	Pack BundleStrategy = iota
	// BundleSpread puts bundles on distinct nodes where possible and reuses
	// nodes otherwise.
	BundleSpread
	// StrictPack puts all bundles on one node or fails.
	StrictPack
	// StrictSpread puts every bundle on a distinct node or fails.
	StrictSpread
)

func (b BundleStrategy) String() string {
	switch b {
	case Pack:
		return "PACK"
	case BundleSpread:
		return "SPREAD"
	case StrictPack:
		return "STRICT_PACK"
	case StrictSpread:
		return "STRICT_SPREAD"
	}
	return fmt.Sprintf("BundleStrategy(%d)", int(b))
}

// fixedScale is the fixed-point resolution for resource quantities (Ray's
// FixedPoint uses four decimal places).
const fixedScale = 10000

// maxAmount bounds converted quantities so sums of a few cannot overflow.
const maxAmount = int64(1) << 60

// amount is a resource quantity in 1/fixedScale units.
type amount = int64

func toAmount(v float64) amount {
	f := math.Round(v * fixedScale)
	if f >= float64(maxAmount) {
		return maxAmount
	}
	if f <= -float64(maxAmount) {
		return -maxAmount
	}
	return amount(f)
}

// demand is one requested resource, amount > 0.
type demand struct {
	name string
	amt  amount
}

// compileDemand validates a resource request and returns its non-zero entries
// sorted by name.
func compileDemand(res map[string]float64) ([]demand, error) {
	out := make([]demand, 0, len(res))
	for name, v := range res {
		if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
			return nil, fmt.Errorf("%w: resource %q = %v", ErrInvalid, name, v)
		}
		if a := toAmount(v); a > 0 {
			out = append(out, demand{name, a})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out, nil
}

// fits reports whether have covers every demand.
func fits(have map[string]amount, d []demand) bool {
	for _, x := range d {
		if have[x.name] < x.amt {
			return false
		}
	}
	return true
}

// node is the compiled, read-only view of a snapshot Node.
type node struct {
	id          string
	total       map[string]amount
	avail       map[string]amount
	labels      map[string]string
	schedulable bool
	score       float64 // hybrid score: thresholded critical utilisation
}

// cluster is a compiled snapshot: nodes sorted by ID.
type cluster struct {
	nodes []*node
	byID  map[string]*node
}

// compileQuantities checks a node's totals or availability. A negative
// availability is a node oversubscribed for a moment (a worker that was
// blocked in ray.get took its CPU back while another task held it, as Ray
// allows): it has nothing available, which is not an invalid snapshot.
func compileQuantities(id, what string, m map[string]float64) (map[string]amount, error) {
	out := make(map[string]amount, len(m))
	for name, v := range m {
		if v < 0 && what == "available" && !math.IsInf(v, 0) {
			v = 0
		}
		if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
			return nil, fmt.Errorf("%w: node %q %s %q = %v", ErrInvalid, id, what, name, v)
		}
		out[name] = toAmount(v)
	}
	return out, nil
}

func compile(s Snapshot) (*cluster, error) {
	c := &cluster{nodes: make([]*node, 0, len(s.Nodes)), byID: make(map[string]*node, len(s.Nodes))}
	for _, n := range s.Nodes {
		if n.ID == "" {
			return nil, fmt.Errorf("%w: node with empty id", ErrInvalid)
		}
		if _, dup := c.byID[n.ID]; dup {
			return nil, fmt.Errorf("%w: duplicate node id %q", ErrInvalid, n.ID)
		}
		total, err := compileQuantities(n.ID, "total", n.Total)
		if err != nil {
			return nil, err
		}
		avail, err := compileQuantities(n.ID, "available", n.Available)
		if err != nil {
			return nil, err
		}
		cn := &node{
			id: n.ID, total: total, avail: avail, labels: n.Labels,
			schedulable: n.Schedulable,
			score:       hybridScore(criticalUtilization(n.Total, n.Available)),
		}
		c.nodes = append(c.nodes, cn)
		c.byID[n.ID] = cn
	}
	sort.Slice(c.nodes, func(i, j int) bool { return c.nodes[i].id < c.nodes[j].id })
	return c, nil
}

// criticalUtilization is Ray's node load measure: the highest used fraction
// among CPU, memory and object store memory, over those with a non-zero total.
// Other resources (GPU, custom) do not count.
func criticalUtilization(total, avail map[string]float64) float64 {
	highest := 0.0
	for _, r := range [...]string{ResourceCPU, ResourceMemory, ResourceObjectStoreMemory} {
		t := total[r]
		if t <= 0 {
			continue
		}
		if u := 1 - avail[r]/t; u > highest {
			highest = u
		}
	}
	return highest
}

// hybridScore clamps utilisation under SpreadThreshold to 0: lower is better.
func hybridScore(util float64) float64 {
	if util < SpreadThreshold {
		return 0
	}
	return util
}

// topK is the hybrid candidate-set size for a cluster of n nodes.
func topK(n int) int {
	return max(TopKAbsolute, int(float64(n)*TopKFraction))
}

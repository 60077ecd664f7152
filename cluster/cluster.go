// Package cluster is the head's view of its nodes: the GCS node table, the
// placement of tasks and actors on nodes through the scheduler policy, and
// recovery when a node dies (tasks retried elsewhere, actors restarted,
// results of what cannot be retried failed with Ray's error types). It
// implements the front end's Node interface over every member node, the
// head's own raylet and remote providers alike.
package cluster

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"

	"github.com/gray-cluster/gray/gcs"
	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/objectstore"
	"github.com/gray-cluster/gray/rayerr"
	"github.com/gray-cluster/gray/raylet"
	"github.com/gray-cluster/gray/scheduler"
	"github.com/gray-cluster/gray/taskspec"
)

// Sentinel errors.
var (
	ErrUnknownNode  = errors.New("cluster: unknown node")
	ErrUnknownActor = errors.New("cluster: unknown actor")
	ErrNoNodes      = errors.New("cluster: no nodes")
)

// Member is one node as the cluster drives it: the head's raylet, or a
// proxy for a provider's raylet.
type Member interface {
	NodeID() ids.NodeID
	Submit(spec *taskspec.TaskSpec) error
	Cancel(id ids.TaskID, force bool) error
	Total() map[string]float64
	Available() map[string]float64
	WorkerJob(workerID string) (ids.JobID, bool)
	WorkerBlocked(workerID string) func()
	CreateActor(spec *taskspec.ActorSpec) error
	SubmitActorTask(call *taskspec.ActorCall) error
	KillActor(id ids.ActorID, noRestart bool) error
	// ReserveBundles reserves bundles (by index) of a placement group out of
	// the node's available resources, all or none; bundles of the group the
	// node already holds are kept. ReleaseBundles gives all of a group's
	// bundles on the node back (a no-op for a group it does not hold).
	ReserveBundles(pgID string, job ids.JobID, bundles map[int]map[string]float64) error
	ReleaseBundles(pgID string) error
}

// Config configures a cluster.
type Config struct {
	// Store is the head's object store: results of work that cannot be
	// recovered are sealed there as errors.
	Store  *objectstore.Store
	Logger *slog.Logger
	// OnActorDead is told when an actor died for good with its node.
	OnActorDead func(ids.ActorID)
	// OnHolderGone is told about every worker holder of a dead node.
	OnHolderGone func(holder string)
	// Locate reports an object's size and the nodes that hold a copy, for
	// data locality (nil: no locality).
	Locate func(ids.ObjectID) (int64, []ids.NodeID)
	// Warn reaches a job's driver with a warning (infeasible work).
	Warn func(job ids.JobID, msg string)
	// Seed seeds the scheduler's random choices (0: random).
	Seed uint64
	// Nodes and Groups are the durable node and placement group tables the
	// cluster writes through (nil: in memory only); OnActorPlaced is told
	// the node an actor was placed on, with its spec as it is now (for the
	// actor table). See tables.go.
	Nodes         *gcs.NodeTable
	Groups        *gcs.GroupTable
	OnActorPlaced func(spec *taskspec.ActorSpec, node ids.NodeID)
}

type member struct {
	m     Member
	info  gcs.NodeInfo
	local bool
	// hex and labels (with ray.io/node-id) are fixed at registration.
	hex    string
	labels map[string]string
}

// Cluster places work on member nodes.
type Cluster struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	members map[ids.NodeID]*member
	dead    map[ids.NodeID]gcs.NodeInfo
	head    ids.NodeID
	actors  map[ids.ActorID]*placedActor
	rnd     *rand.Rand
	spread  int
	pending []pendingWork
	// changed is closed and replaced whenever the node table changes.
	changed chan struct{}
	// groups is the placement group table; placing serializes placing and
	// removing groups (it is never taken while mu is held).
	groups  map[string]*group
	placing sync.Mutex
	// poke asks Run to retry pending groups and work now.
	poke chan struct{}
}

type placedActor struct {
	spec   *taskspec.ActorSpec
	node   ids.NodeID
	placed bool
	dead   bool
	// queued are calls made before the actor had a node.
	queued []*taskspec.ActorCall
}

func (a *placedActor) takeQueued() []*taskspec.ActorCall {
	if a == nil {
		return nil
	}
	q := a.queued
	a.queued = nil
	return q
}

// New returns an empty cluster.
func New(cfg Config) *Cluster {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	seed := cfg.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	return &Cluster{
		cfg: cfg, log: cfg.Logger.With("component", "cluster"),
		members: map[ids.NodeID]*member{}, dead: map[ids.NodeID]gcs.NodeInfo{},
		actors: map[ids.ActorID]*placedActor{}, rnd: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		changed: make(chan struct{}), groups: map[string]*group{}, poke: make(chan struct{}, 1),
	}
}

// AddLocal registers the head's own raylet.
func (c *Cluster) AddLocal(m Member, info gcs.NodeInfo) {
	info.IsHead = true
	c.add(m, info, true)
}

// Add registers (or re-registers after a reconnect) a provider node.
func (c *Cluster) Add(m Member, info gcs.NodeInfo) {
	c.add(m, info, false)
}

func (c *Cluster) add(m Member, info gcs.NodeInfo, local bool) {
	info.ID = m.NodeID()
	info.State = gcs.NodeAlive
	labels := maps.Clone(info.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	labels["ray.io/node-id"] = info.ID.Hex()
	c.mu.Lock()
	_, again := c.members[info.ID]
	_, wasDead := c.dead[info.ID]
	c.members[info.ID] = &member{m: m, info: info, local: local, hex: info.ID.Hex(), labels: labels}
	delete(c.dead, info.ID)
	if local {
		c.head = info.ID
	}
	c.notifyLocked()
	c.mu.Unlock()
	if !local {
		info.Total = m.Total()
		c.storeNode(info)
	}
	switch {
	case again:
		go c.reassertGroups(info.ID)
	case wasDead:
		go c.releaseStaleGroups(info.ID)
	}
	c.log.Info("node registered", "node", info.ID.Hex(), "ip", info.IP, "resources", info.Total, "labels", info.Labels)
}

// SetState marks a node alive or suspect (a suspect node gets no new work).
func (c *Cluster) SetState(id ids.NodeID, st gcs.NodeState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if m := c.members[id]; m != nil && m.info.State != st {
		m.info.State = st
		c.log.Info("node state", "node", id.Hex(), "state", st)
		c.notifyLocked()
	}
}

func (c *Cluster) notifyLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// Changed returns a channel closed at the next node table change.
func (c *Cluster) Changed() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.changed
}

// NodeID is the head node's id.
func (c *Cluster) NodeID() ids.NodeID {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.head
}

// Nodes lists every node the GCS knows, dead ones included.
func (c *Cluster) Nodes() []gcs.NodeInfo {
	c.mu.Lock()
	ms := slices.Collect(maps.Values(c.members))
	infos := make([]gcs.NodeInfo, len(ms))
	for i, m := range ms {
		infos[i] = m.info
	}
	out := slices.Collect(maps.Values(c.dead))
	c.mu.Unlock()
	for i, m := range ms {
		info := infos[i]
		info.Total = m.m.Total()
		info.Available = m.m.Available()
		out = append(out, info)
	}
	slices.SortFunc(out, func(a, b gcs.NodeInfo) int {
		if a.IsHead != b.IsHead {
			if a.IsHead {
				return -1
			}
			return 1
		}
		return strings.Compare(a.ID.Hex(), b.ID.Hex())
	})
	return out
}

// Total sums the resources of the live nodes.
func (c *Cluster) Total() map[string]float64 { return c.sum(Member.Total) }

// Available sums what the live nodes have free.
func (c *Cluster) Available() map[string]float64 { return c.sum(Member.Available) }

func (c *Cluster) sum(f func(Member) map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for _, m := range c.live() {
		for k, v := range f(m.m) {
			out[k] += v
		}
	}
	return out
}

func (c *Cluster) size() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.members)
}

func (c *Cluster) live() []*member {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Collect(maps.Values(c.members))
}

// memberOfWorker finds the node a worker runs on from its id's node prefix.
func (c *Cluster) memberOfWorker(workerID string) *member {
	prefix, _, ok := strings.Cut(workerID, "-")
	if !ok || len(prefix) != 8 {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, m := range c.members {
		if strings.HasPrefix(id.Hex(), prefix) {
			return m
		}
	}
	return nil
}

// WorkerNode reports the node a worker runs on.
func (c *Cluster) WorkerNode(workerID string) (ids.NodeID, bool) {
	if m := c.memberOfWorker(workerID); m != nil {
		return m.info.ID, true
	}
	return ids.NodeID{}, false
}

// WorkerJob reports the job of the task a worker runs.
func (c *Cluster) WorkerJob(workerID string) (ids.JobID, bool) {
	if m := c.memberOfWorker(workerID); m != nil {
		return m.m.WorkerJob(workerID)
	}
	return ids.JobID{}, false
}

// WorkerBlocked lends a blocked worker's CPU back to its node.
func (c *Cluster) WorkerBlocked(workerID string) func() {
	if m := c.memberOfWorker(workerID); m != nil {
		return m.m.WorkerBlocked(workerID)
	}
	return func() {}
}

// snapshot builds the scheduler's view of the live nodes.
// sampleAbove is the cluster size from which the default and spread
// policies first look at a random sample of sampleSize nodes (plus the
// preferred and data-holding ones), "power of d choices", and look at every
// node only when the sample has no node that fits now. Placement then costs
// the same with 100 nodes or 10,000.
const (
	sampleAbove = 128
	sampleSize  = 64
)

// snapshot builds the scheduler's view of the live nodes, or of a sample of
// them plus the must-see ones.
func (c *Cluster) snapshot(sample bool, mustSee map[string]bool) (scheduler.Snapshot, map[string]*member) {
	c.mu.Lock()
	ms := make([]*member, 0, min(len(c.members), sampleSize+len(mustSee)))
	if sample && len(c.members) > sampleAbove {
		for _, m := range c.members { // map order is random enough to sample
			if len(ms) < sampleSize || mustSee[m.hex] {
				ms = append(ms, m)
			}
		}
	} else {
		for _, m := range c.members {
			ms = append(ms, m)
		}
	}
	alive := make([]bool, len(ms))
	for i, m := range ms {
		alive[i] = m.info.State == gcs.NodeAlive
	}
	c.mu.Unlock()
	byHex := make(map[string]*member, len(ms))
	snap := scheduler.Snapshot{Nodes: make([]scheduler.Node, 0, len(ms))}
	for i, m := range ms {
		byHex[m.hex] = m
		snap.Nodes = append(snap.Nodes, scheduler.Node{
			ID: m.hex, Total: m.m.Total(), Available: m.m.Available(), Labels: m.labels, Schedulable: alive[i],
		})
	}
	slices.SortFunc(snap.Nodes, func(a, b scheduler.Node) int { return strings.Compare(a.ID, b.ID) })
	return snap, byHex
}

// place picks a member for resources under a strategy.
// LocalityMinBytes is the least argument size that steers placement.
const LocalityMinBytes = 1 << 20

// argBytes maps node id (hex) to the bytes of deps it holds.
func (c *Cluster) argBytes(deps []ids.ObjectID) map[string]int64 {
	if c.cfg.Locate == nil || len(deps) == 0 {
		return nil
	}
	var out map[string]int64
	var total int64
	for _, d := range deps {
		size, nodes := c.cfg.Locate(d)
		total += size
		for _, n := range nodes {
			if out == nil {
				out = map[string]int64{}
			}
			out[n.Hex()] += size
		}
	}
	if total < LocalityMinBytes {
		return nil
	}
	return out
}

func (c *Cluster) place(res map[string]float64, s taskspec.Scheduling, pg string, bundle int, deps []ids.ObjectID) (*member, error) {
	if pg != "" {
		// Work in a placement group goes to the node holding its bundle.
		return c.memberForBundle(pg, bundle, res)
	}
	req := scheduler.Request{Resources: res, Strategy: toStrategy(s), ArgBytes: c.argBytes(deps)}
	mustSee := map[string]bool{}
	c.mu.Lock()
	if c.head != (ids.NodeID{}) {
		req.Preferred = c.head.Hex()
		mustSee[req.Preferred] = true
	}
	c.mu.Unlock()
	for n := range req.ArgBytes {
		mustSee[n] = true
	}
	sample := s.Kind != "NODE_AFFINITY" && len(s.Labels) == 0
	snap, byHex := c.snapshot(sample, mustSee)
	if len(snap.Nodes) == 0 {
		return nil, ErrNoNodes
	}
	c.mu.Lock()
	req.SpreadIndex = c.spread
	d, err := scheduler.Select(snap, req, c.rnd)
	c.mu.Unlock()
	if sample && (err != nil || d.Queued) && len(byHex) < c.size() {
		// Nothing in the sample fits now: look at every node.
		snap, byHex = c.snapshot(false, nil)
		c.mu.Lock()
		d, err = scheduler.Select(snap, req, c.rnd)
		c.mu.Unlock()
	}
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.spread = d.SpreadNext
	c.mu.Unlock()
	m := byHex[d.NodeID]
	if m == nil {
		return nil, fmt.Errorf("%w: %s", ErrUnknownNode, d.NodeID)
	}
	return m, nil
}

func toStrategy(s taskspec.Scheduling) scheduler.Strategy {
	st := scheduler.Strategy{NodeID: s.NodeID, Soft: s.Soft, LabelSelector: s.Labels}
	switch s.Kind {
	case "SPREAD":
		st.Kind = scheduler.Spread
	case "NODE_AFFINITY":
		st.Kind = scheduler.NodeAffinity
	default:
		st.Kind = scheduler.Default
	}
	return st
}

// Submit places a task on a node; a task no node can take now waits at the
// head until one can.
func (c *Cluster) Submit(spec *taskspec.TaskSpec) error {
	err := c.trySubmit(spec)
	switch {
	case err == nil:
	case errors.Is(err, scheduler.ErrNoNode) || errors.Is(err, scheduler.ErrInvalid):
		// Hard affinity to a node that is not (or no longer) in the
		// cluster, or a malformed strategy: Ray fails the task.
		c.unschedulable(spec, err)
	default:
		c.park(pendingWork{task: spec}, err)
	}
	return nil
}

func (c *Cluster) trySubmit(spec *taskspec.TaskSpec) error {
	m, err := c.place(spec.Resources, spec.Scheduling, spec.PlacementGroup, spec.BundleIndex, spec.Deps)
	if err != nil {
		return err
	}
	return m.m.Submit(spec)
}

// Cancel asks every node to cancel the task (only the one running it knows it).
func (c *Cluster) Cancel(id ids.TaskID, force bool) error {
	if w, ok := c.unpark(func(w pendingWork) bool { return w.task != nil && w.task.TaskID == id }); ok {
		c.fail(w.task.ReturnIDs(), c.errorValue(rayerr.TaskCancelled()))
		return nil
	}
	var last error = raylet.ErrUnknownTask
	for _, m := range c.live() {
		if err := m.m.Cancel(id, force); err == nil {
			last = nil
		}
	}
	return last
}

// CreateActor places an actor on a node; one no node can take now waits at
// the head until one can.
func (c *Cluster) CreateActor(spec *taskspec.ActorSpec) error {
	c.mu.Lock()
	if a := c.actors[spec.ActorID]; a != nil {
		// A restart: calls queued meanwhile stay queued, in order.
		a.spec, a.placed, a.dead = spec, false, false
	} else {
		c.actors[spec.ActorID] = &placedActor{spec: spec}
	}
	c.mu.Unlock()
	err := c.tryCreateActor(spec)
	switch {
	case err == nil:
	case errors.Is(err, scheduler.ErrNoNode) || errors.Is(err, scheduler.ErrInvalid):
		c.log.Warn("actor cannot be scheduled", "actor", spec.ActorID.Hex(), "err", err)
		c.actorGone(spec.ActorID)
	default:
		c.actorPlaced(spec, ids.NodeID{}) // known, waiting for a node
		c.park(pendingWork{actor: spec}, err)
	}
	return nil
}

func (c *Cluster) tryCreateActor(spec *taskspec.ActorSpec) error {
	m, err := c.place(spec.Resources, spec.Scheduling, spec.PlacementGroup, spec.BundleIndex, spec.Deps)
	if err != nil {
		return err
	}
	c.mu.Lock()
	if a := c.actors[spec.ActorID]; a != nil {
		a.node = m.info.ID
	}
	c.mu.Unlock()
	if err := m.m.CreateActor(spec); err != nil {
		return err
	}
	c.actorPlaced(spec, m.info.ID)
	// Calls made while it had no node go first, in order; the actor counts
	// as placed only once none are left, so later calls queue behind them.
	for {
		c.mu.Lock()
		a := c.actors[spec.ActorID]
		calls := a.takeQueued()
		if len(calls) == 0 {
			if a != nil {
				a.placed = true
			}
			c.mu.Unlock()
			return nil
		}
		c.mu.Unlock()
		for _, call := range calls {
			if err := m.m.SubmitActorTask(call); err != nil {
				c.log.Warn("queued actor call", "actor", spec.ActorID.Hex(), "err", err)
			}
		}
	}
}

func (c *Cluster) actorMember(id ids.ActorID) (*member, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	a := c.actors[id]
	if a == nil {
		return nil, fmt.Errorf("%w: %s", ErrUnknownActor, id.Hex())
	}
	m := c.members[a.node]
	if m == nil {
		return nil, fmt.Errorf("%w: %s", ErrUnknownNode, a.node.Hex())
	}
	return m, nil
}

// SubmitActorTask sends a call to the actor's node (or keeps it until the
// actor has one).
func (c *Cluster) SubmitActorTask(call *taskspec.ActorCall) error {
	c.mu.Lock()
	a := c.actors[call.ActorID]
	if a == nil {
		c.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrUnknownActor, call.ActorID.Hex())
	}
	if a.dead {
		c.mu.Unlock()
		c.fail(call.ReturnIDs(), c.errorValue(rayerr.ActorDied()))
		return nil
	}
	if !a.placed {
		a.queued = append(a.queued, call)
		c.mu.Unlock()
		return nil
	}
	m := c.members[a.node]
	c.mu.Unlock()
	if m == nil {
		// Its node died and it was not restarted.
		c.fail(call.ReturnIDs(), c.errorValue(rayerr.ActorDied()))
		return nil
	}
	return m.m.SubmitActorTask(call)
}

// KillActor kills an actor on its node.
func (c *Cluster) KillActor(id ids.ActorID, noRestart bool) error {
	if _, ok := c.unpark(func(w pendingWork) bool { return w.actor != nil && w.actor.ActorID == id }); ok {
		c.actorGone(id)
		return nil
	}
	m, err := c.actorMember(id)
	if err != nil {
		return err
	}
	return m.m.KillActor(id, noRestart)
}

// ActorNode reports where an actor runs.
func (c *Cluster) ActorNode(id ids.ActorID) (ids.NodeID, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if a := c.actors[id]; a != nil {
		return a.node, true
	}
	return ids.NodeID{}, false
}

// unpark removes the first parked work that match selects.
func (c *Cluster) unpark(match func(pendingWork) bool) (pendingWork, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, w := range c.pending {
		if match(w) {
			c.pending = slices.Delete(c.pending, i, i+1)
			return w, true
		}
	}
	return pendingWork{}, false
}

package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/gray-cluster/gray/gcs"
	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/rayerr"
	"github.com/gray-cluster/gray/scheduler"
	"github.com/gray-cluster/gray/taskspec"
)

// Placement group states, named as in Ray's placement group table.
const (
	PGPending      = "PENDING"
	PGCreated      = "CREATED"
	PGRescheduling = "RESCHEDULING"
	PGRemoved      = "REMOVED"
)

// Placement group errors.
var (
	ErrUnknownGroup = errors.New("cluster: placement group does not exist")
	ErrGroupName    = errors.New("cluster: placement group name is already in use")
	// ErrGroupRemoved refuses work for a group that was removed.
	ErrGroupRemoved = errors.New("cluster: placement group was removed")
	// errGroupPending parks work whose bundle has no node yet.
	errGroupPending = errors.New("cluster: placement group bundle not placed yet")
)

// group is one placement group in the head's table. Its bundles are
// reserved on the nodes the scheduler's PlaceBundles chose; nodes[i] is
// the node holding bundle i (zero while it has none).
type group struct {
	id       string // hex of Ray's 18-byte PlacementGroupID
	name     string
	strategy string
	bst      scheduler.BundleStrategy
	job      ids.JobID
	detached bool
	bundles  []map[string]float64
	nodes    []ids.NodeID
	state    string
	// ready is closed once the group was first created; gone when removed.
	ready, gone chan struct{}
	warned      bool
	next        int // round robin over bundles for bundle index -1
}

func (g *group) placed(i int) bool { return g.nodes[i] != ids.NodeID{} }

func (g *group) complete() bool {
	for i := range g.nodes {
		if !g.placed(i) {
			return false
		}
	}
	return true
}

func bundleStrategy(s string) (scheduler.BundleStrategy, error) {
	switch s {
	case "", "PACK":
		return scheduler.Pack, nil
	case "SPREAD":
		return scheduler.BundleSpread, nil
	case "STRICT_PACK":
		return scheduler.StrictPack, nil
	case "STRICT_SPREAD":
		return scheduler.StrictSpread, nil
	}
	return 0, fmt.Errorf("%w: placement group strategy %q", scheduler.ErrInvalid, s)
}

func newGroupID(job ids.JobID) string {
	var b [18]byte
	_, _ = rand.Read(b[:14])
	copy(b[14:], job[:])
	return hex.EncodeToString(b[:])
}

// CreatePlacementGroup adds a group to the table and places it now if it
// can; otherwise it stays pending and is placed when nodes or resources
// change. It returns the group's hex id.
func (c *Cluster) CreatePlacementGroup(job ids.JobID, name, strategy string, detached bool, bundles []map[string]float64) (string, error) {
	bst, err := bundleStrategy(strategy)
	if err != nil {
		return "", err
	}
	if len(bundles) == 0 {
		return "", fmt.Errorf("%w: placement group without bundles", scheduler.ErrInvalid)
	}
	if strategy == "" {
		strategy = "PACK"
	}
	g := &group{
		id: newGroupID(job), name: name, strategy: strategy, bst: bst, job: job, detached: detached,
		bundles: bundles, nodes: make([]ids.NodeID, len(bundles)), state: PGPending,
		ready: make(chan struct{}), gone: make(chan struct{}),
	}
	c.mu.Lock()
	if name != "" {
		for _, o := range c.groups {
			if o.name == name && o.state != PGRemoved {
				c.mu.Unlock()
				return "", fmt.Errorf("%w: %q", ErrGroupName, name)
			}
		}
	}
	if c.groups == nil {
		c.groups = map[string]*group{}
	}
	c.groups[g.id] = g
	c.mu.Unlock()
	c.storeGroup(g)
	c.placeGroup(g)
	return g.id, nil
}

// placeGroup places the bundles of g that have no node, reserving them on
// the nodes PlaceBundles picks; if a node refuses, everything this attempt
// and the group's other bundles on the nodes involved are released and the
// group stays pending.
func (c *Cluster) placeGroup(g *group) {
	c.placing.Lock()
	defer c.placing.Unlock()
	c.mu.Lock()
	if g.state == PGRemoved || g.complete() {
		c.mu.Unlock()
		return
	}
	var missing []int
	kept := map[string]bool{}
	for i := range g.bundles {
		if g.placed(i) {
			kept[g.nodes[i].Hex()] = true
		} else {
			missing = append(missing, i)
		}
	}
	c.mu.Unlock()
	snap, byHex := c.snapshot(false, nil)
	if g.bst == scheduler.StrictSpread {
		for i := range snap.Nodes {
			if kept[snap.Nodes[i].ID] {
				snap.Nodes[i].Schedulable = false
			}
		}
	}
	want := make([]map[string]float64, len(missing))
	for j, i := range missing {
		want[j] = g.bundles[i]
	}
	c.mu.Lock()
	at, err := scheduler.PlaceBundles(snap, want, g.bst, c.rnd)
	c.mu.Unlock()
	if err != nil {
		c.groupWaits(g, err)
		return
	}
	perNode := map[string]map[int]map[string]float64{}
	for j, i := range missing {
		if perNode[at[j]] == nil {
			perNode[at[j]] = map[int]map[string]float64{}
		}
		perNode[at[j]][i] = g.bundles[i]
	}
	var done []*member
	for _, hexID := range slices.Sorted(maps.Keys(perNode)) {
		m := byHex[hexID]
		if err = m.m.ReserveBundles(g.id, g.job, perNode[hexID]); err != nil {
			c.log.Info("node refused placement group bundles; rolling back", "pg", g.id, "node", hexID, "err", err)
			c.rollback(g, append(done, m))
			return
		}
		done = append(done, m)
	}
	c.mu.Lock()
	for hexID, bs := range perNode {
		id := byHex[hexID].info.ID
		if c.members[id] == nil {
			continue // it died meanwhile: those bundles are placed again
		}
		for i := range bs {
			g.nodes[i] = id
		}
	}
	if !g.complete() {
		c.mu.Unlock()
		c.storeGroup(g)
		c.Poke()
		return
	}
	first := g.state == PGPending
	g.state = PGCreated
	if first {
		close(g.ready)
	}
	c.mu.Unlock()
	c.storeGroup(g)
	c.log.Info("placement group created", "pg", g.id, "strategy", g.strategy, "nodes", perNode)
	c.Poke()
}

// rollback releases g's bundles on ms and forgets every bundle of g they
// held.
func (c *Cluster) rollback(g *group, ms []*member) {
	for _, m := range ms {
		if err := m.m.ReleaseBundles(g.id); err != nil {
			c.log.Warn("release bundles", "pg", g.id, "node", m.hex, "err", err)
		}
		c.mu.Lock()
		for i, n := range g.nodes {
			if n == m.info.ID {
				g.nodes[i] = ids.NodeID{}
			}
		}
		c.mu.Unlock()
	}
	c.storeGroup(g)
}

// groupWaits records why a group stays pending (warning once when no
// node could ever hold it).
func (c *Cluster) groupWaits(g *group, err error) {
	c.mu.Lock()
	warn := errors.Is(err, scheduler.ErrInfeasible) && !g.warned
	if warn {
		g.warned = true
	}
	c.mu.Unlock()
	if warn {
		msg := fmt.Sprintf("Warning: placement group %s (%s, bundles %v) cannot be created: %v. It stays pending until nodes that can hold it join.", g.id, g.strategy, g.bundles, err)
		c.log.Warn(msg)
		if c.cfg.Warn != nil {
			c.cfg.Warn(g.job, msg)
		}
		return
	}
	c.log.Debug("placement group waits", "pg", g.id, "err", err)
}

// RemovePlacementGroup releases a group's bundles on every node.
func (c *Cluster) RemovePlacementGroup(id string) error {
	c.placing.Lock()
	c.mu.Lock()
	g := c.groups[id]
	if g == nil || g.state == PGRemoved {
		c.mu.Unlock()
		c.placing.Unlock()
		if g == nil {
			return fmt.Errorf("%w: %s", ErrUnknownGroup, id)
		}
		return nil
	}
	g.state = PGRemoved
	close(g.gone)
	var ms []*member
	for _, n := range g.nodes {
		if m := c.members[n]; m != nil && !slices.Contains(ms, m) {
			ms = append(ms, m)
		}
	}
	clear(g.nodes)
	var actors []ids.ActorID
	for aid, a := range c.actors {
		if a.spec != nil && a.spec.PlacementGroup == id && !a.dead {
			actors = append(actors, aid)
		}
	}
	c.mu.Unlock()
	for _, m := range ms {
		if err := m.m.ReleaseBundles(id); err != nil {
			c.log.Warn("release bundles", "pg", id, "node", m.hex, "err", err)
		}
	}
	c.storeGroup(g)
	c.placing.Unlock()
	// Like Ray, the group's actors die with it (its nodes fail the tasks
	// still queued in it; running ones finish).
	for _, aid := range actors {
		if err := c.KillActor(aid, true); err != nil {
			c.log.Warn("kill actor of removed placement group", "actor", aid.Hex(), "err", err)
		}
	}
	c.log.Info("placement group removed", "pg", id)
	c.Poke()
	return nil
}

// retryGroups places the groups that are not complete.
func (c *Cluster) retryGroups() {
	c.mu.Lock()
	var todo []*group
	for _, g := range c.groups {
		if g.state != PGRemoved && !g.complete() {
			todo = append(todo, g)
		}
	}
	c.mu.Unlock()
	for _, g := range todo {
		c.placeGroup(g)
	}
}

// groupsLostNode forgets the bundles a dead node held; their groups are
// rescheduling until the bundles are placed again.
func (c *Cluster) groupsLostNode(id ids.NodeID) {
	var changed []*group
	defer func() {
		for _, g := range changed {
			c.storeGroup(g)
		}
	}()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, g := range c.groups {
		lost := false
		for i, n := range g.nodes {
			if n == id {
				g.nodes[i], lost = ids.NodeID{}, true
			}
		}
		if lost {
			changed = append(changed, g)
		}
		if lost && g.state == PGCreated {
			g.state = PGRescheduling
			c.log.Warn("placement group lost bundles with a dead node; rescheduling", "pg", g.id, "node", id.Hex())
		}
	}
}

// memberForBundle is the node that holds bundle index of group pg (-1: a
// bundle that can hold res, taken in turn).
func (c *Cluster) memberForBundle(pg string, index int, res map[string]float64) (*member, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	g := c.groups[pg]
	switch {
	case g == nil:
		return nil, fmt.Errorf("%w: %w %s", scheduler.ErrInvalid, ErrUnknownGroup, pg)
	case g.state == PGRemoved:
		return nil, fmt.Errorf("%w: %w: %s", scheduler.ErrInvalid, ErrGroupRemoved, pg)
	case index >= len(g.bundles):
		return nil, fmt.Errorf("%w: bundle index %d of a placement group with %d bundles", scheduler.ErrInvalid, index, len(g.bundles))
	}
	// A suspect node gets no new work: work for its bundles waits for it
	// (or for the bundles to be placed again when it is dead).
	if index >= 0 {
		if m := c.members[g.nodes[index]]; m != nil && g.placed(index) && m.info.State == gcs.NodeAlive {
			return m, nil
		}
		return nil, errGroupPending
	}
	fitsSome := false
	for k := range g.bundles {
		i := (g.next + k) % len(g.bundles)
		if !covers(g.bundles[i], res) {
			continue
		}
		fitsSome = true
		if m := c.members[g.nodes[i]]; m != nil && g.placed(i) && m.info.State == gcs.NodeAlive {
			g.next = i + 1
			return m, nil
		}
	}
	if !fitsSome {
		return nil, fmt.Errorf("%w: %v fits no bundle of placement group %s", scheduler.ErrInvalid, res, pg)
	}
	return nil, errGroupPending
}

func covers(have, want map[string]float64) bool {
	for k, v := range want {
		if v > 0 && have[k] < v {
			return false
		}
	}
	return true
}

// Poke makes Run retry pending groups and parked work now.
func (c *Cluster) Poke() {
	select {
	case c.poke <- struct{}{}:
	default:
	}
}

// PlacementGroupOp answers a worker's placement group operation (the
// helpers of ray.util.placement_group); it implements
// raylet.PlacementGroups.
func (c *Cluster) PlacementGroupOp(ctx context.Context, job ids.JobID, req taskspec.PGRequest) (any, error) {
	switch req.Op {
	case "pg_create":
		id, err := c.CreatePlacementGroup(job, req.Name, req.Strategy, req.Detached, req.Bundles)
		if err != nil {
			return nil, err
		}
		return map[string]any{"id": id, "bundles": req.Bundles, "name": req.Name}, nil
	case "pg_remove":
		return nil, c.RemovePlacementGroup(req.ID)
	case "pg_get":
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, g := range c.groups {
			if g.name == req.Name && g.state != PGRemoved {
				return map[string]any{"id": g.id, "bundles": g.bundles, "name": g.name}, nil
			}
		}
		return nil, nil
	case "pg_table":
		return c.PlacementGroupTable(req.ID), nil
	case "pg_wait":
		return c.waitGroup(ctx, req.ID, req.Timeout)
	}
	return nil, fmt.Errorf("unknown request %q", req.Op)
}

// waitGroup waits until a group is created (true), or timeout seconds pass
// or it is removed (false); a negative timeout waits until ctx ends.
func (c *Cluster) waitGroup(ctx context.Context, id string, timeout float64) (bool, error) {
	c.mu.Lock()
	g := c.groups[id]
	c.mu.Unlock()
	if g == nil {
		return false, fmt.Errorf("%w: %s", ErrUnknownGroup, id)
	}
	select { // decided already: a zero timeout must not race the timer
	case <-g.gone:
		return false, nil
	default:
	}
	select {
	case <-g.ready:
		return true, nil
	default:
	}
	var tc <-chan time.Time
	if timeout >= 0 {
		t := time.NewTimer(time.Duration(timeout * float64(time.Second)))
		defer t.Stop()
		tc = t.C
	}
	select {
	case <-g.ready:
		return true, nil
	case <-g.gone:
		return false, nil
	case <-tc:
		return false, nil
	case <-ctx.Done():
		return false, ctx.Err()
	}
}

// PlacementGroupTable renders groups the way ray.util.placement_group_table
// does (only the one with id only, unless it is empty).
func (c *Cluster) PlacementGroupTable(only string) map[string]any {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]any{}
	for id, g := range c.groups {
		if only != "" && id != only {
			continue
		}
		bundles, nodes := map[string]any{}, map[string]any{}
		for i, b := range g.bundles {
			bundles[fmt.Sprint(i)] = b
			if g.placed(i) {
				nodes[fmt.Sprint(i)] = g.nodes[i].Hex()
			}
		}
		sched := "PENDING"
		switch g.state {
		case PGCreated:
			sched = "FINISHED"
		case PGRemoved:
			sched = "REMOVED"
		case PGRescheduling:
			sched = "RESCHEDULING"
		}
		out[id] = map[string]any{
			"placement_group_id": id, "name": g.name, "strategy": g.strategy, "state": g.state,
			"bundles": bundles, "bundles_to_node_id": nodes, "is_detached": g.detached,
			"stats": map[string]any{"scheduling_state": sched},
		}
	}
	return out
}

// reassertGroups reserves again the bundles a reconnecting node holds (a
// no-op on a node that kept them; a restarted one had lost them). If the
// node refuses, its bundles are placed again.
func (c *Cluster) reassertGroups(id ids.NodeID) {
	c.placing.Lock()
	defer c.placing.Unlock()
	c.mu.Lock()
	m := c.members[id]
	type held struct {
		g       *group
		bundles map[int]map[string]float64
	}
	var list []held
	for _, g := range c.groups {
		h := held{g: g, bundles: map[int]map[string]float64{}}
		for i, n := range g.nodes {
			if n == id {
				h.bundles[i] = g.bundles[i]
			}
		}
		if len(h.bundles) > 0 {
			list = append(list, h)
		}
	}
	c.mu.Unlock()
	if m == nil {
		return
	}
	for _, h := range list {
		if err := m.m.ReserveBundles(h.g.id, h.g.job, h.bundles); err != nil {
			c.log.Warn("reconnected node refused its placement group bundles; placing them again", "pg", h.g.id, "node", m.hex, "err", err)
			c.rollback(h.g, []*member{m})
			c.mu.Lock()
			if h.g.state == PGCreated {
				h.g.state = PGRescheduling
			}
			c.mu.Unlock()
			c.storeGroup(h.g)
			c.Poke()
		}
	}
}

// releaseStaleGroups tells a node that comes back after it was declared
// dead to release whatever bundles it still holds: they were placed
// elsewhere when it died.
func (c *Cluster) releaseStaleGroups(id ids.NodeID) {
	c.placing.Lock()
	defer c.placing.Unlock()
	c.mu.Lock()
	m := c.members[id]
	var stale []string
	for _, g := range c.groups {
		if !slices.Contains(g.nodes, id) {
			stale = append(stale, g.id)
		}
	}
	c.mu.Unlock()
	if m == nil {
		return
	}
	for _, pg := range stale {
		if err := m.m.ReleaseBundles(pg); err != nil {
			c.log.Warn("release stale bundles", "pg", pg, "node", m.hex, "err", err)
		}
	}
}

// unschedulable fails a task no node may ever take: Ray's
// TaskPlacementGroupRemoved when its group was removed, else
// TaskUnschedulableError.
func (c *Cluster) unschedulable(spec *taskspec.TaskSpec, err error) {
	if errors.Is(err, ErrGroupRemoved) {
		c.fail(spec.ReturnIDs(), c.errorValue(rayerr.PlacementGroupRemoved()))
		return
	}
	c.fail(spec.ReturnIDs(), c.errorValue(rayerr.TaskUnschedulable(fmt.Sprintf("The task %s cannot be scheduled: %v", spec.Name, err))))
}

// RemoveJobPlacementGroups removes the groups a finished job created,
// except detached ones.
func (c *Cluster) RemoveJobPlacementGroups(job ids.JobID) {
	c.mu.Lock()
	var list []string
	for id, g := range c.groups {
		if g.job == job && !g.detached && g.state != PGRemoved {
			list = append(list, id)
		}
	}
	c.mu.Unlock()
	for _, id := range list {
		c.log.Info("removing placement group of a finished job", "pg", id, "job", job.Hex())
		if err := c.RemovePlacementGroup(id); err != nil {
			c.log.Warn("remove placement group", "pg", id, "err", err)
		}
	}
}

package raylet

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/gray-cluster/gray/internal/ids"
)

// Placement group states, named as in Ray's placement group table.
const (
	pgPending = "PENDING"
	pgCreated = "CREATED"
	pgRemoved = "REMOVED"
)

// placementGroup reserves bundles of resources on this node; tasks and
// actors scheduled into it draw from its bundles instead of the node.
type placementGroup struct {
	id       string // hex of Ray's 18-byte PlacementGroupID
	name     string
	strategy string
	job      ids.JobID
	detached bool
	bundles  []map[string]float64
	avail    []map[string]float64
	state    string
	ready    chan struct{}
	created  time.Time
}

func newPGID(job ids.JobID) string {
	var b [18]byte
	_, _ = rand.Read(b[:14])
	copy(b[14:], job[:])
	return hex.EncodeToString(b[:])
}

// feasible reports whether one node can ever host the group.
func (pg *placementGroup) feasible(total map[string]float64) error {
	if pg.strategy == "STRICT_SPREAD" && len(pg.bundles) > 1 {
		return fmt.Errorf("STRICT_SPREAD needs %d nodes; this pool has one", len(pg.bundles))
	}
	sum := map[string]float64{}
	for _, b := range pg.bundles {
		for k, v := range b {
			sum[k] += v
		}
	}
	if !fits(total, sum) {
		return fmt.Errorf("bundles %v do not fit the node's resources", pg.bundles)
	}
	return nil
}

// createPG registers a group and reserves its bundles when they fit.
func (r *Raylet) createPG(job ids.JobID, name, strategy string, detached bool, bundles []map[string]float64) (*placementGroup, error) {
	pg := &placementGroup{
		id: newPGID(job), name: name, strategy: strategy, job: job, detached: detached,
		bundles: bundles, state: pgPending, ready: make(chan struct{}), created: time.Now(),
	}
	r.mu.Lock()
	if name != "" {
		for _, other := range r.pgs {
			if other.name == name && other.state != pgRemoved {
				r.mu.Unlock()
				return nil, fmt.Errorf("placement group name %q is already in use", name)
			}
		}
	}
	if r.pgs == nil {
		r.pgs = map[string]*placementGroup{}
	}
	r.pgs[pg.id] = pg
	r.mu.Unlock()
	if err := pg.feasible(r.cfg.Resources); err != nil {
		// Like Ray, an infeasible group stays pending (ready() never fires).
		r.log.Warn("infeasible placement group", "pg", pg.id, "err", err)
		return pg, nil
	}
	sum := map[string]float64{}
	for _, b := range bundles {
		for k, v := range b {
			sum[k] += v
		}
	}
	gate := &task{spec: &TaskSpec{Resources: sum}, state: stateQueued, noGPUIDs: true}
	gate.onGrant = func() {
		r.mu.Lock()
		if pg.state == pgRemoved { // removed before it was placed
			release(r.available, sum)
			r.mu.Unlock()
			r.kick()
			return
		}
		pg.avail = make([]map[string]float64, len(bundles))
		for i, b := range bundles {
			pg.avail[i] = map[string]float64{}
			for k, v := range b {
				pg.avail[i][k] = v
			}
		}
		pg.state = pgCreated
		r.mu.Unlock()
		close(pg.ready)
		r.kick()
	}
	r.mu.Lock()
	r.queue.push(gate)
	r.mu.Unlock()
	r.kick()
	return pg, nil
}

// removePG returns a group's unused reservations to the node.
func (r *Raylet) removePG(id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	pg := r.pgs[id]
	if pg == nil {
		return fmt.Errorf("placement group %s does not exist", id)
	}
	if pg.state == pgCreated {
		for _, a := range pg.avail {
			release(r.available, a)
		}
	}
	pg.state = pgRemoved
	go r.kick()
	return nil
}

// grantFrom picks the resource pool a queued task draws from: the node, or
// a bundle of its placement group. It reports nil if nothing fits now.
func (r *Raylet) grantFrom(s *TaskSpec) map[string]float64 {
	if s.PlacementGroup == "" {
		if fits(r.available, s.Resources) {
			return r.available
		}
		return nil
	}
	pg := r.pgs[s.PlacementGroup]
	if pg == nil || pg.state != pgCreated {
		return nil
	}
	if s.BundleIndex >= 0 {
		if s.BundleIndex < len(pg.avail) && fits(pg.avail[s.BundleIndex], s.Resources) {
			return pg.avail[s.BundleIndex]
		}
		return nil
	}
	for _, a := range pg.avail {
		if fits(a, s.Resources) {
			return a
		}
	}
	return nil
}

// releaseTo gives resources back to where they were granted from (the node
// if that placement group is gone).
func (r *Raylet) releaseTo(s *TaskSpec, from map[string]float64) {
	if from == nil {
		return
	}
	if s.PlacementGroup != "" {
		if pg := r.pgs[s.PlacementGroup]; pg == nil || pg.state == pgRemoved {
			from = r.available
		}
	}
	release(from, s.Resources)
}

// pgTable renders groups the way ray.util.placement_group_table does.
func (r *Raylet) pgTable(only string) map[string]any {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]any{}
	for id, pg := range r.pgs {
		if only != "" && id != only {
			continue
		}
		bundles, nodes := map[string]any{}, map[string]any{}
		for i, b := range pg.bundles {
			bundles[fmt.Sprint(i)] = b
			if pg.state == pgCreated {
				nodes[fmt.Sprint(i)] = r.cfg.NodeID.Hex()
			}
		}
		out[id] = map[string]any{
			"placement_group_id": id, "name": pg.name, "strategy": pg.strategy, "state": pg.state,
			"bundles": bundles, "bundles_to_node_id": nodes,
			"stats": map[string]any{"scheduling_state": map[bool]string{true: "FINISHED", false: "PENDING"}[pg.state == pgCreated]},
		}
	}
	return out
}

func (r *Raylet) pgInfo(pg *placementGroup) map[string]any {
	return map[string]any{"id": pg.id, "bundles": pg.bundles, "name": pg.name}
}

// handleRPC answers a worker's request (placement group helpers).
func (r *Raylet) handleRPC(w *workerProc, f *frame) {
	reply := map[string]any{"t": "rpc_reply", "rpc_id": f.Header["rpc_id"]}
	fail := func(err error) { reply["error"] = err.Error() }
	w.mu.Lock()
	job := w.job
	w.mu.Unlock()
	switch f.str("op") {
	case "pg_create":
		bundles, err := decodeBundles(f.Header["bundles"])
		if err != nil {
			fail(err)
			break
		}
		detached, _ := f.Header["detached"].(bool)
		pg, err := r.createPG(job, f.str("name"), f.str("strategy"), detached, bundles)
		if err != nil {
			fail(err)
			break
		}
		reply["result"] = r.pgInfo(pg)
	case "pg_remove":
		if err := r.removePG(f.str("id")); err != nil {
			fail(err)
		}
	case "pg_get":
		r.mu.Lock()
		for _, pg := range r.pgs {
			if pg.name == f.str("name") && pg.state != pgRemoved {
				reply["result"] = r.pgInfo(pg)
			}
		}
		r.mu.Unlock()
	case "pg_table":
		reply["result"] = r.pgTable(f.str("id"))
	case "pg_wait":
		r.mu.Lock()
		pg := r.pgs[f.str("id")]
		r.mu.Unlock()
		if pg == nil {
			fail(fmt.Errorf("placement group %s does not exist", f.str("id")))
			break
		}
		timeout, _ := f.Header["timeout"].(float64)
		var tc <-chan time.Time
		if timeout >= 0 {
			t := time.NewTimer(time.Duration(timeout * float64(time.Second)))
			defer t.Stop()
			tc = t.C
		}
		select {
		case <-pg.ready:
			reply["result"] = true
		case <-tc:
			reply["result"] = false
		case <-w.dead:
			return
		case <-r.ctx.Done():
			return
		}
	default:
		fail(fmt.Errorf("unknown request %q", f.str("op")))
	}
	_ = w.send(reply, nil)
}

func decodeBundles(v any) ([]map[string]float64, error) {
	list, ok := v.([]any)
	if !ok || len(list) == 0 {
		return nil, fmt.Errorf("bundles must be a non-empty list")
	}
	out := make([]map[string]float64, len(list))
	for i, b := range list {
		m, ok := b.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("bundle %d is not a dict", i)
		}
		out[i] = map[string]float64{}
		for k, x := range m {
			f, ok := x.(float64)
			if !ok || f < 0 {
				return nil, fmt.Errorf("bundle %d: %s must be a non-negative number", i, k)
			}
			out[i][k] = f
		}
	}
	return out, nil
}

// HasPlacementGroup reports whether this raylet holds a placement group
// (hex id).
func (r *Raylet) HasPlacementGroup(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.pgs[id]
	return ok
}

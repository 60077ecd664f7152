package raylet

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"

	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/rayerr"
	"github.com/gray-cluster/gray/taskspec"
)

// Sentinel errors of placement group reservations.
var (
	// ErrBundlesUnavailable refuses a reservation that does not fit the
	// node's available resources now.
	ErrBundlesUnavailable = errors.New("raylet: bundles do not fit the available resources")
	// ErrNoPlacementGroups is returned to workers when the raylet has no
	// placement group table to ask.
	ErrNoPlacementGroups = errors.New("raylet: no placement group table")
)

// PlacementGroups is the cluster's placement group table as a raylet's
// workers reach it: the head's cluster itself, or a provider forwarding to
// it. Results are JSON-encodable values for the worker.
type PlacementGroups interface {
	PlacementGroupOp(ctx context.Context, job ids.JobID, req taskspec.PGRequest) (any, error)
}

// SetPlacementGroups sets the table workers' placement group operations go
// to (call before Start).
func (r *Raylet) SetPlacementGroups(pgs PlacementGroups) { r.cfg.PlacementGroups = pgs }

// reservation is the part of a placement group this node holds: some of
// its bundles, reserved out of the node's resources. Tasks and actors
// scheduled into the group draw from its bundles instead of the node.
type reservation struct {
	job ids.JobID
	// avail is what is left of each held bundle, by bundle index.
	avail map[int]map[string]float64
}

// ReserveBundles reserves the given bundles (by index) of a placement group
// out of the node's available resources, all or none. Bundles the node
// already holds for the group are kept as they are.
func (r *Raylet) ReserveBundles(pgID string, job ids.JobID, bundles map[int]map[string]float64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	res := r.pgs[pgID]
	sum := map[string]float64{}
	for i, b := range bundles {
		if res != nil && res.avail[i] != nil {
			continue
		}
		for k, v := range b {
			sum[k] += v
		}
	}
	if !fits(r.available, sum) {
		return fmt.Errorf("%w: placement group %s needs %v, node has %v", ErrBundlesUnavailable, pgID, sum, r.available)
	}
	acquire(r.available, sum)
	if res == nil {
		res = &reservation{job: job, avail: map[int]map[string]float64{}}
		if r.pgs == nil {
			r.pgs = map[string]*reservation{}
		}
		r.pgs[pgID] = res
	}
	for i, b := range bundles {
		if res.avail[i] == nil {
			res.avail[i] = maps.Clone(b)
		}
	}
	r.log.Debug("bundles reserved", "pg", pgID, "bundles", len(bundles))
	r.kick() // never blocks
	return nil
}

// ReleaseBundles gives a placement group's unused reservations back to the
// node; what its running work holds goes back to the node when it ends, and
// its tasks still queued fail with Ray's TaskPlacementGroupRemoved.
// Releasing a group the node does not hold is not an error.
func (r *Raylet) ReleaseBundles(pgID string) error {
	r.mu.Lock()
	res := r.pgs[pgID]
	delete(r.pgs, pgID)
	var orphans []*task
	if res != nil {
		for _, a := range res.avail {
			release(r.available, a)
		}
		orphans = r.queue.remove(func(t *task) bool { return t.spec.PlacementGroup == pgID && t.onGrant == nil })
	}
	r.mu.Unlock()
	// Tasks still queued in the group can never run here (actors waiting
	// in it are killed by the head).
	for _, t := range orphans {
		r.finishWithError(t, r.errorPickle(rayerr.PlacementGroupRemoved()))
	}
	if res != nil {
		r.log.Debug("bundles released", "pg", pgID)
		r.kick()
	}
	return nil
}

// grantFrom picks the resource pool a queued task draws from: the node, or
// a bundle of its placement group. It reports nil if nothing fits now.
func (r *Raylet) grantFrom(s *taskspec.TaskSpec) map[string]float64 {
	if s.PlacementGroup == "" {
		if fits(r.available, s.Resources) {
			return r.available
		}
		return nil
	}
	res := r.pgs[s.PlacementGroup]
	if res == nil {
		return nil
	}
	if s.BundleIndex >= 0 {
		if a := res.avail[s.BundleIndex]; a != nil && fits(a, s.Resources) {
			return a
		}
		return nil
	}
	for _, i := range slices.Sorted(maps.Keys(res.avail)) {
		if a := res.avail[i]; fits(a, s.Resources) {
			return a
		}
	}
	return nil
}

// releaseTo gives resources back to where they were granted from (the node
// if that bundle is no longer held).
func (r *Raylet) releaseTo(s *taskspec.TaskSpec, from map[string]float64) {
	if from == nil {
		return
	}
	if s.PlacementGroup != "" && !r.holds(s.PlacementGroup, from) {
		from = r.available
	}
	release(from, s.Resources)
}

// holds reports whether from is a bundle the node still holds for pg.
func (r *Raylet) holds(pg string, from map[string]float64) bool {
	res := r.pgs[pg]
	if res == nil {
		return false
	}
	for _, a := range res.avail {
		if reflect.ValueOf(a).UnsafePointer() == reflect.ValueOf(from).UnsafePointer() {
			return true
		}
	}
	return false
}

// handleRPC answers a worker's request (placement group helpers) by asking
// the cluster's placement group table.
func (r *Raylet) handleRPC(w *workerProc, f *frame) {
	if f.str("op") == opWorkerCred {
		r.workerCred(w, f)
		return
	}
	reply := map[string]any{"t": "rpc_reply", "rpc_id": f.Header["rpc_id"]}
	w.mu.Lock()
	job := w.job
	w.mu.Unlock()
	req := taskspec.PGRequest{Op: f.str("op"), ID: f.str("id"), Name: f.str("name"), Strategy: f.str("strategy")}
	req.Detached, _ = f.Header["detached"].(bool)
	req.Timeout, _ = f.Header["timeout"].(float64)
	var err error
	if req.Op == "pg_create" {
		req.Bundles, err = decodeBundles(f.Header["bundles"])
	}
	if err == nil && r.cfg.PlacementGroups == nil {
		err = ErrNoPlacementGroups
	}
	if err == nil {
		ctx, cancel := context.WithCancel(r.ctx)
		defer cancel()
		go func() {
			select {
			case <-w.dead:
				cancel()
			case <-ctx.Done():
			}
		}()
		var result any
		result, err = r.cfg.PlacementGroups.PlacementGroupOp(ctx, job, req)
		if ctx.Err() != nil {
			return // the worker or the raylet is gone
		}
		reply["result"] = result
	}
	if err != nil {
		reply["error"] = err.Error()
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

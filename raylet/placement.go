package raylet

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/rayerr"
	"github.com/gray-cluster/gray/resledger"
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
// its bundles, reserved out of the node's ledger. Tasks and actors
// scheduled into the group draw from its bundles instead of the node, and
// get the instances (GPU ids) the bundle reserved.
type reservation struct {
	job ids.JobID
	// avail is each held bundle, by bundle index.
	avail map[int]*resledger.Pool
}

// grantPool is where a grant comes from: the node's ledger or a bundle.
type grantPool interface {
	Acquire(req map[string]float64) (resledger.Allocation, bool)
	Release(a resledger.Allocation)
	ReleaseOnly(a resledger.Allocation, name string) []resledger.Part
	Reacquire(name string, parts []resledger.Part)
}

// bundle is a held bundle as a grantPool (guarded by the raylet's mu).
type bundle struct{ *resledger.Pool }

func (b bundle) Acquire(req map[string]float64) (resledger.Allocation, bool) { return b.Allocate(req) }

// ReserveBundles reserves the given bundles (by index) of a placement group
// out of the node's available resources, all or none. Bundles the node
// already holds for the group are kept as they are.
func (r *Raylet) ReserveBundles(pgID string, job ids.JobID, bundles map[int]map[string]float64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	res := r.pgs[pgID]
	got := map[int]resledger.Allocation{}
	for _, i := range slices.Sorted(maps.Keys(bundles)) {
		if res != nil && res.avail[i] != nil {
			continue
		}
		a, ok := r.res.Acquire(bundles[i])
		if !ok {
			for _, a := range got {
				r.res.Release(a)
			}
			return fmt.Errorf("%w: placement group %s bundle %d needs %v, node has %v", ErrBundlesUnavailable, pgID, i, bundles[i], r.res.Available())
		}
		got[i] = a
	}
	if res == nil {
		res = &reservation{job: job, avail: map[int]*resledger.Pool{}}
		if r.pgs == nil {
			r.pgs = map[string]*reservation{}
		}
		r.pgs[pgID] = res
	}
	for i, a := range got {
		res.avail[i] = resledger.PoolOf(a)
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
		for _, b := range res.avail {
			r.res.Release(b.Free())
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

// grant takes a queued task's resources from the node, or from a bundle of
// its placement group. It reports a nil pool if nothing fits now.
func (r *Raylet) grant(s *taskspec.TaskSpec) (grantPool, resledger.Allocation) {
	if s.PlacementGroup == "" {
		if a, ok := r.res.Acquire(s.Resources); ok {
			return r.res, a
		}
		return nil, nil
	}
	res := r.pgs[s.PlacementGroup]
	if res == nil {
		return nil, nil
	}
	indices := slices.Sorted(maps.Keys(res.avail))
	if s.BundleIndex >= 0 {
		indices = []int{s.BundleIndex}
	}
	for _, i := range indices {
		if b := res.avail[i]; b != nil {
			if a, ok := b.Allocate(s.Resources); ok {
				return bundle{b}, a
			}
		}
	}
	return nil, nil
}

// releaseTo gives an allocation back to where it was granted from (the
// node if that bundle is no longer held).
func (r *Raylet) releaseTo(s *taskspec.TaskSpec, from grantPool, a resledger.Allocation) {
	if from == nil {
		return
	}
	r.poolFor(s, from).Release(a)
}

// poolFor is from, or the node's ledger if from is a bundle of s's
// placement group the node no longer holds.
func (r *Raylet) poolFor(s *taskspec.TaskSpec, from grantPool) grantPool {
	if s.PlacementGroup != "" && !r.holds(s.PlacementGroup, from) {
		return r.res
	}
	return from
}

// holds reports whether from is a bundle the node still holds for pg.
func (r *Raylet) holds(pg string, from grantPool) bool {
	res := r.pgs[pg]
	b, ok := from.(bundle)
	if res == nil || !ok {
		return false
	}
	for _, a := range res.avail {
		if a == b.Pool {
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

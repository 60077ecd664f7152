package nodemanager

import (
	"context"
	"encoding/hex"

	commonpb "github.com/gray-cluster/gray/proto/ray/commonpb"
	raypb "github.com/gray-cluster/gray/proto/ray/raypb"
)

func bundleKeyOf(b *commonpb.Bundle) BundleKey {
	return BundleKey{PG: hex.EncodeToString(b.GetBundleId().GetPlacementGroupId()), Index: b.GetBundleId().GetBundleIndex()}
}

// PrepareBundleResources reserves every bundle or none (two-phase commit
// driven by the GCS).
func (s *nodeManagerService) PrepareBundleResources(ctx context.Context, req *raypb.PrepareBundleResourcesRequest) (*raypb.PrepareBundleResourcesReply, error) {
	r := s.r
	r.mu.Lock()
	defer r.mu.Unlock()
	var done []BundleKey
	for _, b := range req.GetBundleSpecs() {
		k := bundleKeyOf(b)
		if _, ok := r.bundles[k]; ok {
			continue // already prepared (a retry)
		}
		st, ok := r.res.PrepareBundle(positive(b.GetUnitResources()))
		if !ok {
			for _, d := range done {
				r.res.ReturnBundle(d, r.bundles[d])
				delete(r.bundles, d)
			}
			return &raypb.PrepareBundleResourcesReply{Success: false}, nil
		}
		r.bundles[k] = st
		done = append(done, k)
	}
	return &raypb.PrepareBundleResourcesReply{Success: true}, nil
}

// CommitBundleResources makes prepared bundles schedulable as
// <resource>_group_<index>_<pg> and <resource>_group_<pg>.
func (s *nodeManagerService) CommitBundleResources(ctx context.Context, req *raypb.CommitBundleResourcesRequest) (*raypb.CommitBundleResourcesReply, error) {
	r := s.r
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, b := range req.GetBundleSpecs() {
		k := bundleKeyOf(b)
		st, ok := r.bundles[k]
		if !ok {
			r.log.Warn("CommitBundleResources for a bundle that was not prepared", "bundle", k.String())
			continue
		}
		r.res.CommitBundle(k, st)
	}
	r.scheduleLocked()
	return &raypb.CommitBundleResourcesReply{}, nil
}

// RemovePlacementGroupBundles returns the bundles' resources; workers
// leased on them are killed.
func (s *nodeManagerService) RemovePlacementGroupBundles(ctx context.Context, req *raypb.RemovePlacementGroupBundlesRequest) (*raypb.RemovePlacementGroupBundlesReply, error) {
	r := s.r
	var keys []BundleKey
	for _, b := range req.GetBundleSpecs() {
		keys = append(keys, bundleKeyOf(b))
	}
	if len(keys) == 0 && len(req.GetPlacementGroupId()) > 0 {
		pg := hex.EncodeToString(req.GetPlacementGroupId())
		r.mu.Lock()
		for k := range r.bundles {
			if k.PG == pg {
				keys = append(keys, k)
			}
		}
		r.mu.Unlock()
	}
	r.removeBundles(keys)
	return &raypb.RemovePlacementGroupBundlesReply{}, nil
}

// ReleaseUnusedBundles drops every bundle not listed as in use.
func (s *nodeManagerService) ReleaseUnusedBundles(ctx context.Context, req *raypb.ReleaseUnusedBundlesRequest) (*raypb.ReleaseUnusedBundlesReply, error) {
	r := s.r
	inUse := map[BundleKey]bool{}
	for _, b := range req.GetBundlesInUse() {
		inUse[bundleKeyOf(b)] = true
	}
	var drop []BundleKey
	r.mu.Lock()
	for k := range r.bundles {
		if !inUse[k] {
			drop = append(drop, k)
		}
	}
	r.mu.Unlock()
	r.removeBundles(drop)
	return &raypb.ReleaseUnusedBundlesReply{}, nil
}

func (r *Raylet) removeBundles(keys []BundleKey) {
	var victims []*worker
	var canceled []*lease
	r.mu.Lock()
	for _, k := range keys {
		st, ok := r.bundles[k]
		if !ok {
			continue
		}
		for _, l := range r.leases {
			if l.alloc.UsesBundle(k.PG, k.Index) && l.worker != nil {
				victims = append(victims, l.worker)
			}
		}
		kept := r.queue[:0]
		for _, l := range r.queue {
			if requestsBundle(l.placement, k) {
				canceled = append(canceled, l)
				continue
			}
			kept = append(kept, l)
		}
		r.queue = kept
		r.res.ReturnBundle(k, st)
		delete(r.bundles, k)
	}
	for _, w := range victims {
		w.setExit(commonpb.WorkerExitType_INTENDED_SYSTEM_EXIT, "Worker exits because it uses resources of a removed placement group.")
	}
	r.scheduleLocked()
	r.mu.Unlock()
	for _, l := range canceled {
		l.finish(leaseResult{canceled: true, failureType: raypb.RequestWorkerLeaseReply_SCHEDULING_CANCELLED_PLACEMENT_GROUP_REMOVED,
			message: "the placement group was removed"})
	}
	for _, w := range victims {
		w.kill()
	}
}

// requestsBundle reports whether a queued request names bundle k's
// resources (its index, or the group's wildcard).
func requestsBundle(req map[string]float64, k BundleKey) bool {
	a := Allocation{}
	for name := range req {
		a[name] = nil
	}
	return a.UsesBundle(k.PG, k.Index) || a.UsesBundle(k.PG, -1)
}

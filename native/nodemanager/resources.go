package nodemanager

import (
	"sort"

	commonpb "github.com/gray-cluster/gray/proto/ray/commonpb"
	"github.com/gray-cluster/gray/resledger"
)

// The node's resources live in a resledger.Ledger: the raylet's own, or
// one it shares with the head's ray:// raylet (Config.Ledger).
type (
	// Allocation is what one lease holds: per resource, the instances used.
	Allocation = resledger.Allocation
	// BundleKey names one placement-group bundle.
	BundleKey   = resledger.BundleKey
	bundleState = resledger.Bundle
	instAmount  = resledger.Part
)

// mapping renders an allocation as RequestWorkerLeaseReply.resource_mapping.
func mapping(a Allocation) []*commonpb.ResourceMapEntry {
	names := make([]string, 0, len(a))
	for n := range a {
		names = append(names, n)
	}
	sort.Strings(names)
	var out []*commonpb.ResourceMapEntry
	for _, n := range names {
		e := &commonpb.ResourceMapEntry{Name: n}
		for _, ia := range a[n] {
			e.ResourceIds = append(e.ResourceIds, &commonpb.ResourceId{Index: ia.ID, Quantity: ia.Amount.Float()})
		}
		out = append(out, e)
	}
	return out
}

// watchLedger reschedules when the shared ledger changed under another
// raylet (it freed resources, or took some), so queued leases that fit now
// are granted and the next resource report carries the new numbers.
func (r *Raylet) watchLedger() {
	defer r.wg.Done()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-r.res.Changed():
		}
		r.mu.Lock()
		r.scheduleLocked()
		r.mu.Unlock()
	}
}

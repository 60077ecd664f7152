package nodemanager

import (
	"fmt"
	"math"
	"sort"
	"strings"

	commonpb "github.com/gray-cluster/gray/proto/ray/commonpb"
)

// Resource quantities are kept in fixed point (1/10000), like Ray, so that
// fractional requests add and subtract exactly.
type fixed int64

const fixedUnit = 10000

func toFixed(x float64) fixed  { return fixed(math.Round(x * fixedUnit)) }
func (f fixed) Float() float64 { return float64(f) / fixedUnit }

// unitResources are the resources whose instances are handed out whole (or
// as a fraction of one instance): the worker learns their instance ids
// (CUDA_VISIBLE_DEVICES and the like). Everything else is a single quantity.
var unitResources = map[string]bool{"GPU": true, "TPU": true, "NPU": true, "HPU": true, "neuron_cores": true}

// isUnitResource also covers placement-group forms such as GPU_group_0_<pg>.
func isUnitResource(name string) bool {
	if unitResources[name] {
		return true
	}
	if i := strings.Index(name, "_group_"); i > 0 {
		return unitResources[name[:i]]
	}
	return false
}

type instance struct {
	id           int64
	total, avail fixed
}

// instAmount is part of an allocation: amount taken from instance id.
type instAmount struct {
	ID     int64
	Amount fixed
}

// Allocation is what one lease holds: per resource, the instances used.
type Allocation map[string][]instAmount

// Mapping renders the allocation as RequestWorkerLeaseReply.resource_mapping.
func (a Allocation) Mapping() []*commonpb.ResourceMapEntry {
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

// ResourcePool is the node's resource accounting: totals, availability and
// instance assignment. It is pure (no locking, no I/O); the raylet guards it.
type ResourcePool struct {
	res map[string][]instance
}

// NewResourcePool builds a pool from node totals; gpuIDs name the GPU
// instances (default 0..n-1).
func NewResourcePool(total map[string]float64, gpuIDs []int) *ResourcePool {
	p := &ResourcePool{res: map[string][]instance{}}
	for name, v := range total {
		if v <= 0 {
			continue
		}
		if isUnitResource(name) {
			n := int(math.Round(v))
			var insts []instance
			for i := 0; i < n; i++ {
				id := int64(i)
				if name == "GPU" && i < len(gpuIDs) {
					id = int64(gpuIDs[i])
				}
				insts = append(insts, instance{id: id, total: fixedUnit, avail: fixedUnit})
			}
			p.res[name] = insts
			continue
		}
		f := toFixed(v)
		p.res[name] = []instance{{id: 0, total: f, avail: f}}
	}
	return p
}

func sum(insts []instance, avail bool) fixed {
	var s fixed
	for _, in := range insts {
		if avail {
			s += in.avail
		} else {
			s += in.total
		}
	}
	return s
}

// Total returns the node totals by name.
func (p *ResourcePool) Total() map[string]float64 {
	out := make(map[string]float64, len(p.res))
	for n, insts := range p.res {
		out[n] = sum(insts, false).Float()
	}
	return out
}

// Available returns what is free by name (CPU can be negative while blocked
// workers have taken theirs back).
func (p *ResourcePool) Available() map[string]float64 {
	out := make(map[string]float64, len(p.res))
	for n, insts := range p.res {
		out[n] = sum(insts, true).Float()
	}
	return out
}

// Feasible reports whether req could ever fit on this node.
func (p *ResourcePool) Feasible(req map[string]float64) bool {
	return p.check(req, false)
}

// Fits reports whether req fits what is available now.
func (p *ResourcePool) Fits(req map[string]float64) bool {
	return p.check(req, true)
}

func (p *ResourcePool) check(req map[string]float64, avail bool) bool {
	for name, v := range req {
		amt := toFixed(v)
		if amt <= 0 {
			continue
		}
		insts, ok := p.res[name]
		if !ok {
			return false
		}
		if _, ok := pick(insts, amt, avail, isUnitResource(name)); !ok {
			return false
		}
	}
	return true
}

// pick chooses instances for amt: whole free instances for a unit
// resource's amount >= 1, one instance with room for a fraction, or the
// single instance of a quantity resource.
func pick(insts []instance, amt fixed, avail bool, unit bool) ([]instAmount, bool) {
	room := func(in instance) fixed {
		if avail {
			return in.avail
		}
		return in.total
	}
	if !unit {
		if len(insts) == 0 || room(insts[0]) < amt {
			return nil, false
		}
		return []instAmount{{ID: insts[0].id, Amount: amt}}, true
	}
	if amt >= fixedUnit {
		if amt%fixedUnit != 0 {
			return nil, false // whole instances only above one
		}
		want := int(amt / fixedUnit)
		var out []instAmount
		for _, in := range insts {
			if room(in) == in.total && in.total == fixedUnit {
				out = append(out, instAmount{ID: in.id, Amount: fixedUnit})
				if len(out) == want {
					return out, true
				}
			}
		}
		return nil, false
	}
	// A fraction: prefer an instance already partly used (packing).
	best := -1
	for i, in := range insts {
		if room(in) < amt {
			continue
		}
		if best < 0 || room(in) < room(insts[best]) {
			best = i
		}
	}
	if best < 0 {
		return nil, false
	}
	return []instAmount{{ID: insts[best].id, Amount: amt}}, true
}

// Allocate takes req from what is available; false leaves the pool unchanged.
func (p *ResourcePool) Allocate(req map[string]float64) (Allocation, bool) {
	if !p.Fits(req) {
		return nil, false
	}
	a := Allocation{}
	for name, v := range req {
		amt := toFixed(v)
		if amt <= 0 {
			continue
		}
		got, _ := pick(p.res[name], amt, true, isUnitResource(name))
		a[name] = got
		p.take(name, got, 1)
	}
	return a, true
}

func (p *ResourcePool) take(name string, parts []instAmount, sign fixed) {
	insts := p.res[name]
	for _, ia := range parts {
		for i := range insts {
			if insts[i].id == ia.ID {
				insts[i].avail -= sign * ia.Amount
				if insts[i].avail > insts[i].total {
					insts[i].avail = insts[i].total
				}
			}
		}
	}
}

// Release gives an allocation back. Resources that no longer exist (a
// removed bundle) are ignored.
func (p *ResourcePool) Release(a Allocation) {
	for name, parts := range a {
		p.take(name, parts, -1)
	}
}

// ReleaseOnly gives back one resource of an allocation (a blocked worker's
// CPU) and returns the part released so it can be reacquired.
func (p *ResourcePool) ReleaseOnly(a Allocation, name string) []instAmount {
	parts := a[name]
	p.take(name, parts, -1)
	return parts
}

// Reacquire takes parts back even when that oversubscribes (an unblocked
// worker resumes regardless, as in Ray).
func (p *ResourcePool) Reacquire(name string, parts []instAmount) {
	p.take(name, parts, 1)
}

// addInstances adds capacity (total and available) to a resource, merging
// instances with the same id.
func (p *ResourcePool) addInstances(name string, parts []instAmount) {
	insts := p.res[name]
	for _, ia := range parts {
		found := false
		for i := range insts {
			if insts[i].id == ia.ID {
				insts[i].total += ia.Amount
				insts[i].avail += ia.Amount
				found = true
			}
		}
		if !found {
			insts = append(insts, instance{id: ia.ID, total: ia.Amount, avail: ia.Amount})
		}
	}
	sort.Slice(insts, func(i, j int) bool { return insts[i].id < insts[j].id })
	p.res[name] = insts
}

// removeInstances takes capacity away again; a resource left with none is
// deleted.
func (p *ResourcePool) removeInstances(name string, parts []instAmount) {
	insts := p.res[name]
	for _, ia := range parts {
		for i := range insts {
			if insts[i].id == ia.ID {
				insts[i].total -= ia.Amount
				insts[i].avail -= ia.Amount
			}
		}
	}
	kept := insts[:0]
	for _, in := range insts {
		if in.total > 0 {
			kept = append(kept, in)
		}
	}
	if len(kept) == 0 {
		delete(p.res, name)
		return
	}
	p.res[name] = kept
}

// BundleKey names one placement-group bundle.
type BundleKey struct {
	PG    string // placement group id, hex
	Index int32
}

func (k BundleKey) String() string { return fmt.Sprintf("%s[%d]", k.PG, k.Index) }

// bundleResourceLabel is the placement-group form of a resource: with an
// index (CPU_group_0_<pg>) or the wildcard (CPU_group_<pg>) for index -1.
func bundleResourceLabel(name, pgHex string, index int32) string {
	if index >= 0 {
		return fmt.Sprintf("%s_group_%d_%s", name, index, pgHex)
	}
	return fmt.Sprintf("%s_group_%s", name, pgHex)
}

// bundleMarker is the resource every committed bundle adds in 1000 units
// (tasks in the group ask for 0.001 of it).
const bundleMarker = "bundle"

// bundleState is a prepared (reserved) or committed bundle.
type bundleState struct {
	alloc     Allocation // taken from the node's plain resources
	committed bool
}

// PrepareBundle reserves a bundle's resources; false if they do not fit.
func (p *ResourcePool) PrepareBundle(unit map[string]float64) (*bundleState, bool) {
	a, ok := p.Allocate(unit)
	if !ok {
		return nil, false
	}
	return &bundleState{alloc: a}, true
}

// CommitBundle makes the reserved resources schedulable under their
// placement-group names.
func (p *ResourcePool) CommitBundle(k BundleKey, b *bundleState) {
	if b.committed {
		return
	}
	b.committed = true
	for name, parts := range b.alloc {
		p.addInstances(bundleResourceLabel(name, k.PG, k.Index), parts)
		p.addInstances(bundleResourceLabel(name, k.PG, -1), parts)
	}
	marker := []instAmount{{ID: 0, Amount: 1000 * fixedUnit}}
	p.addInstances(bundleResourceLabel(bundleMarker, k.PG, k.Index), marker)
	p.addInstances(bundleResourceLabel(bundleMarker, k.PG, -1), marker)
}

// ReturnBundle undoes a commit (if any) and gives the reservation back.
func (p *ResourcePool) ReturnBundle(k BundleKey, b *bundleState) {
	if b.committed {
		for name, parts := range b.alloc {
			p.removeInstances(bundleResourceLabel(name, k.PG, k.Index), parts)
			p.removeInstances(bundleResourceLabel(name, k.PG, -1), parts)
		}
		marker := []instAmount{{ID: 0, Amount: 1000 * fixedUnit}}
		p.removeInstances(bundleResourceLabel(bundleMarker, k.PG, k.Index), marker)
		p.removeInstances(bundleResourceLabel(bundleMarker, k.PG, -1), marker)
		b.committed = false
	}
	p.Release(b.alloc)
}

// usesBundle reports whether an allocation draws on resources of bundle k
// (index -1: any bundle of the group).
func (a Allocation) usesBundle(pgHex string, index int32) bool {
	for name := range a {
		if index >= 0 {
			if strings.HasSuffix(name, fmt.Sprintf("_group_%d_%s", index, pgHex)) {
				return true
			}
			continue
		}
		if strings.HasSuffix(name, "_"+pgHex) && strings.Contains(name, "_group_") {
			return true
		}
	}
	return false
}

// Package resledger is a node's resource ledger: totals, what is free, and
// which instance of a unit resource (a GPU) each grant holds. Pool is the
// pure accounting; Ledger shares one Pool between the raylets that offer the
// same machine (the head's ray:// raylet and its native raylet), so that
// neither can grant what the other holds.
package resledger

import (
	"maps"
	"math"
	"sort"
	"strings"
)

// Fixed is a resource quantity in fixed point (1/10000), as in Ray, so that
// fractional requests add and subtract exactly.
type Fixed int64

// Unit is one whole resource (one CPU, one GPU instance) in Fixed.
const Unit = 10000

// ToFixed rounds x to the ledger's precision.
func ToFixed(x float64) Fixed { return Fixed(math.Round(x * Unit)) }

// Float is f as a float64.
func (f Fixed) Float() float64 { return float64(f) / Unit }

// unitResources are the resources whose instances are handed out whole (or
// as a fraction of one instance): the worker learns their instance ids
// (CUDA_VISIBLE_DEVICES and the like). Everything else is one quantity.
var unitResources = map[string]bool{"GPU": true, "TPU": true, "NPU": true, "HPU": true, "neuron_cores": true}

// IsUnitResource reports whether name's instances are handed out by id; it
// covers placement-group forms such as GPU_group_0_<pg>.
func IsUnitResource(name string) bool {
	if unitResources[name] {
		return true
	}
	if i := strings.Index(name, "_group_"); i > 0 {
		return unitResources[name[:i]]
	}
	return false
}

// ImplicitPrefix starts the names of Ray's implicit per-node resources
// (Serve's max_replicas_per_node asks for one per deployment): every node
// has one unit of each without offering it, so a missing one is a whole
// free unit, and one back at a whole free unit is forgotten again.
const ImplicitPrefix = "node:__internal_implicit_resource_"

// IsImplicitResource reports whether name is one of Ray's implicit per-node
// resources.
func IsImplicitResource(name string) bool { return strings.HasPrefix(name, ImplicitPrefix) }

// HaveOf is how much of name a node's reported map have holds, counting an
// implicit resource it does not list as the whole free unit every node has.
func HaveOf(have map[string]float64, name string) float64 {
	if v, ok := have[name]; ok {
		return v
	}
	if IsImplicitResource(name) {
		return 1
	}
	return 0
}

type instance struct {
	id           int64
	total, avail Fixed
	// off: withdrawn (a GPU that failed verification, a resource no longer
	// offered). Nothing new is granted on it and it is not counted; what
	// runs there keeps running and gives back to it.
	off bool
}

// Part is a piece of an allocation: Amount taken from instance ID.
type Part struct {
	ID     int64
	Amount Fixed
}

// Allocation is what one grant holds: per resource, the instances used.
type Allocation map[string][]Part

// IDs are the instance ids the allocation holds of name (GPU ids).
func (a Allocation) IDs(name string) []int {
	var out []int
	for _, p := range a[name] {
		out = append(out, int(p.ID))
	}
	return out
}

// Clone is a deep copy of a.
func (a Allocation) Clone() Allocation {
	out := make(Allocation, len(a))
	for k, v := range a {
		out[k] = append([]Part(nil), v...)
	}
	return out
}

// Pool is resource accounting: totals, availability and instance
// assignment. It is pure (no locking, no I/O); its owner guards it.
type Pool struct {
	res map[string][]instance
	// offered names the resources the GPU offer governs: the node totals
	// the pool was built with and those an offer named since (not a
	// raylet's implicit node:<ip> resources, nor bundles).
	offered map[string]bool
}

// NewPool builds a pool from node totals; gpuIDs name the GPU instances
// (default 0..n-1).
func NewPool(total map[string]float64, gpuIDs []int) *Pool {
	p := &Pool{res: map[string][]instance{}, offered: map[string]bool{}}
	for name, v := range total {
		if v <= 0 {
			continue
		}
		p.offered[name] = true
		if IsUnitResource(name) {
			n := int(math.Round(v))
			var insts []instance
			for i := 0; i < n; i++ {
				id := int64(i)
				if name == "GPU" && i < len(gpuIDs) {
					id = int64(gpuIDs[i])
				}
				insts = append(insts, instance{id: id, total: Unit, avail: Unit})
			}
			p.res[name] = insts
			continue
		}
		f := ToFixed(v)
		p.res[name] = []instance{{id: 0, total: f, avail: f}}
	}
	return p
}

// PoolOf builds a pool whose capacity is exactly a (a placement group
// bundle reserved out of a node ledger): grants from it name the same
// instances.
func PoolOf(a Allocation) *Pool {
	p := &Pool{res: map[string][]instance{}, offered: map[string]bool{}}
	for name, parts := range a {
		p.addInstances(name, parts)
	}
	return p
}

// Clone is an independent copy (a scheduling pass tries grants on it).
func (p *Pool) Clone() *Pool {
	out := &Pool{res: make(map[string][]instance, len(p.res)), offered: maps.Clone(p.offered)}
	for k, v := range p.res {
		out.res[k] = append([]instance(nil), v...)
	}
	return out
}

func sum(insts []instance, avail bool) (s Fixed, offered bool) {
	for _, in := range insts {
		if in.off {
			continue
		}
		offered = true
		if avail {
			s += in.avail
		} else {
			s += in.total
		}
	}
	return s, offered
}

func (p *Pool) sums(avail bool) map[string]float64 {
	out := make(map[string]float64, len(p.res))
	for n, insts := range p.res {
		if IsImplicitResource(n) && (!avail || insts[0].avail >= Unit) {
			continue // every node has one; reported only while some is held
		}
		if s, ok := sum(insts, avail); ok {
			out[n] = s.Float()
		}
	}
	return out
}

// insts are name's instances; an implicit resource never used is one whole
// free unit.
func (p *Pool) insts(name string) []instance {
	if in, ok := p.res[name]; ok || !IsImplicitResource(name) {
		return in
	}
	return []instance{{id: 0, total: Unit, avail: Unit}}
}

// Total returns the totals offered, by name (withdrawn instances left out,
// a resource with none offered omitted).
func (p *Pool) Total() map[string]float64 { return p.sums(false) }

// Available returns what is free by name (CPU can be negative while
// blocked workers have taken theirs back).
func (p *Pool) Available() map[string]float64 { return p.sums(true) }

// Feasible reports whether req could ever fit.
func (p *Pool) Feasible(req map[string]float64) bool { return p.check(req, false) }

// Fits reports whether req fits what is available now.
func (p *Pool) Fits(req map[string]float64) bool { return p.check(req, true) }

func (p *Pool) check(req map[string]float64, avail bool) bool {
	for name, v := range req {
		amt := ToFixed(v)
		if amt <= 0 {
			continue
		}
		if _, ok := pick(p.insts(name), amt, avail, IsUnitResource(name)); !ok {
			return false
		}
	}
	return true
}

// pick chooses instances for amt: whole free instances for a unit
// resource's amount >= 1, one instance with room for a fraction (the
// fullest that fits, packing fractions as Ray does), or the single instance
// of a quantity resource. Withdrawn instances are never chosen.
func pick(insts []instance, amt Fixed, avail bool, unit bool) ([]Part, bool) {
	room := func(in instance) Fixed {
		if avail {
			return in.avail
		}
		return in.total
	}
	if !unit {
		if len(insts) == 0 || insts[0].off || room(insts[0]) < amt {
			return nil, false
		}
		return []Part{{ID: insts[0].id, Amount: amt}}, true
	}
	if amt >= Unit {
		if amt%Unit != 0 {
			return nil, false // whole instances only above one
		}
		want := int(amt / Unit)
		var out []Part
		for _, in := range insts {
			if !in.off && room(in) == in.total && in.total == Unit {
				out = append(out, Part{ID: in.id, Amount: Unit})
				if len(out) == want {
					return out, true
				}
			}
		}
		return nil, false
	}
	best := -1
	for i, in := range insts {
		if in.off || room(in) < amt {
			continue
		}
		if best < 0 || room(in) < room(insts[best]) {
			best = i
		}
	}
	if best < 0 {
		return nil, false
	}
	return []Part{{ID: insts[best].id, Amount: amt}}, true
}

// Allocate takes req from what is available; false leaves the pool
// unchanged.
func (p *Pool) Allocate(req map[string]float64) (Allocation, bool) {
	if !p.Fits(req) {
		return nil, false
	}
	a := Allocation{}
	for name, v := range req {
		amt := ToFixed(v)
		if amt <= 0 {
			continue
		}
		if _, ok := p.res[name]; !ok && IsImplicitResource(name) {
			p.res[name] = p.insts(name)
		}
		got, _ := pick(p.res[name], amt, true, IsUnitResource(name))
		a[name] = got
		p.take(name, got, 1)
	}
	return a, true
}

func (p *Pool) take(name string, parts []Part, sign Fixed) {
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
	if IsImplicitResource(name) && len(insts) == 1 && insts[0].avail == insts[0].total {
		delete(p.res, name) // back to the unit every node has
	}
}

// Release gives an allocation back. Resources that no longer exist (a
// removed bundle) are ignored.
func (p *Pool) Release(a Allocation) {
	for name, parts := range a {
		p.take(name, parts, -1)
	}
}

// ReleaseOnly gives back one resource of an allocation (a blocked worker's
// CPU) and returns the part released so it can be reacquired.
func (p *Pool) ReleaseOnly(a Allocation, name string) []Part {
	parts := a[name]
	p.take(name, parts, -1)
	return parts
}

// Reacquire takes parts back even when that oversubscribes (an unblocked
// worker resumes regardless, as in Ray).
func (p *Pool) Reacquire(name string, parts []Part) {
	p.take(name, parts, 1)
}

// Free is what is available, as an allocation (instance by instance):
// giving it back elsewhere returns exactly the unused part.
func (p *Pool) Free() Allocation {
	a := Allocation{}
	for name, insts := range p.res {
		if IsImplicitResource(name) {
			continue // not capacity that could be handed elsewhere
		}
		for _, in := range insts {
			if in.avail > 0 {
				a[name] = append(a[name], Part{ID: in.id, Amount: in.avail})
			}
		}
	}
	return a
}

// Busy reports, for each instance of name in id order, whether any of it
// is granted (withdrawn instances included).
func (p *Pool) Busy(name string) []bool {
	insts := p.res[name]
	out := make([]bool, len(insts))
	for i, in := range insts {
		out[i] = in.avail < in.total
	}
	return out
}

// SetOffer withdraws the GPUs marked off (by position in id order) and
// offers the others again, and makes total the offered totals of the other
// resources: a quantity grows or shrinks by the difference, a resource
// missing from total is withdrawn, one that reappears is offered again.
// Work already granted keeps what it holds.
func (p *Pool) SetOffer(off []bool, total map[string]float64) {
	for i := range p.res["GPU"] {
		p.res["GPU"][i].off = i < len(off) && off[i]
	}
	for _, name := range slicesSorted(p.res) {
		if name == "GPU" || IsUnitResource(name) || !p.offered[name] {
			continue
		}
		v, offered := total[name]
		in := &p.res[name][0]
		if !offered || v <= 0 {
			in.off = true
			continue
		}
		d := ToFixed(v) - in.total
		in.total += d
		in.avail += d
		in.off = false
	}
	for name, v := range total {
		if _, ok := p.res[name]; !ok && v > 0 && !IsUnitResource(name) {
			f := ToFixed(v)
			p.res[name] = []instance{{id: 0, total: f, avail: f}}
			p.offered[name] = true
		}
	}
}

func slicesSorted(m map[string][]instance) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// addInstances adds capacity (total and available) to a resource, merging
// instances with the same id.
func (p *Pool) addInstances(name string, parts []Part) {
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
func (p *Pool) removeInstances(name string, parts []Part) {
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

// equal reports whether two pools hold the same instances (tests).
func (p *Pool) equal(q *Pool) bool {
	return maps.EqualFunc(p.res, q.res, func(a, b []instance) bool {
		if len(a) != len(b) {
			return false
		}
		for i := range a {
			if a[i] != b[i] {
				return false
			}
		}
		return true
	})
}

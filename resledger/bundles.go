package resledger

import (
	"fmt"
	"strings"
)

// BundleKey names one placement-group bundle.
type BundleKey struct {
	PG    string // placement group id, hex
	Index int32
}

func (k BundleKey) String() string { return fmt.Sprintf("%s[%d]", k.PG, k.Index) }

// BundleLabel is the placement-group form of a resource: with an index
// (CPU_group_0_<pg>) or the wildcard (CPU_group_<pg>) for index -1.
func BundleLabel(name, pgHex string, index int32) string {
	if index >= 0 {
		return fmt.Sprintf("%s_group_%d_%s", name, index, pgHex)
	}
	return fmt.Sprintf("%s_group_%s", name, pgHex)
}

// bundleMarker is the resource every committed bundle adds in 1000 units
// (tasks in the group ask for 0.001 of it).
const bundleMarker = "bundle"

// Bundle is a prepared (reserved) or committed bundle.
type Bundle struct {
	Alloc     Allocation // taken from the node's plain resources
	committed bool
}

// PrepareBundle reserves a bundle's resources; false if they do not fit.
func (p *Pool) PrepareBundle(unit map[string]float64) (*Bundle, bool) {
	a, ok := p.Allocate(unit)
	if !ok {
		return nil, false
	}
	return &Bundle{Alloc: a}, true
}

// CommitBundle makes the reserved resources schedulable under their
// placement-group names.
func (p *Pool) CommitBundle(k BundleKey, b *Bundle) {
	if b.committed {
		return
	}
	b.committed = true
	for name, parts := range b.Alloc {
		p.addInstances(BundleLabel(name, k.PG, k.Index), parts)
		p.addInstances(BundleLabel(name, k.PG, -1), parts)
	}
	marker := []Part{{ID: 0, Amount: 1000 * Unit}}
	p.addInstances(BundleLabel(bundleMarker, k.PG, k.Index), marker)
	p.addInstances(BundleLabel(bundleMarker, k.PG, -1), marker)
}

// ReturnBundle undoes a commit (if any) and gives the reservation back.
func (p *Pool) ReturnBundle(k BundleKey, b *Bundle) {
	if b.committed {
		for name, parts := range b.Alloc {
			p.removeInstances(BundleLabel(name, k.PG, k.Index), parts)
			p.removeInstances(BundleLabel(name, k.PG, -1), parts)
		}
		marker := []Part{{ID: 0, Amount: 1000 * Unit}}
		p.removeInstances(BundleLabel(bundleMarker, k.PG, k.Index), marker)
		p.removeInstances(BundleLabel(bundleMarker, k.PG, -1), marker)
		b.committed = false
	}
	p.Release(b.Alloc)
}

// UsesBundle reports whether an allocation draws on resources of bundle k
// of group pgHex (index -1: any bundle of the group).
func (a Allocation) UsesBundle(pgHex string, index int32) bool {
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

package nodeserver

import (
	"sync"

	"github.com/gray-cluster/gray/internal/ids"
)

// directory remembers which providers hold a copy of an object (they pulled
// it, or produced it), as a placement hint for data locality. It is bounded:
// the oldest objects are forgotten first, and a provider's cache may have
// dropped a copy since, so it is a hint, never the record.
type directory struct {
	mu    sync.Mutex
	max   int
	where map[ids.ObjectID][]ids.NodeID
	order []ids.ObjectID
}

func newDirectory(max int) *directory {
	return &directory{max: max, where: map[ids.ObjectID][]ids.NodeID{}}
}

func (d *directory) add(oid ids.ObjectID, node ids.NodeID) {
	d.mu.Lock()
	defer d.mu.Unlock()
	nodes, known := d.where[oid]
	for _, n := range nodes {
		if n == node {
			return
		}
	}
	if !known {
		d.order = append(d.order, oid)
	}
	d.where[oid] = append(nodes, node)
	for len(d.order) > d.max {
		delete(d.where, d.order[0])
		d.order = d.order[1:]
	}
}

func (d *directory) holders(oid ids.ObjectID) []ids.NodeID {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]ids.NodeID(nil), d.where[oid]...)
}

// forget drops a node from every entry (it died or restarted).
func (d *directory) forget(node ids.NodeID) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for oid, nodes := range d.where {
		out := nodes[:0]
		for _, n := range nodes {
			if n != node {
				out = append(out, n)
			}
		}
		d.where[oid] = out
	}
}

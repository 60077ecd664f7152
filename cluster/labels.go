package cluster

import (
	"maps"

	"github.com/gray-cluster/gray/internal/ids"
)

// SetLabels replaces a live node's labels and GPU summary (its GPUs were
// verified again); placements from now on see them, and pending work is
// placed again. The member is replaced, not changed, so a placement holding
// the old one reads a consistent view. The same labels change nothing.
func (c *Cluster) SetLabels(id ids.NodeID, labels map[string]string, gpus string) {
	sched := maps.Clone(labels)
	if sched == nil {
		sched = map[string]string{}
	}
	sched["ray.io/node-id"] = id.Hex()
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.members[id]
	if m == nil || (maps.Equal(m.labels, sched) && m.info.GPUs == gpus) {
		return
	}
	nm := *m
	nm.labels = sched
	nm.info.Labels = maps.Clone(labels)
	nm.info.GPUs = gpus
	c.members[id] = &nm
	c.notifyLocked()
}

package head

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Demand is a resource shape waiting for room, and how many requests of it
// wait, in `gray status` (as `ray status` lists pending demands).
type Demand struct {
	Shape map[string]float64 `json:"shape"`
	Count int                `json:"count"`
	// World is "ray://" (work from Ray Client sessions) or "native".
	World string `json:"world"`
}

// demands gathers the pending demands of both worlds: ray:// work parked
// at the head or queued at its raylet (providers' queues are not reported
// to the head), and the native raylet's queued work.
func (h *Head) demands() []Demand {
	byKey := map[string]*Demand{}
	var order []string
	add := func(world string, shape map[string]float64, n int) {
		k := world + "|" + shapeKey(shape)
		d := byKey[k]
		if d == nil {
			d = &Demand{Shape: maps.Clone(shape), World: world}
			byKey[k] = d
			order = append(order, k)
		}
		d.Count += n
	}
	for _, p := range h.Cluster.Pending() {
		add("ray://", p.Resources, 1)
	}
	for _, d := range h.Raylet.Demands() {
		add("ray://", d.Shape, d.Count)
	}
	if h.Native != nil && h.Native.GCS() != nil {
		for _, d := range h.Native.GCS().Demands() {
			add("native", d.Shape, int(d.Count))
		}
	}
	out := make([]Demand, 0, len(order))
	for _, k := range order {
		out = append(out, *byKey[k])
	}
	return out
}

func shapeKey(shape map[string]float64) string {
	keys := slices.Sorted(maps.Keys(shape))
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%g,", k, shape[k])
	}
	return b.String()
}

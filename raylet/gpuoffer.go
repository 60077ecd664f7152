package raylet

import "maps"

// SetGPUOffer withdraws the GPUs marked off (by slot, the ids
// CUDA_VISIBLE_DEVICES names) and offers the others again, and makes total
// the node's resources (the GPU count and accelerator types without the
// withdrawn GPUs). Work already running on a withdrawn GPU keeps running;
// nothing new is assigned to it, and what it frees there is not offered.
func (r *Raylet) SetGPUOffer(off []bool, total map[string]float64) {
	r.mu.Lock()
	old := r.totalLocked()
	delta := 0.0
	for i := range r.gpus.Len() {
		delta += r.gpus.SetWithdrawn(i, i < len(off) && off[i])
	}
	if delta != 0 {
		r.available["GPU"] += delta
	}
	for k, v := range total {
		if d := v - old[k]; k != "GPU" && d != 0 {
			r.available[k] += d
		}
	}
	for k, v := range old {
		if _, kept := total[k]; !kept && k != "GPU" {
			r.available[k] -= v
		}
	}
	r.offered = maps.Clone(total)
	r.mu.Unlock()
	r.kick()
}

// GPUsBusy reports which GPUs (by slot) have work assigned.
func (r *Raylet) GPUsBusy() []bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.gpus.Busy()
}

// totalLocked is the node's resources as offered now.
func (r *Raylet) totalLocked() map[string]float64 {
	if r.offered != nil {
		return r.offered
	}
	return r.cfg.Resources
}

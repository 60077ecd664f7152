package raylet

// SetGPUOffer withdraws the GPUs marked off (by slot, the ids
// CUDA_VISIBLE_DEVICES names) and offers the others again, and makes total
// the node's resources (the GPU count and accelerator types without the
// withdrawn GPUs). Work already running on a withdrawn GPU keeps running;
// nothing new is assigned to it, and what it frees there is not offered.
// A ledger shared with another raylet withdraws them for both.
func (r *Raylet) SetGPUOffer(off []bool, total map[string]float64) {
	r.mu.Lock()
	for k := range total {
		r.names[k] = true
	}
	r.mu.Unlock()
	r.res.SetOffer(off, total)
	r.kick()
}

// GPUsBusy reports which GPUs (by slot) have work assigned, by this raylet
// or another sharing its ledger.
func (r *Raylet) GPUsBusy() []bool { return r.res.GPUsBusy() }

package provider

import (
	"github.com/gray-cluster/gray/gpu/watch"
	"github.com/gray-cluster/gray/internal/nodewire"
	pb "github.com/gray-cluster/gray/proto/nodepb"
)

// startGPUs builds the raylet's view of the GPUs from the watcher: every
// GPU is a slot, and those that failed verification at start are withdrawn.
func (p *Provider) startGPUs() {
	w := p.cfg.GPUWatch
	if w == nil {
		return
	}
	st := w.Status()
	p.raylet.SetGPUOffer(st.Off, st.Total)
	p.mu.Lock()
	p.gpu = &st
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		w.Run(p.ctx, p.raylet.GPUsBusy, p.applyGPUs)
	}()
}

// applyGPUs offers what the watcher now finds (a GPU withdrawn or back, a
// new sample) and tells the head.
func (p *Provider) applyGPUs(st watch.Status) {
	p.raylet.SetGPUOffer(st.Off, st.Total)
	p.mu.Lock()
	p.gpu = &st
	p.mu.Unlock()
	p.sendEvent(&pb.NodeMessage{Msg: &pb.NodeMessage_GpuStatus{GpuStatus: p.gpuStatus()}})
}

// gpuStatus is the GPU status message; nil without GPUs.
func (p *Provider) gpuStatus() *pb.GpuStatus {
	p.mu.Lock()
	st := p.gpu
	p.mu.Unlock()
	if st == nil {
		return nil
	}
	return nodewire.GPUStatus(st.Total, watch.Labels(p.cfg.Labels, st.Labels), watch.Summary(st.Devices), st.Devices, st.Sampled)
}

// labels are the node's labels now (GPU verification labels updated).
func (p *Provider) labels() map[string]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.gpu == nil {
		return p.cfg.Labels
	}
	return watch.Labels(p.cfg.Labels, p.gpu.Labels)
}

// gpuSummary names the offered GPUs, like "7xH100 (1 withdrawn)".
func (p *Provider) gpuSummary() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.gpu == nil {
		return p.cfg.GPUs
	}
	return watch.Summary(p.gpu.Devices)
}

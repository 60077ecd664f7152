package nodeserver

import (
	"slices"

	"github.com/gray-cluster/gray/gpu"
	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/internal/nodewire"
	pb "github.com/gray-cluster/gray/proto/nodepb"
)

// gpuStatus applies a provider's GPU status: its resources without the
// withdrawn GPUs, its labels, and its GPUs' last sample.
func (s *Server) gpuStatus(r *remote, m *pb.GpuStatus) {
	total := valuesOf(m.Total)
	r.mu.Lock()
	r.total = total
	avail := make(map[string]float64, len(r.available))
	for k, v := range r.available {
		if t, ok := total[k]; ok {
			avail[k] = min(v, t) // until the provider reports again
		}
	}
	r.available = avail
	r.gpus = nodewire.GPUDevices(m)
	r.mu.Unlock()
	s.mu.Lock()
	nc := s.remotes[r.id]
	if nc != nil {
		nc.info.Labels, nc.info.GPUs = m.Labels, m.Gpus
	}
	s.mu.Unlock()
	s.cfg.Cluster.SetLabels(r.id, m.Labels, m.Gpus)
	if s.cfg.OnGPUStatus != nil {
		s.cfg.OnGPUStatus(r.id)
	}
}

// GPUs are a provider's GPUs as last sampled (withdrawn ones marked); nil
// for an unknown node or one without GPUs.
func (s *Server) GPUs(id ids.NodeID) []gpu.Device {
	s.mu.Lock()
	nc := s.remotes[id]
	s.mu.Unlock()
	if nc == nil {
		return nil
	}
	nc.r.mu.Lock()
	defer nc.r.mu.Unlock()
	return slices.Clone(nc.r.gpus)
}

package head

import (
	"context"
	"slices"
	"sync"

	"github.com/gray-cluster/gray/gpu"
	"github.com/gray-cluster/gray/gpu/watch"
	"github.com/gray-cluster/gray/internal/ids"
)

// localGPUs is the head machine's GPU status, kept by its watcher.
type localGPUs struct {
	mu sync.Mutex
	st *watch.Status
}

func (l *localGPUs) set(st watch.Status) {
	l.mu.Lock()
	l.st = &st
	l.mu.Unlock()
}

func (l *localGPUs) get() *watch.Status {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.st
}

// watchGPUs applies the watcher's start status to the head's raylet and
// keeps applying what it finds (GPUs withdrawn or back, samples).
func (h *Head) watchGPUs(ctx context.Context, w *watch.Watcher, node ids.NodeID) {
	if w == nil {
		return
	}
	apply := func(st watch.Status) {
		h.Raylet.SetGPUOffer(st.Off, st.Total)
		h.local.set(st)
		h.Cluster.SetLabels(node, watch.Labels(h.cfg.Labels, st.Labels), watch.Summary(st.Devices))
	}
	go w.Run(ctx, h.Raylet.GPUsBusy, apply)
}

// NodeGPUs are a node's GPUs as last sampled (withdrawn ones marked): the
// head's own or a provider's.
func (h *Head) NodeGPUs(id ids.NodeID) []gpu.Device {
	if h.Raylet != nil && id == h.Raylet.NodeID() {
		if st := h.local.get(); st != nil {
			return slices.Clone(st.Devices)
		}
		return slices.Clone(h.GPUs)
	}
	if h.Nodes != nil {
		return h.Nodes.GPUs(id)
	}
	return nil
}

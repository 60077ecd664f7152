package head

import (
	"context"
	"slices"
	"sync"

	"github.com/gray-cluster/gray/gpu"
	"github.com/gray-cluster/gray/gpu/watch"
	"github.com/gray-cluster/gray/internal/ids"
)

// localGPUs is the head machine's GPU status, kept by its watcher, and
// the signal that some node's GPU status changed.
type localGPUs struct {
	mu      sync.Mutex
	st      *watch.Status
	changed chan struct{}
}

func (l *localGPUs) set(st watch.Status) {
	l.mu.Lock()
	l.st = &st
	l.mu.Unlock()
}

// notify closes the current change channel.
func (l *localGPUs) notify() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.changed != nil {
		close(l.changed)
		l.changed = nil
	}
}

// wait returns a channel closed at the next change.
func (l *localGPUs) wait() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.changed == nil {
		l.changed = make(chan struct{})
	}
	return l.changed
}

// GPUsChanged returns a channel closed the next time a node's GPU status
// or sample arrives (the head's own or a provider's).
func (h *Head) GPUsChanged() <-chan struct{} { return h.local.wait() }

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
		h.local.notify()
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

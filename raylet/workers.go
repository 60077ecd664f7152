package raylet

import "sort"

// WorkerInfo describes one worker process.
type WorkerInfo struct {
	ID        string `json:"id"`
	PID       int    `json:"pid"`
	Idle      bool   `json:"idle"`
	Dedicated bool   `json:"dedicated"`
}

// Workers lists the pool's live worker processes.
func (r *Raylet) Workers() []WorkerInfo {
	if r.pool == nil {
		return nil
	}
	p := r.pool
	p.mu.Lock()
	defer p.mu.Unlock()
	idle := map[*workerProc]bool{}
	for _, list := range p.idle {
		for _, w := range list {
			idle[w] = true
		}
	}
	var out []WorkerInfo
	for _, w := range p.all {
		select {
		case <-w.ready:
		default:
			continue // still starting
		}
		w.mu.Lock()
		pid := w.pid
		w.mu.Unlock()
		out = append(out, WorkerInfo{ID: w.id, PID: pid, Idle: idle[w], Dedicated: w.dedicated})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

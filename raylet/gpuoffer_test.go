package raylet

import (
	"testing"

	"github.com/gray-cluster/gray/objectstore"
	"github.com/gray-cluster/gray/taskspec"
)

// grant dispatches a grant of res that runs nothing (as a placement
// group's reservation does) and returns it, granted or still queued.
func grant(r *Raylet, res map[string]float64) *task {
	t := &task{spec: &taskspec.TaskSpec{Resources: res}, state: stateQueued, onGrant: func() {}}
	r.mu.Lock()
	r.queue.push(t)
	r.mu.Unlock()
	r.dispatch()
	return t
}

func TestGPUOfferWithdrawsWithoutStoppingWorkAndRestores(t *testing.T) {
	base := map[string]float64{"CPU": 4, "GPU": 2, "accelerator_type:H100": 1}
	r, err := New(Config{Store: objectstore.New(1 << 20), Resources: base})
	if err != nil {
		t.Fatal(err)
	}
	a := grant(r, map[string]float64{"GPU": 1})
	if a.state != stateRunning || len(a.gpuIDs) != 1 || a.gpuIDs[0] != 0 {
		t.Fatalf("first grant: state %v ids %v", a.state, a.gpuIDs)
	}

	// GPU 0 (in use) fails verification: the running grant keeps it, the
	// node offers one GPU, and nothing new lands on GPU 0.
	r.SetGPUOffer([]bool{true, false}, map[string]float64{"CPU": 4, "GPU": 1, "accelerator_type:H100": 1})
	if got := r.Total()["GPU"]; got != 1 {
		t.Errorf("total GPU = %v, want 1", got)
	}
	if got := r.Available()["GPU"]; got != 1 {
		t.Errorf("available GPU = %v, want 1 (GPU 1 free)", got)
	}
	r.releaseResources(a)
	if got := r.Available()["GPU"]; got != 1 {
		t.Errorf("after the work on the withdrawn GPU ended: available GPU = %v, want 1", got)
	}
	b := grant(r, map[string]float64{"GPU": 1})
	if b.state != stateRunning || b.gpuIDs[0] != 1 {
		t.Fatalf("grant after withdrawal: state %v ids %v, want GPU 1", b.state, b.gpuIDs)
	}
	c := grant(r, map[string]float64{"GPU": 0.5})
	if c.state == stateRunning {
		t.Fatalf("a grant landed on the withdrawn GPU: ids %v", c.gpuIDs)
	}

	// Every GPU withdrawn: the accelerator type leaves too.
	r.SetGPUOffer([]bool{true, true}, map[string]float64{"CPU": 4})
	if _, ok := r.Available()["accelerator_type:H100"]; ok {
		t.Errorf("available still has the accelerator type: %v", r.Available())
	}
	if _, ok := r.Total()["GPU"]; ok {
		t.Errorf("total still has GPUs: %v", r.Total())
	}

	// Both pass again while GPU 1 is busy: one GPU is free at once, the
	// other when its work ends.
	r.SetGPUOffer([]bool{false, false}, base)
	if got := r.Available(); got["GPU"] != 1 || got["accelerator_type:H100"] != 1 || r.Total()["GPU"] != 2 {
		t.Errorf("restored: available %v total %v", got, r.Total())
	}
	r.releaseResources(b)
	r.dispatch() // the queued half GPU fits now
	if c.state != stateRunning {
		t.Fatal("the queued grant did not run on a restored GPU")
	}
	r.releaseResources(c)
	if got := r.Available(); got["GPU"] != 2 || got["CPU"] != 4 {
		t.Errorf("all work done: available %v, want 2 GPUs", got)
	}
}

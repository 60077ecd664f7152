package raylet

import (
	"context"
	"reflect"
	"testing"

	"github.com/gray-cluster/gray/objectstore"
	"github.com/gray-cluster/gray/resledger"
	"github.com/gray-cluster/gray/taskspec"
)

// TestSharedLedgerWaitsForTheOtherRaylet: a raylet on a ledger another
// raylet shares grants nothing the other holds, takes the GPU the other
// does not, and grants its queued work as soon as the other frees
// resources (told by the ledger, not by polling).
func TestSharedLedgerWaitsForTheOtherRaylet(t *testing.T) {
	total := map[string]float64{"CPU": 2, "GPU": 2}
	l := resledger.New(total, nil)
	native := l.Join("native")
	held, ok := native.Acquire(map[string]float64{"CPU": 2, "GPU": 1})
	if !ok {
		t.Fatal("native acquire")
	}
	r, err := New(Config{Store: objectstore.New(1 << 20), Resources: total, Ledger: l})
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Available(); !reflect.DeepEqual(got, map[string]float64{"CPU": 0, "GPU": 1}) {
		t.Fatalf("ray:// view %v, want the native grant counted", got)
	}
	gpuOnly := grant(r, map[string]float64{"GPU": 1})
	if gpuOnly.state != stateRunning || !reflect.DeepEqual(gpuOnly.gpuIDs, []int{1}) {
		t.Fatalf("GPU grant: state %v ids %v, want GPU 1 (native holds 0)", gpuOnly.state, gpuOnly.gpuIDs)
	}
	if busy := native.GPUsBusy(); !reflect.DeepEqual(busy, []bool{true, true}) {
		t.Fatalf("GPUs busy %v", busy)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r.ctx = ctx
	go r.dispatchLoop()
	granted := make(chan struct{})
	cpu := &task{spec: &taskspec.TaskSpec{Resources: map[string]float64{"CPU": 1}}, state: stateQueued, onGrant: func() { close(granted) }}
	r.mu.Lock()
	r.queue.push(cpu)
	r.mu.Unlock()
	r.dispatch()
	r.mu.Lock()
	state := cpu.state
	r.mu.Unlock()
	if state != stateQueued {
		t.Fatalf("granted a CPU the native raylet holds (state %v)", state)
	}
	native.Release(held)
	<-granted
	if got := native.Available()["CPU"]; got != 1 {
		t.Fatalf("native view of CPU %v after the ray:// grant, want 1", got)
	}
	r.releaseResources(cpu)
	r.releaseResources(gpuOnly)
	if got := native.Available(); !reflect.DeepEqual(got, total) {
		t.Fatalf("all released: %v, want %v", got, total)
	}
}

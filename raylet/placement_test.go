package raylet

import (
	"errors"
	"strings"
	"testing"

	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/objectstore"
	"github.com/gray-cluster/gray/taskspec"
)

func newTestRaylet(t *testing.T, res map[string]float64) *Raylet {
	t.Helper()
	r, err := New(Config{Store: objectstore.New(1 << 20), Resources: res})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestBundleReservations: a node reserves only the bundles it is given,
// all or none; work in the group draws from them; a release gives unused
// bundles back at once and in-use resources when the work ends.
func TestBundleReservations(t *testing.T) {
	r := newTestRaylet(t, map[string]float64{"CPU": 4})
	job := ids.JobFromInt(1)
	if err := r.ReserveBundles("pg", job, map[int]map[string]float64{1: {"CPU": 1}, 3: {"CPU": 2}}); err != nil {
		t.Fatalf("reserve: %v", err)
	}
	if got := r.Available()["CPU"]; got != 1 {
		t.Fatalf("available CPU %v after reserving 3, want 1", got)
	}
	// Bundles the node already holds are kept, not reserved twice.
	if err := r.ReserveBundles("pg", job, map[int]map[string]float64{1: {"CPU": 1}}); err != nil || r.Available()["CPU"] != 1 {
		t.Fatalf("reserving a held bundle again: %v, available %v", err, r.Available())
	}
	if err := r.ReserveBundles("other", job, map[int]map[string]float64{0: {"CPU": 2}}); !errors.Is(err, ErrBundlesUnavailable) {
		t.Fatalf("over-reserving: %v, want ErrBundlesUnavailable", err)
	}
	if got := r.Available()["CPU"]; got != 1 {
		t.Fatalf("a refused reservation took resources: available %v", got)
	}

	in := func(index int, cpus float64) *taskspec.TaskSpec {
		return &taskspec.TaskSpec{PlacementGroup: "pg", BundleIndex: index, Resources: map[string]float64{"CPU": cpus}}
	}
	if from, _ := r.grant(in(0, 1)); from != nil {
		t.Errorf("bundle 0 is not held here but a task was granted from %v", from)
	}
	big := in(-1, 2)
	from, a := r.grant(big)
	if b, ok := from.(bundle); !ok || b.Pool != r.pgs["pg"].avail[3] {
		t.Fatalf("any-bundle task for 2 CPU granted from %v, want bundle 3", from)
	}
	if from, _ := r.grant(in(3, 1)); from != nil {
		t.Errorf("bundle 3 is full but granted again")
	}
	if err := r.ReleaseBundles("pg"); err != nil {
		t.Fatal(err)
	}
	if got := r.Available()["CPU"]; got != 2 {
		t.Errorf("available CPU %v after release, want 2 (bundle 3 still in use)", got)
	}
	r.releaseTo(big, from, a)
	if got := r.Available()["CPU"]; got != 4 {
		t.Errorf("available CPU %v after the task ended, want 4", got)
	}
	if from, _ := r.grant(in(1, 1)); from != nil {
		t.Errorf("a released group still grants")
	}
}

// TestReleaseFailsQueuedTasks: tasks still queued in a released group fail
// with Ray's TaskPlacementGroupRemoved; others stay queued.
func TestReleaseFailsQueuedTasks(t *testing.T) {
	r := newTestRaylet(t, map[string]float64{"CPU": 1})
	job := ids.JobFromInt(1)
	if err := r.ReserveBundles("pg", job, map[int]map[string]float64{0: {"CPU": 1}}); err != nil {
		t.Fatal(err)
	}
	mk := func(pg string) *task {
		spec := &taskspec.TaskSpec{TaskID: ids.NewTaskID(ids.NilActorFor(job)), JobID: job, NumReturns: 1,
			PlacementGroup: pg, BundleIndex: -1, Resources: map[string]float64{"CPU": 2}}
		r.cfg.Store.(*objectstore.Store).Create(spec.ReturnIDs()[0], "driver")
		return &task{spec: spec, state: stateQueued, stop: make(chan struct{})}
	}
	in, out := mk("pg"), mk("")
	r.mu.Lock()
	r.queue.push(in)
	r.queue.push(out)
	r.tasks[in.spec.TaskID], r.tasks[out.spec.TaskID] = in, out
	r.mu.Unlock()
	if err := r.ReleaseBundles("pg"); err != nil {
		t.Fatal(err)
	}
	obj, err := r.store.Get(in.spec.ReturnIDs()[0])
	if err != nil || obj == nil || !obj.IsError {
		t.Fatalf("queued task of the group: %v, %v; want an error result", obj, err)
	}
	if !strings.Contains(string(obj.Chunks[0]), "TaskPlacementGroupRemoved") {
		t.Errorf("error %q, want TaskPlacementGroupRemoved", obj.Chunks[0])
	}
	if left := r.queue.remove(func(*task) bool { return true }); len(left) != 1 || left[0] != out {
		t.Errorf("queue %v, want only the task outside the group", left)
	}
}

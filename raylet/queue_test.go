package raylet

import (
	"fmt"
	"testing"

	"github.com/gray-cluster/gray/resledger"
	"github.com/gray-cluster/gray/taskspec"
)

func queuedTask(res map[string]float64) *task {
	return &task{spec: &taskspec.TaskSpec{Resources: res, BundleIndex: -1}}
}

// TestDispatchQueueOrder: grants go oldest first across classes, a class
// whose head does not fit is skipped without stopping the others, and
// cancelled tasks are dropped.
func TestDispatchQueueOrder(t *testing.T) {
	var q dispatchQueue
	cpu := func() *task { return queuedTask(map[string]float64{"CPU": 1}) }
	gpu := func() *task { return queuedTask(map[string]float64{"GPU": 1}) }
	a1, g1, a2, g2, a3 := cpu(), gpu(), cpu(), gpu(), cpu()
	a2.cancelled = true
	for _, tk := range []*task{a1, g1, a2, g2, a3} {
		q.push(tk)
	}
	if q.len() != 5 {
		t.Fatalf("len %d, want 5", q.len())
	}
	avail := resledger.NewPool(map[string]float64{"CPU": 1, "GPU": 2}, nil)
	var got []*task
	tries := 0
	q.pass(func(tk *task) bool {
		tries++
		if _, ok := avail.Allocate(tk.spec.Resources); !ok {
			return false
		}
		got = append(got, tk)
		return true
	})
	want := []*task{a1, g1, g2}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("granted %v, want %v", got, want)
	}
	// a1, g1, g2 taken; a3 refused once; a2 dropped without a try.
	if tries != 4 {
		t.Fatalf("%d tries, want 4", tries)
	}
	if q.len() != 1 {
		t.Fatalf("left %d, want 1 (a3)", q.len())
	}
}

// TestDispatchQueueDeepClassIsOneLook: a pass over a deep queue of one
// shape that does not fit looks at one task, not all of them.
func TestDispatchQueueDeepClassIsOneLook(t *testing.T) {
	var q dispatchQueue
	for range 10000 {
		q.push(queuedTask(map[string]float64{"CPU": 1}))
	}
	tries := 0
	q.pass(func(*task) bool { tries++; return false })
	if tries != 1 || q.len() != 10000 {
		t.Fatalf("tries %d len %d, want 1 and 10000", tries, q.len())
	}
}

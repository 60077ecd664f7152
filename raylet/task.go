package raylet

import (
	"fmt"
	"sort"
	"strings"

	"github.com/gray-cluster/gray/resledger"
	"github.com/gray-cluster/gray/taskspec"
)

type taskState int

const (
	stateWaitingDeps taskState = iota
	stateQueued
	stateRunning
	stateDone
)

// task is the raylet's record of a submitted task.
type task struct {
	spec      *taskspec.TaskSpec
	state     taskState
	attempt   int
	worker    *workerProc
	cancelled bool
	force     bool
	stop      chan struct{} // closed to stop waiting for deps
	// onGrant, when set, is called instead of running the task once its
	// resources are granted (actor creation holds them for its lifetime).
	onGrant func()
	// grantedFrom is the resource pool (node or bundle) it was granted
	// from, and alloc what it holds there.
	grantedFrom grantPool
	alloc       resledger.Allocation
	// gpuIDs are the GPUs assigned while it runs (the allocation's).
	gpuIDs []int
	// lease names the grant for metering when it is not a task attempt
	// (an actor incarnation: "actor-<id>:<n>").
	lease string
	// shape identifies what the task asks the dispatcher for (resources,
	// placement group bundle, GPU ids or not); computed once.
	shape string
}

// shapeKey returns the task's request shape: two tasks with the same shape
// fit, or do not, together.
func (t *task) shapeKey() string {
	if t.shape == "" {
		keys := make([]string, 0, len(t.spec.Resources))
		for k := range t.spec.Resources {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var b strings.Builder
		for _, k := range keys {
			fmt.Fprintf(&b, "%s=%g,", k, t.spec.Resources[k])
		}
		fmt.Fprintf(&b, "|%s|%d", t.spec.PlacementGroup, t.spec.BundleIndex)
		t.shape = b.String()
	}
	return t.shape
}

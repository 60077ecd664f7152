package raylet

import (
	"fmt"
	"sort"
	"strings"

	"github.com/gray-cluster/gray/internal/ids"
)

// TaskSpec is everything a raylet needs to run one normal task.
type TaskSpec struct {
	TaskID ids.TaskID
	JobID  ids.JobID
	Name   string
	// FunctionID is the object holding the pickled function.
	FunctionID ids.ObjectID
	// Args is the pickle of (args, kwargs), as the chunks it arrived in.
	Args [][]byte
	// Deps are top-level ref arguments: resolved to values before running.
	Deps []ids.ObjectID
	// Pins are all objects the task needs kept alive while it is pending.
	Pins []ids.ObjectID
	// SelfRefs maps client-side ref ids (hex) to object ids (hex) for
	// functions that refer to themselves.
	SelfRefs map[string]string
	// Baseline is the pickled decorator options, passed to self references.
	Baseline        []byte
	NumReturns      int
	Resources       map[string]float64
	MaxRetries      int
	RetryExceptions bool
	Env             RuntimeEnv
	// PlacementGroup (hex id) and BundleIndex (-1: any bundle) place the
	// task into a placement group's reserved resources.
	PlacementGroup string
	BundleIndex    int
	// Scheduling is where the head may place it (its raylet ignores it).
	Scheduling Scheduling
}

// Scheduling is a task's or actor's scheduling strategy, as Ray's
// scheduling_strategy and label_selector options give it.
type Scheduling struct {
	// Kind is "" (default hybrid policy), "SPREAD" or "NODE_AFFINITY".
	Kind   string
	NodeID string // hex, for NODE_AFFINITY
	Soft   bool
	// Labels is a label selector every candidate node must match.
	Labels map[string]string
}

// ReturnIDs are the ids of the task's return objects.
func (t *TaskSpec) ReturnIDs() []ids.ObjectID { return t.TaskID.ReturnIDs(t.NumReturns) }

// RuntimeEnv is the part of a Ray runtime_env a worker process is started with.
type RuntimeEnv struct {
	EnvVars map[string]string
	// WorkingDir is a local directory (already unpacked) or "".
	WorkingDir string
}

// Key groups workers that can be reused for one another's tasks.
func (e RuntimeEnv) Key() string {
	if len(e.EnvVars) == 0 && e.WorkingDir == "" {
		return ""
	}
	keys := make([]string, 0, len(e.EnvVars))
	for k := range e.EnvVars {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	s := "wd=" + e.WorkingDir
	for _, k := range keys {
		s += "\x00" + k + "=" + e.EnvVars[k]
	}
	return s
}

type taskState int

const (
	stateWaitingDeps taskState = iota
	stateQueued
	stateRunning
	stateDone
)

// task is the raylet's record of a submitted task.
type task struct {
	spec      *TaskSpec
	state     taskState
	attempt   int
	worker    *workerProc
	cancelled bool
	force     bool
	stop      chan struct{} // closed to stop waiting for deps
	// onGrant, when set, is called instead of running the task once its
	// resources are granted (actor creation holds them for its lifetime).
	onGrant func()
	// grantedFrom is the resource pool (node or bundle) it was granted from.
	grantedFrom map[string]float64
	// gpuIDs are the GPUs assigned while it runs; noGPUIDs marks grants
	// (placement group reservations) that take GPU counts but no ids.
	gpuIDs   []int
	noGPUIDs bool
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
		fmt.Fprintf(&b, "|%s|%d|%t", t.spec.PlacementGroup, t.spec.BundleIndex, t.noGPUIDs)
		t.shape = b.String()
	}
	return t.shape
}

// Package taskspec holds the specs of the work gray places and runs: normal
// tasks, actors and their method calls, placement group requests, with
// their scheduling strategy and runtime_env. The Ray Client front end
// builds them, the cluster places them, raylets (the head's and providers')
// run them, and the node protocol carries them.
package taskspec

import (
	"errors"
	"sort"
	"strconv"
	"time"

	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/pyenv"
)

// ErrRuntimeEnv is a runtime_env gray cannot set up: Ray Client callers get
// RuntimeEnvSetupError for it (package rayerr).
var ErrRuntimeEnv = errors.New("runtime_env")

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
	// PyModules are local directories (unpacked py_modules packages) put
	// first on the worker's sys.path, in order.
	PyModules []string
	// Python is the pip/uv environment the worker runs in (zero: the
	// node's interpreter); the raylet that runs the work builds it.
	Python pyenv.Spec
	// SetupTimeout bounds building Python (config.setup_timeout_seconds;
	// 0: the raylet's default, NoSetupTimeout: none). Not part of Key.
	SetupTimeout time.Duration
}

// NoSetupTimeout is setup_timeout_seconds=-1: no bound.
const NoSetupTimeout time.Duration = -1

// Key groups workers that can be reused for one another's tasks.
func (e RuntimeEnv) Key() string {
	if len(e.EnvVars) == 0 && e.WorkingDir == "" && len(e.PyModules) == 0 && e.Python.IsZero() {
		return ""
	}
	keys := make([]string, 0, len(e.EnvVars))
	for k := range e.EnvVars {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	// Quoted, so that no name or value can pose as another pair.
	s := "wd=" + strconv.Quote(e.WorkingDir)
	for _, k := range keys {
		s += "\x00" + strconv.Quote(k) + "=" + strconv.Quote(e.EnvVars[k])
	}
	for _, m := range e.PyModules {
		s += "\x01py_modules=" + strconv.Quote(m)
	}
	if py := e.Python.Encode(); py != "" {
		s += "\x01python=" + strconv.Quote(py)
	}
	return s
}

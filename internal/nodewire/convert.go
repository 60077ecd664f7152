// Package nodewire converts the raylet's task, actor and call specs to and
// from the head<->provider protocol messages (proto/gray_node.proto).
package nodewire

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/gray-cluster/gray/internal/ids"
	pb "github.com/gray-cluster/gray/proto/nodepb"
	"github.com/gray-cluster/gray/pyenv"
	"github.com/gray-cluster/gray/taskspec"
)

// ErrBadID is returned for an id of the wrong length.
var ErrBadID = errors.New("nodewire: malformed id")

// IDs encodes object ids.
func IDs(list []ids.ObjectID) [][]byte {
	out := make([][]byte, len(list))
	for i, id := range list {
		out[i] = id.Bytes()
	}
	return out
}

// ObjectIDs decodes object ids.
func ObjectIDs(raw [][]byte) ([]ids.ObjectID, error) {
	out := make([]ids.ObjectID, len(raw))
	for i, b := range raw {
		id, err := ids.ObjectFromBytes(b)
		if err != nil {
			return nil, fmt.Errorf("%w: object id: %v", ErrBadID, err)
		}
		out[i] = id
	}
	return out, nil
}

func env(e taskspec.RuntimeEnv) *pb.RuntimeEnv {
	timeout := e.SetupTimeout.Milliseconds()
	if e.SetupTimeout == taskspec.NoSetupTimeout {
		timeout = -1
	} else if e.SetupTimeout > 0 && timeout == 0 {
		timeout = 1 // under a millisecond: still a bound
	}
	return &pb.RuntimeEnv{EnvVars: e.EnvVars, WorkingDir: e.WorkingDir, PyModules: e.PyModules,
		PythonEnv: e.Python.Encode(), SetupTimeoutMs: timeout}
}

// fromEnv decodes a runtime env. A pip/uv spec this raylet cannot read
// (from a newer head) fails: running the work without it would ignore it.
func fromEnv(e *pb.RuntimeEnv) (taskspec.RuntimeEnv, error) {
	if e == nil {
		return taskspec.RuntimeEnv{}, nil
	}
	py, err := pyenv.Decode(e.PythonEnv)
	if err != nil {
		return taskspec.RuntimeEnv{}, fmt.Errorf("%w: %w", taskspec.ErrRuntimeEnv, err)
	}
	timeout := time.Duration(e.SetupTimeoutMs) * time.Millisecond
	if e.SetupTimeoutMs < 0 {
		timeout = taskspec.NoSetupTimeout
	}
	return taskspec.RuntimeEnv{EnvVars: maps.Clone(e.EnvVars), WorkingDir: e.WorkingDir,
		PyModules: slices.Clone(e.PyModules), Python: py, SetupTimeout: timeout}, nil
}

// Task encodes a task spec.
func Task(s *taskspec.TaskSpec) *pb.TaskSpec {
	return &pb.TaskSpec{
		TaskId: s.TaskID.Bytes(), JobId: s.JobID.Bytes(), Name: s.Name, FunctionId: s.FunctionID.Bytes(),
		Args: s.Args, Deps: IDs(s.Deps), Pins: IDs(s.Pins), SelfRefs: s.SelfRefs, Baseline: s.Baseline,
		NumReturns: int32(s.NumReturns), Resources: s.Resources, MaxRetries: int32(s.MaxRetries),
		RetryExceptions: s.RetryExceptions, Env: env(s.Env),
		Placement: &pb.Placement{PlacementGroup: s.PlacementGroup, BundleIndex: int32(s.BundleIndex)},
	}
}

// FromTask decodes a task spec.
func FromTask(m *pb.TaskSpec) (*taskspec.TaskSpec, error) {
	tid, err1 := ids.TaskFromBytes(m.TaskId)
	job, err2 := ids.JobFromBytes(m.JobId)
	fn, err3 := ids.ObjectFromBytes(m.FunctionId)
	deps, err4 := ObjectIDs(m.Deps)
	pins, err5 := ObjectIDs(m.Pins)
	if err := errors.Join(err1, err2, err3, err4, err5); err != nil {
		return nil, fmt.Errorf("%w: task: %v", ErrBadID, err)
	}
	env, err := fromEnv(m.Env)
	if err != nil {
		return nil, fmt.Errorf("task %s: %w", m.Name, err)
	}
	s := &taskspec.TaskSpec{
		TaskID: tid, JobID: job, Name: m.Name, FunctionID: fn, Args: m.Args, Deps: deps, Pins: pins,
		SelfRefs: m.SelfRefs, Baseline: m.Baseline, NumReturns: int(m.NumReturns), Resources: m.Resources,
		MaxRetries: int(m.MaxRetries), RetryExceptions: m.RetryExceptions, Env: env, BundleIndex: -1,
	}
	if m.Placement != nil {
		s.PlacementGroup, s.BundleIndex = m.Placement.PlacementGroup, int(m.Placement.BundleIndex)
	}
	return s, nil
}

// Actor encodes an actor spec.
func Actor(s *taskspec.ActorSpec) *pb.ActorSpec {
	groups := make(map[string]int32, len(s.ConcurrencyGroups))
	for k, v := range s.ConcurrencyGroups {
		groups[k] = int32(v)
	}
	return &pb.ActorSpec{
		ActorId: s.ActorID.Bytes(), JobId: s.JobID.Bytes(), Name: s.Name, ClassId: s.ClassID.Bytes(),
		Args: s.Args, Deps: IDs(s.Deps), Pins: IDs(s.Pins), SelfRefs: s.SelfRefs, Baseline: s.Baseline,
		Resources: s.Resources, MaxConcurrency: int32(s.MaxConcurrency), MaxRestarts: int32(s.MaxRestarts),
		MaxTaskRetries: int32(s.MaxTaskRetries), Env: env(s.Env),
		Placement:         &pb.Placement{PlacementGroup: s.PlacementGroup, BundleIndex: int32(s.BundleIndex)},
		ConcurrencyGroups: groups,
	}
}

// FromActor decodes an actor spec.
func FromActor(m *pb.ActorSpec) (*taskspec.ActorSpec, error) {
	aid, err1 := ids.ActorFromBytes(m.ActorId)
	job, err2 := ids.JobFromBytes(m.JobId)
	cls, err3 := ids.ObjectFromBytes(m.ClassId)
	deps, err4 := ObjectIDs(m.Deps)
	pins, err5 := ObjectIDs(m.Pins)
	if err := errors.Join(err1, err2, err3, err4, err5); err != nil {
		return nil, fmt.Errorf("%w: actor: %v", ErrBadID, err)
	}
	env, err := fromEnv(m.Env)
	if err != nil {
		return nil, fmt.Errorf("actor %s: %w", m.Name, err)
	}
	groups := make(map[string]int, len(m.ConcurrencyGroups))
	for k, v := range m.ConcurrencyGroups {
		groups[k] = int(v)
	}
	s := &taskspec.ActorSpec{
		ActorID: aid, JobID: job, Name: m.Name, ClassID: cls, Args: m.Args, Deps: deps, Pins: pins,
		SelfRefs: m.SelfRefs, Baseline: m.Baseline, Resources: m.Resources, MaxConcurrency: int(m.MaxConcurrency),
		MaxRestarts: int(m.MaxRestarts), MaxTaskRetries: int(m.MaxTaskRetries), Env: env,
		BundleIndex: -1, ConcurrencyGroups: groups,
	}
	if m.Placement != nil {
		s.PlacementGroup, s.BundleIndex = m.Placement.PlacementGroup, int(m.Placement.BundleIndex)
	}
	return s, nil
}

// Call encodes an actor call.
func Call(c *taskspec.ActorCall) *pb.ActorCall {
	return &pb.ActorCall{
		TaskId: c.TaskID.Bytes(), ActorId: c.ActorID.Bytes(), JobId: c.JobID.Bytes(), Method: c.Method,
		Args: c.Args, Deps: IDs(c.Deps), Pins: IDs(c.Pins), NumReturns: int32(c.NumReturns),
		ConcurrencyGroup: c.ConcurrencyGroup,
	}
}

// FromCall decodes an actor call.
func FromCall(m *pb.ActorCall) (*taskspec.ActorCall, error) {
	tid, err1 := ids.TaskFromBytes(m.TaskId)
	aid, err2 := ids.ActorFromBytes(m.ActorId)
	job, err3 := ids.JobFromBytes(m.JobId)
	deps, err4 := ObjectIDs(m.Deps)
	pins, err5 := ObjectIDs(m.Pins)
	if err := errors.Join(err1, err2, err3, err4, err5); err != nil {
		return nil, fmt.Errorf("%w: call: %v", ErrBadID, err)
	}
	return &taskspec.ActorCall{
		TaskID: tid, ActorID: aid, JobID: job, Method: m.Method, Args: m.Args, Deps: deps, Pins: pins,
		NumReturns: int(m.NumReturns), ConcurrencyGroup: m.ConcurrencyGroup,
	}, nil
}

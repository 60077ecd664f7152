// Package rayerr is gray's one table from what goes wrong in Go to the
// Python exception a stock Ray client raises for it. Every boundary that
// hands an error to a Ray client (the Ray Client front end, the raylet's
// task results, the cluster's recovery) builds its exception here, by
// constructor (the exception's module, name and argument order live in one
// place) or from a Go error through Of (the sentinel table).
//
// Native mode does not use it: stock core workers build their exceptions
// from Ray's own protobuf error types.
package rayerr

import (
	"context"
	"errors"
	"fmt"

	"github.com/gray-cluster/gray/internal/pickle"
	"github.com/gray-cluster/gray/objectstore"
	"github.com/gray-cluster/gray/pyenv"
	"github.com/gray-cluster/gray/taskspec"
)

// Exception is a Python exception to raise on a client: module.name(*args).
type Exception struct {
	Module, Name string
	Args         []any
}

func (e Exception) String() string { return e.Module + "." + e.Name }

// Pickle is the pickle that raises e when a client loads it. The names in
// this package always pickle; a failure is reported as a RaySystemError.
func (e Exception) Pickle() []byte {
	b, err := pickle.Call(e.Module, e.Name, e.Args...)
	if err != nil {
		b, _ = pickle.Call("ray.exceptions", "RaySystemError", fmt.Sprintf("%s: %v", e, err))
	}
	return b
}

func ray(name string, args ...any) Exception {
	return Exception{Module: "ray.exceptions", Name: name, Args: args}
}

func builtin(name string, args ...any) Exception {
	return Exception{Module: "builtins", Name: name, Args: args}
}

// Ray's exceptions, with the arguments their constructors take.

// TaskCancelled is ray.exceptions.TaskCancelledError (task id unknown).
func TaskCancelled() Exception { return ray("TaskCancelledError", nil) }

// ActorDied is ray.exceptions.ActorDiedError with Ray's default message.
func ActorDied() Exception { return ray("ActorDiedError") }

// ActorError is ray.exceptions.RayActorError with a message.
func ActorError(msg string) Exception { return ray("RayActorError", msg) }

// WorkerCrashed is ray.exceptions.WorkerCrashedError.
func WorkerCrashed() Exception { return ray("WorkerCrashedError") }

// NodeDied is ray.exceptions.NodeDiedError.
func NodeDied(msg string) Exception { return ray("NodeDiedError", msg) }

// PlacementGroupRemoved is ray.exceptions.TaskPlacementGroupRemoved.
func PlacementGroupRemoved() Exception { return ray("TaskPlacementGroupRemoved") }

// TaskUnschedulable is ray.exceptions.TaskUnschedulableError.
func TaskUnschedulable(msg string) Exception { return ray("TaskUnschedulableError", msg) }

// ObjectLost is ray.exceptions.ObjectLostError(object_ref_hex, owner_address, call_site).
func ObjectLost(ref string) Exception { return ray("ObjectLostError", ref, "", "") }

// GetTimeout is ray.exceptions.GetTimeoutError as ray.get raises it.
func GetTimeout() Exception {
	return ray("GetTimeoutError", "Get timed out: some object(s) not ready.")
}

// ObjectStoreFull is ray.exceptions.ObjectStoreFullError.
func ObjectStoreFull(msg string) Exception { return ray("ObjectStoreFullError", msg) }

// OutOfMemory is ray.exceptions.OutOfMemoryError.
func OutOfMemory(msg string) Exception { return ray("OutOfMemoryError", msg) }

// RuntimeEnvSetup is ray.exceptions.RuntimeEnvSetupError(error_message).
func RuntimeEnvSetup(msg string) Exception { return ray("RuntimeEnvSetupError", msg) }

// SystemError is ray.exceptions.RaySystemError.
func SystemError(msg string) Exception { return ray("RaySystemError", msg) }

// Python builtins the Ray Client raises for bad requests.

// ValueError is builtins.ValueError.
func ValueError(msg string) Exception { return builtin("ValueError", msg) }

// RuntimeError is builtins.RuntimeError.
func RuntimeError(msg string) Exception { return builtin("RuntimeError", msg) }

// NotImplemented is builtins.NotImplementedError.
func NotImplemented(msg string) Exception { return builtin("NotImplementedError", msg) }

// Plain is builtins.Exception, for the few places stock raises a bare one.
func Plain(msg string) Exception { return builtin("Exception", msg) }

// table maps Go sentinels to exceptions, first match wins.
var table = []struct {
	target error
	to     func(error) Exception
}{
	{objectstore.ErrFull, func(err error) Exception { return ObjectStoreFull(err.Error()) }},
	{objectstore.ErrNotFound, func(err error) Exception { return ObjectLost(err.Error()) }},
	{objectstore.ErrRestore, func(err error) Exception { return ObjectLost(err.Error()) }},
	{taskspec.ErrRuntimeEnv, func(err error) Exception { return RuntimeEnvSetup(err.Error()) }},
	{pyenv.ErrSpec, func(err error) Exception { return RuntimeEnvSetup(err.Error()) }},
	{pyenv.ErrBuild, func(err error) Exception { return RuntimeEnvSetup(err.Error()) }},
	{context.DeadlineExceeded, func(error) Exception { return GetTimeout() }},
}

// Of is the exception for err: the table's entry for the first sentinel err
// wraps, else fallback(err's message).
func Of(err error, fallback func(string) Exception) Exception {
	for _, e := range table {
		if errors.Is(err, e.target) {
			return e.to(err)
		}
	}
	return fallback(err.Error())
}

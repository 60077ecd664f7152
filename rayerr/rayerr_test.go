package rayerr

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/gray-cluster/gray/internal/pickle"
	"github.com/gray-cluster/gray/objectstore"
	"github.com/gray-cluster/gray/pyenv"
	"github.com/gray-cluster/gray/taskspec"
)

func TestOfFollowsTheTable(t *testing.T) {
	cases := []struct {
		err  error
		want string
	}{
		{fmt.Errorf("put: %w", objectstore.ErrFull), "ray.exceptions.ObjectStoreFullError"},
		{fmt.Errorf("get: %w: abc", objectstore.ErrNotFound), "ray.exceptions.ObjectLostError"},
		{fmt.Errorf("restore: %w", objectstore.ErrRestore), "ray.exceptions.ObjectLostError"},
		{fmt.Errorf("wait: %w", context.DeadlineExceeded), "ray.exceptions.GetTimeoutError"},
		{fmt.Errorf("env: %w", taskspec.ErrRuntimeEnv), "ray.exceptions.RuntimeEnvSetupError"},
		{fmt.Errorf("pip: %w", pyenv.ErrSpec), "ray.exceptions.RuntimeEnvSetupError"},
		{&pyenv.BuildError{Step: "pip install", Err: context.DeadlineExceeded}, "ray.exceptions.RuntimeEnvSetupError"},
		{errors.New("something else"), "builtins.ValueError"},
	}
	for _, c := range cases {
		if got := Of(c.err, ValueError).String(); got != c.want {
			t.Errorf("Of(%v) = %s, want %s", c.err, got, c.want)
		}
	}
}

func TestEveryConstructorPickles(t *testing.T) {
	all := []Exception{
		TaskCancelled(), ActorDied(), ActorError("x"), WorkerCrashed(), NodeDied("x"),
		PlacementGroupRemoved(), TaskUnschedulable("x"), ObjectLost("ab"), GetTimeout(),
		ObjectStoreFull("x"), OutOfMemory("x"), SystemError("x"), ValueError("x"),
		RuntimeError("x"), NotImplemented("x"), Plain("x"), RuntimeEnvSetup("x"),
	}
	for _, e := range all {
		b := e.Pickle()
		want, err := pickle.Call(e.Module, e.Name, e.Args...)
		if err != nil || string(b) != string(want) {
			t.Errorf("%s does not pickle as itself (%v)", e, err)
		}
	}
}

func TestBadNameFallsBackToSystemError(t *testing.T) {
	b := Exception{Module: "bad\nmodule", Name: "X"}.Pickle()
	if _, err := pickle.DecodeBytes(b); err != nil || len(b) == 0 {
		t.Fatalf("fallback pickle does not load: %v", err)
	}
	if !bytes.Contains(b, []byte("RaySystemError")) {
		t.Fatalf("fallback is not a RaySystemError: %q", b)
	}
}

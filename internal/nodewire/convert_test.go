package nodewire

import (
	"errors"
	"reflect"
	"testing"
	"time"

	pb "github.com/gray-cluster/gray/proto/nodepb"
	"github.com/gray-cluster/gray/pyenv"
	"github.com/gray-cluster/gray/taskspec"
)

func TestRuntimeEnvRoundTrip(t *testing.T) {
	for _, e := range []taskspec.RuntimeEnv{
		{},
		{EnvVars: map[string]string{"A": "1"}, WorkingDir: "/wd", PyModules: []string{"/m1", "/m2"},
			Python:       pyenv.Spec{Tool: pyenv.UV, Packages: []string{"six==1.16.0"}, Check: true, Options: []string{}},
			SetupTimeout: 1500 * time.Millisecond},
		{Python: pyenv.Spec{Tool: pyenv.Pip, Packages: []string{"six"}}, SetupTimeout: taskspec.NoSetupTimeout},
	} {
		got, err := fromEnv(env(e))
		if err != nil {
			t.Fatal(err)
		}
		if got.Key() != e.Key() || got.SetupTimeout != e.SetupTimeout || !reflect.DeepEqual(got.Python, e.Python) {
			t.Fatalf("round trip of %+v: %+v", e, got)
		}
	}
	if _, err := fromEnv(&pb.RuntimeEnv{PythonEnv: `{"tool":"conda","packages":["x"]}`}); !errors.Is(err, taskspec.ErrRuntimeEnv) {
		t.Fatalf("an unknown env tool: %v", err)
	}
}

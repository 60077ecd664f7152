package taskspec

import (
	"testing"

	"github.com/gray-cluster/gray/internal/ids"
)

func TestRuntimeEnvKeyGroupsEqualEnvironments(t *testing.T) {
	a := RuntimeEnv{EnvVars: map[string]string{"A": "1", "B": "2"}, WorkingDir: "/w"}
	b := RuntimeEnv{EnvVars: map[string]string{"B": "2", "A": "1"}, WorkingDir: "/w"}
	cases := []struct {
		x, y RuntimeEnv
		same bool
	}{
		{a, b, true}, // map order does not matter
		{RuntimeEnv{}, RuntimeEnv{EnvVars: map[string]string{}}, true},
		{a, RuntimeEnv{EnvVars: map[string]string{"A": "1", "B": "3"}, WorkingDir: "/w"}, false},
		{a, RuntimeEnv{EnvVars: a.EnvVars, WorkingDir: "/other"}, false},
		// A value cannot pose as another variable.
		{RuntimeEnv{EnvVars: map[string]string{"A": "1\x00B=2"}}, RuntimeEnv{EnvVars: map[string]string{"A": "1", "B": "2"}}, false},
	}
	for i, c := range cases {
		if got := c.x.Key() == c.y.Key(); got != c.same {
			t.Errorf("case %d: same key %v, want %v (%q vs %q)", i, got, c.same, c.x.Key(), c.y.Key())
		}
	}
	if (RuntimeEnv{}).Key() != "" {
		t.Error("the empty environment has a non-empty key")
	}
}

func TestReturnIDsFollowTheTaskID(t *testing.T) {
	tid := ids.NewTaskID(ids.NilActorFor(ids.JobFromInt(7)))
	ts := TaskSpec{TaskID: tid, NumReturns: 3}
	call := ActorCall{TaskID: tid, NumReturns: 3}
	got, want := ts.ReturnIDs(), tid.ReturnIDs(3)
	if len(got) != 3 || got[2] != want[2] || call.ReturnIDs()[0] != want[0] {
		t.Fatalf("return ids %v, want %v", got, want)
	}
}

package clientserver

import (
	"reflect"
	"testing"
)

func TestWithJobEnvLaysTheSessionOverTheJob(t *testing.T) {
	job := map[string]any{
		"working_dir": "gcs://_ray_pkg_job.zip",
		"env_vars":    map[string]any{"A": "job", "B": "job"},
	}
	for _, tc := range []struct {
		name    string
		session map[string]any
		want    map[string]any
	}{
		{"no session env: the job's", nil, job},
		{"session fields win, env_vars merge per variable",
			map[string]any{"working_dir": "gcs://_ray_pkg_own.zip", "env_vars": map[string]any{"B": "own", "C": "own"}},
			map[string]any{"working_dir": "gcs://_ray_pkg_own.zip", "env_vars": map[string]any{"A": "job", "B": "own", "C": "own"}}},
		{"session adds a field", map[string]any{"py_modules": []any{"x"}},
			map[string]any{"working_dir": "gcs://_ray_pkg_job.zip", "env_vars": job["env_vars"], "py_modules": []any{"x"}}},
	} {
		if got := withJobEnv(tc.session, job); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
	if got := withJobEnv(map[string]any{"a": 1}, nil); !reflect.DeepEqual(got, map[string]any{"a": 1}) {
		t.Errorf("no job env: %v", got)
	}
}

package clientserver

import (
	"strings"
	"testing"
	"time"

	"github.com/gray-cluster/gray/pyenv"
	"github.com/gray-cluster/gray/rayerr"
	"github.com/gray-cluster/gray/taskspec"
)

func TestResolveRuntimeEnv(t *testing.T) {
	s, _ := newTestServer(t)
	s.cfg.PackagesDir = t.TempDir()
	cases := []struct {
		name    string
		re      map[string]any
		check   func(t *testing.T, env taskspec.RuntimeEnv)
		wantErr string
	}{
		{name: "pip list", re: map[string]any{"pip": []any{"six==1.16.0"}, "excludes": []any{"*.log"}},
			check: func(t *testing.T, env taskspec.RuntimeEnv) {
				if env.Python.Tool != pyenv.Pip || strings.Join(env.Python.Packages, ",") != "six==1.16.0" {
					t.Fatalf("python %+v", env.Python)
				}
			}},
		{name: "uv dict with a timeout", re: map[string]any{"uv": map[string]any{"packages": []any{"six"}, "uv_check": true},
			"config": map[string]any{"setup_timeout_seconds": int64(30), "eager_install": true}},
			check: func(t *testing.T, env taskspec.RuntimeEnv) {
				if env.Python.Tool != pyenv.UV || !env.Python.Check || env.SetupTimeout != 30*time.Second {
					t.Fatalf("env %+v", env)
				}
			}},
		{name: "no timeout", re: map[string]any{"config": map[string]any{"setup_timeout_seconds": int64(-1)}},
			check: func(t *testing.T, env taskspec.RuntimeEnv) {
				if env.SetupTimeout != taskspec.NoSetupTimeout {
					t.Fatalf("timeout %v", env.SetupTimeout)
				}
			}},
		{name: "null fields are absent", re: map[string]any{"conda": nil, "pip": nil, "working_dir": nil},
			check: func(t *testing.T, env taskspec.RuntimeEnv) {
				if env.Key() != "" {
					t.Fatalf("key %q", env.Key())
				}
			}},
		{name: "unknown fields are named", re: map[string]any{"conda": "env", "image_uri": "x"}, wantErr: "not conda, image_uri"},
		{name: "pip and uv", re: map[string]any{"pip": []any{"a"}, "uv": []any{"a"}}, wantErr: "cannot both be specified"},
		{name: "bad config key", re: map[string]any{"config": map[string]any{"timeout": 1.0}}, wantErr: "not timeout"},
		{name: "zero timeout", re: map[string]any{"config": map[string]any{"setup_timeout_seconds": 0.0}}, wantErr: "positive or -1"},
		{name: "remote py_modules", re: map[string]any{"py_modules": []any{"s3://b/m.zip"}}, wantErr: "only packages uploaded by the client"},
		{name: "wheel py_modules", re: map[string]any{"py_modules": []any{"gcs://_ray_pkg_x.whl"}}, wantErr: "only .zip packages"},
		{name: "missing package", re: map[string]any{"py_modules": []any{"gcs://_ray_pkg_gone.zip"}}, wantErr: "was not uploaded"},
		{name: "env var not a string", re: map[string]any{"env_vars": map[string]any{"A": int64(1)}}, wantErr: "must be a string"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			env, err := s.resolveRuntimeEnv("", c.re)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err = %v, want %q", err, c.wantErr)
				}
				if got := rayerr.Of(err, rayerr.ValueError).Name; got != "RuntimeEnvSetupError" {
					t.Fatalf("%v raises %s", err, got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			c.check(t, env)
		})
	}
}

func TestMergeEnv(t *testing.T) {
	job := taskspec.RuntimeEnv{EnvVars: map[string]string{"A": "job", "B": "job"}, WorkingDir: "/wd",
		PyModules: []string{"/m1"}, Python: pyenv.Spec{Tool: pyenv.Pip, Packages: []string{"six"}}}
	task := taskspec.RuntimeEnv{EnvVars: map[string]string{"B": "task"}, Python: pyenv.Spec{Tool: pyenv.UV, Packages: []string{"six"}},
		SetupTimeout: time.Second}
	got := mergeEnv(job, task)
	if got.EnvVars["A"] != "job" || got.EnvVars["B"] != "task" || got.WorkingDir != "/wd" ||
		strings.Join(got.PyModules, ",") != "/m1" || got.Python.Tool != pyenv.UV || got.SetupTimeout != time.Second {
		t.Fatalf("merged %+v", got)
	}
	if job.EnvVars["B"] != "job" {
		t.Fatal("merging changed the job's env")
	}
	if mergeEnv(job, taskspec.RuntimeEnv{}).Python.Tool != pyenv.Pip {
		t.Fatal("a task without pip dropped the job's")
	}
}

package nodemanager

import (
	"errors"
	"strings"
	"testing"

	commonpb "github.com/gray-cluster/gray/proto/ray/commonpb"
)

func leaseWithEnv(s string) *commonpb.LeaseSpec {
	return &commonpb.LeaseSpec{RuntimeEnvInfo: &commonpb.RuntimeEnvInfo{SerializedRuntimeEnv: s}}
}

func TestParseRuntimeEnv(t *testing.T) {
	for _, tc := range []struct {
		in      string
		vars    []string
		errWith string
	}{
		{in: ""},
		{in: "{}"},
		{in: `{"env_vars": {}}`},
		{in: `{"env_vars": {"B": "2", "A": "1"}}`, vars: []string{"A=1", "B=2"}},
		{in: `{"env_vars": {"A": "x=y"}, "config": {"setup_timeout_seconds": 600}}`, vars: []string{"A=x=y"}},
		{in: `{"working_dir": "gcs://x.zip", "pip": ["a"], "conda": "env"}`, errWith: "not conda (runtime_env"},
		{in: `{"pip": ["a"], "uv": ["a"]}`, errWith: "cannot both be specified"},
		{in: `{"pip": {"packages": ["a"], "conda_check": true}}`, errWith: "can only have these fields"},
		{in: `{"pip": "requirements.txt"}`, errWith: "requirements file path"},
		{in: `{"container": {"image": "x"}}`, errWith: "not container"},
		{in: `{"image_uri": "x"}`, errWith: "not image_uri"},
		{in: `{"working_dir": "s3://bucket/pkg.zip"}`, errWith: "working_dir \"s3://bucket/pkg.zip\": gray's native raylet does not download s3://"},
		{in: `{"py_modules": ["https://example.com/m.zip"]}`, errWith: "py_modules \"https://example.com/m.zip\": gray's native raylet does not download https://"},
		{in: `{"py_modules": ["gcs://m-1.0-py3-none-any.whl"]}`, errWith: "only .zip packages"},
		{in: `{"working_dir": "."}`, errWith: "is not a URI"},
		{in: `{"working_dir": "local://rel/dir"}`, errWith: "absolute directory"},
		{in: `{"working_dir": 3}`, errWith: "working_dir must be a URI string"},
		{in: `{"py_modules": "gcs://m.zip"}`, errWith: "py_modules must be a list"},
		{in: `{"working_dir": null, "excludes": ["*.log"], "_ray_commit": "abc", "config": {"eager_install": true}}`},
		{in: `{"env_vars": {"A": 1}}`, errWith: "env_vars must map strings"},
		{in: `{"env_vars": {"A=B": "1"}}`, errWith: "bad environment variable"},
		{in: `not json`, errWith: "malformed runtime_env"},
	} {
		env, err := parseRuntimeEnv(leaseWithEnv(tc.in))
		if tc.errWith != "" {
			if !errors.Is(err, ErrRuntimeEnv) || !strings.Contains(err.Error(), tc.errWith) {
				t.Errorf("%s: err %v, want one with %q", tc.in, err, tc.errWith)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.in, err)
			continue
		}
		if strings.Join(env.vars, ",") != strings.Join(tc.vars, ",") {
			t.Errorf("%s: vars %v, want %v", tc.in, env.vars, tc.vars)
		}
		if (env.key == "") != (len(tc.vars) == 0) || (env.hash == 0) != (len(tc.vars) == 0) {
			t.Errorf("%s: key %q hash %d", tc.in, env.key, env.hash)
		}
	}
	a, _ := parseRuntimeEnv(leaseWithEnv(`{"env_vars": {"A": "1", "B": "2"}}`))
	b, _ := parseRuntimeEnv(leaseWithEnv(`{"env_vars": {"B": "2", "A": "1"}}`))
	c, _ := parseRuntimeEnv(leaseWithEnv(`{"env_vars": {"A": "1"}}`))
	if a.key != b.key || a.hash != b.hash {
		t.Error("the same variables in another order are another env")
	}
	if a.key == c.key {
		t.Error("different variables share a pool")
	}
}

func TestParseRuntimeEnvPythonEnv(t *testing.T) {
	// As the stock driver's validation writes pip and uv.
	pip, err := parseRuntimeEnv(leaseWithEnv(`{"pip": {"packages": ["six==1.16.0"], "pip_check": false}}`))
	if err != nil {
		t.Fatal(err)
	}
	if pip.pyEnv.Tool != "pip" || strings.Join(pip.pyEnv.Packages, ",") != "six==1.16.0" || !pip.needsPackages() {
		t.Fatalf("parsed %+v", pip)
	}
	uv, err := parseRuntimeEnv(leaseWithEnv(`{"uv": {"packages": ["six==1.16.0"], "uv_check": false, "uv_pip_install_options": ["--no-cache"]}}`))
	if err != nil {
		t.Fatal(err)
	}
	if uv.pyEnv.Tool != "uv" || pip.key == "" || pip.hash == 0 || uv.key == pip.key {
		t.Fatalf("pip %+v uv %+v: want distinct pools", pip, uv)
	}
	none, err := parseRuntimeEnv(leaseWithEnv(`{"pip": []}`))
	if err != nil || none.key != "" || none.needsPackages() {
		t.Fatalf("an empty pip list is no env: %+v %v", none, err)
	}
}

func TestParseRuntimeEnvPackages(t *testing.T) {
	env, err := parseRuntimeEnv(leaseWithEnv(`{"working_dir": "gcs://_ray_pkg_aa.zip", "py_modules": ["gcs://_ray_pkg_bb.zip", "local:///opt/mods"], "excludes": ["x"], "config": {"setup_timeout_seconds": 600, "eager_install": true}}`))
	if err != nil {
		t.Fatal(err)
	}
	if env.workingDir != "gcs://_ray_pkg_aa.zip" || strings.Join(env.pyModules, ",") != "gcs://_ray_pkg_bb.zip,local:///opt/mods" {
		t.Fatalf("parsed %+v", env)
	}
	if env.key == "" || env.hash == 0 || !env.needsPackages() {
		t.Fatalf("a working_dir env has no pool key: %+v", env)
	}
	keys := map[string]string{}
	for _, s := range []string{
		`{"working_dir": "gcs://_ray_pkg_aa.zip"}`,
		`{"working_dir": "gcs://_ray_pkg_ab.zip"}`,
		`{"py_modules": ["gcs://_ray_pkg_aa.zip"]}`,
		`{"py_modules": ["gcs://_ray_pkg_aa.zip", "gcs://_ray_pkg_ab.zip"]}`,
		`{"working_dir": "gcs://_ray_pkg_aa.zip", "env_vars": {"A": "1"}}`,
		`{"env_vars": {"A": "1"}}`,
	} {
		e, err := parseRuntimeEnv(leaseWithEnv(s))
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		if prev, dup := keys[e.key]; dup {
			t.Errorf("%s and %s share a worker pool", prev, s)
		}
		keys[e.key] = s
	}
	// Fields that do not change the worker (excludes, config) do not split pools.
	a, _ := parseRuntimeEnv(leaseWithEnv(`{"working_dir": "gcs://_ray_pkg_aa.zip"}`))
	b, _ := parseRuntimeEnv(leaseWithEnv(`{"working_dir": "gcs://_ray_pkg_aa.zip", "excludes": ["*.log"], "config": {"setup_timeout_seconds": 600}}`))
	if a.key != b.key || a.hash != b.hash {
		t.Error("excludes/config split the pool")
	}
}

func TestWorkerPythonPath(t *testing.T) {
	env := runtimeEnv{vars: []string{"A=1", "PYTHONPATH=/from/env_vars"}, pythonPath: []string{"/mods/a", "/wd"}}
	got, ok := workerPythonPath(env, []string{"PYTHONPATH=/old", "HOME=/h", "PYTHONPATH=/cluster"})
	if !ok || got != "/mods/a:/wd:/from/env_vars:/cluster" {
		t.Errorf("PYTHONPATH %q", got)
	}
	got, _ = workerPythonPath(runtimeEnv{pythonPath: []string{"/wd"}}, nil)
	if got != "/wd" {
		t.Errorf("PYTHONPATH %q", got)
	}
	if _, ok := workerPythonPath(runtimeEnv{vars: []string{"PYTHONPATH=/x"}}, nil); ok {
		t.Error("an env without packages rewrote PYTHONPATH (its env_vars already set it)")
	}
}

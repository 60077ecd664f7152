package clientserver

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/gray-cluster/gray/pyenv"
	"github.com/gray-cluster/gray/taskspec"
)

// runtimeEnvFields are the runtime_env fields the front end sets up:
// env_vars; working_dir and py_modules (packages the client uploaded);
// pip and uv (environments the raylet builds, package pyenv); config
// (setup_timeout_seconds bounds the build); excludes, which the client
// applied when it zipped the directories. The _ray_* keys only tell
// Ray's own pip set-up which ray the driver runs. Any other field is
// refused with RuntimeEnvSetupError naming it.
var runtimeEnvFields = map[string]bool{
	"env_vars": true, "working_dir": true, "py_modules": true, "pip": true, "uv": true,
	"config": true, "excludes": true,
	"_ray_release": true, "_ray_commit": true, "_inject_current_ray": true,
}

// configFields are the keys of runtime_env["config"] (Ray's RuntimeEnvConfig).
var configFields = map[string]bool{"setup_timeout_seconds": true, "eager_install": true, "log_files": true}

// resolveRuntimeEnv reads a runtime_env dict: its env_vars, working_dir
// and py_modules (unpacked from the uploaded packages in the KV of account,
// see kvscope.go), its pip or uv environment and config's set-up timeout.
// Errors wrap taskspec.ErrRuntimeEnv or pyenv.ErrSpec: the client gets
// RuntimeEnvSetupError.
func (s *Server) resolveRuntimeEnv(account string, re map[string]any) (taskspec.RuntimeEnv, error) {
	env := taskspec.RuntimeEnv{EnvVars: map[string]string{}}
	var unsupported []string
	for k, v := range re {
		if !runtimeEnvFields[k] && v != nil {
			unsupported = append(unsupported, k)
		}
	}
	if len(unsupported) > 0 {
		sort.Strings(unsupported)
		return env, fmt.Errorf("%w: gray sets up env_vars, working_dir, py_modules, pip, uv, config and excludes, not %s",
			taskspec.ErrRuntimeEnv, strings.Join(unsupported, ", "))
	}
	if raw, ok := re["env_vars"]; ok && raw != nil {
		vars, ok := asDict(raw)
		if !ok {
			return env, fmt.Errorf("%w: env_vars must be a dict of strings, got %T", taskspec.ErrRuntimeEnv, raw)
		}
		for k, v := range vars {
			str, ok := v.(string)
			if !ok {
				return env, fmt.Errorf("%w: runtime_env env_vars[%q] must be a string, got %T", taskspec.ErrRuntimeEnv, k, v)
			}
			env.EnvVars[k] = str
		}
	}
	if raw, ok := re["working_dir"]; ok && raw != nil {
		wd, ok := raw.(string)
		if !ok {
			return env, fmt.Errorf("%w: working_dir must be a string, got %T", taskspec.ErrRuntimeEnv, raw)
		}
		if wd != "" {
			dir, err := s.uploadedPackage(account, "working_dir", wd)
			if err != nil {
				return env, err
			}
			env.WorkingDir = dir
		}
	}
	if raw, ok := re["py_modules"]; ok && raw != nil {
		list, ok := raw.([]any)
		if !ok {
			return env, fmt.Errorf("%w: py_modules must be a list, got %T", taskspec.ErrRuntimeEnv, raw)
		}
		for _, m := range list {
			uri, ok := m.(string)
			if !ok {
				return env, fmt.Errorf("%w: py_modules entries must be strings, got %T", taskspec.ErrRuntimeEnv, m)
			}
			dir, err := s.uploadedPackage(account, "py_modules", uri)
			if err != nil {
				return env, err
			}
			env.PyModules = append(env.PyModules, dir)
		}
	}
	py, err := pyenv.FromRuntimeEnv(re["pip"], re["uv"])
	if err != nil {
		return env, err
	}
	env.Python = py
	if raw, ok := re["config"]; ok && raw != nil {
		t, err := setupTimeout(raw)
		if err != nil {
			return env, err
		}
		env.SetupTimeout = t
	}
	return env, nil
}

// uploadedPackage is the local directory of a package URI the client
// uploaded (a gcs:// zip); other URIs and local paths are refused.
func (s *Server) uploadedPackage(account, field, uri string) (string, error) {
	if !strings.HasPrefix(uri, "gcs://") {
		return "", fmt.Errorf("%w: runtime_env %s %q: only packages uploaded by the client are supported (the Ray Client uploads local directories given to ray.init(runtime_env=...))",
			taskspec.ErrRuntimeEnv, field, uri)
	}
	if !strings.HasSuffix(uri, ".zip") {
		return "", fmt.Errorf("%w: runtime_env %s %q: gray unpacks only .zip packages (not wheels)", taskspec.ErrRuntimeEnv, field, uri)
	}
	dir, err := s.unpackPackage(account, uri)
	if err != nil {
		return "", fmt.Errorf("%w: %s: %w", taskspec.ErrRuntimeEnv, field, err)
	}
	return dir, nil
}

// setupTimeout reads config.setup_timeout_seconds: positive seconds, or
// -1 for none (0 here); absent is 0, the raylet's default.
func setupTimeout(raw any) (time.Duration, error) {
	cfg, ok := asDict(raw)
	if !ok {
		return 0, fmt.Errorf("%w: config must be a dict, got %T", taskspec.ErrRuntimeEnv, raw)
	}
	var bad []string
	for k := range cfg {
		if !configFields[k] {
			bad = append(bad, k)
		}
	}
	if len(bad) > 0 {
		sort.Strings(bad)
		return 0, fmt.Errorf("%w: config can only have setup_timeout_seconds, eager_install and log_files, not %s",
			taskspec.ErrRuntimeEnv, strings.Join(bad, ", "))
	}
	v, ok := cfg["setup_timeout_seconds"]
	if !ok || v == nil {
		return 0, nil
	}
	f, ok := toFloat(v)
	switch {
	case !ok || math.IsNaN(f):
		return 0, fmt.Errorf("%w: config.setup_timeout_seconds must be a number, got %T", taskspec.ErrRuntimeEnv, v)
	case f == -1:
		return taskspec.NoSetupTimeout, nil
	case f <= 0:
		return 0, fmt.Errorf("%w: config.setup_timeout_seconds must be positive or -1, not %v", taskspec.ErrRuntimeEnv, f)
	}
	return time.Duration(f * float64(time.Second)), nil
}

// mergeEnv lays a task's runtime_env over its job's, as Ray merges them:
// env_vars key by key, every other field the task sets replaces the job's.
func mergeEnv(job, task taskspec.RuntimeEnv) taskspec.RuntimeEnv {
	out := job
	out.EnvVars = maps.Clone(job.EnvVars)
	if out.EnvVars == nil {
		out.EnvVars = map[string]string{}
	}
	maps.Copy(out.EnvVars, task.EnvVars)
	if task.WorkingDir != "" {
		out.WorkingDir = task.WorkingDir
	}
	if task.PyModules != nil {
		out.PyModules = slices.Clone(task.PyModules)
	}
	if !task.Python.IsZero() {
		out.Python = task.Python
	}
	if task.SetupTimeout != 0 {
		out.SetupTimeout = task.SetupTimeout
	}
	return out
}

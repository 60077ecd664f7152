package jobs

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gray-cluster/gray/internal/pkgzip"
	"github.com/gray-cluster/gray/pyenv"
)

// ErrRuntimeEnv is a runtime_env the head cannot set up for an entrypoint;
// the job ends FAILED with RUNTIME_ENV_SETUP_FAILURE.
var ErrRuntimeEnv = errors.New("runtime_env")

// PackageSource reads a runtime_env package's bytes by its gcs:// URI (the
// head's internal KV, key = the full URI, default namespace).
type PackageSource func(ctx context.Context, account, uri string) ([]byte, error)

// fetch reads one package (PackageSource bound to a job's account).
type fetch func(ctx context.Context, uri string) ([]byte, error)

// supportedFields are the runtime_env fields gray sets up or may ignore,
// as the native raylet accepts them: env_vars, working_dir and py_modules
// (gcs:// and local:// URIs); pip and uv (a virtualenv the entrypoint's
// `python` runs, package pyenv); config only tunes set-up; excludes was
// applied by the client when it zipped the directory; the _ray_* keys
// only tell Ray's own pip set-up which ray the driver runs.
var supportedFields = map[string]bool{
	"env_vars": true, "config": true, "working_dir": true, "py_modules": true, "excludes": true,
	"pip": true, "uv": true,
	"_ray_release": true, "_ray_commit": true, "_inject_current_ray": true,
}

// jobEnv is a runtime_env as the entrypoint needs it.
type jobEnv struct {
	workingDir string   // URI
	pyModules  []string // URIs
	envVars    map[string]string
	pyEnv      pyenv.Spec // pip / uv (zero: none)
	// python is the built pip/uv environment's interpreter ("" = the pool's).
	python string
}

// parseRuntimeEnv checks a submitted runtime_env; fields that need what
// gray does not set up (conda, container, image_uri, remote URIs, ...)
// are refused naming the field.
func parseRuntimeEnv(re map[string]any) (jobEnv, error) {
	var env jobEnv
	var unsupported []string
	for k, v := range re {
		if !supportedFields[k] && v != nil {
			unsupported = append(unsupported, k)
		}
	}
	if len(unsupported) > 0 {
		sort.Strings(unsupported)
		return env, fmt.Errorf("%w: gray sets up env_vars, working_dir, py_modules (gcs:// packages the client uploads, and local:// directories), pip and uv, not %s",
			ErrRuntimeEnv, strings.Join(unsupported, ", "))
	}
	if v, ok := re["env_vars"]; ok && v != nil {
		vars, ok := v.(map[string]any)
		if !ok {
			return env, fmt.Errorf("%w: env_vars must be a dict of strings, got %T", ErrRuntimeEnv, v)
		}
		env.envVars = make(map[string]string, len(vars))
		for k, val := range vars {
			s, ok := val.(string)
			if !ok {
				return env, fmt.Errorf("%w: env_vars[%q] must be a string, got %T", ErrRuntimeEnv, k, val)
			}
			env.envVars[k] = s
		}
	}
	py, err := pyenv.FromRuntimeEnv(re["pip"], re["uv"])
	if err != nil {
		return env, fmt.Errorf("%w: %w", ErrRuntimeEnv, err)
	}
	env.pyEnv = py
	if v, ok := re["working_dir"]; ok && v != nil {
		s, ok := v.(string)
		if !ok {
			return env, fmt.Errorf("%w: working_dir must be a URI string, got %T", ErrRuntimeEnv, v)
		}
		if err := checkURI("working_dir", s); err != nil {
			return env, err
		}
		env.workingDir = s
	}
	if v, ok := re["py_modules"]; ok && v != nil {
		list, ok := v.([]any)
		if !ok {
			return env, fmt.Errorf("%w: py_modules must be a list of URIs, got %T", ErrRuntimeEnv, v)
		}
		for _, item := range list {
			s, ok := item.(string)
			if !ok {
				return env, fmt.Errorf("%w: py_modules entries must be URI strings, got %T", ErrRuntimeEnv, item)
			}
			if err := checkURI("py_modules", s); err != nil {
				return env, err
			}
			env.pyModules = append(env.pyModules, s)
		}
	}
	return env, nil
}

// checkURI accepts a gcs://*.zip package or a local:///abs/dir.
func checkURI(field, uri string) error {
	u, err := url.Parse(uri)
	if err != nil || u.Scheme == "" {
		return fmt.Errorf("%w: %s %q is not a URI (the job client uploads local directories as gcs:// packages)", ErrRuntimeEnv, field, uri)
	}
	switch u.Scheme {
	case "gcs":
		name := u.Host + u.Path
		if !strings.HasSuffix(name, ".zip") || strings.ContainsAny(name, "/\\") || strings.Contains(name, "..") {
			return fmt.Errorf("%w: %s %s: gray unpacks uploaded .zip packages only (not wheels or tarballs)", ErrRuntimeEnv, field, uri)
		}
		return nil
	case "local":
		if !filepath.IsAbs(u.Path) {
			return fmt.Errorf("%w: %s %s: a local:// URI needs an absolute path", ErrRuntimeEnv, field, uri)
		}
		return nil
	}
	return fmt.Errorf("%w: %s %s: gray does not fetch %s:// packages; give a local directory, which the client uploads", ErrRuntimeEnv, field, uri, u.Scheme)
}

// setUp unpacks the job's packages under dir and returns the entrypoint's
// working directory and PYTHONPATH entries (working_dir first).
func setUp(ctx context.Context, src fetch, env jobEnv, dir string) (cwd string, path []string, err error) {
	cwd = dir
	if env.workingDir != "" {
		cwd, err = unpack(ctx, src, env.workingDir, filepath.Join(dir, "working_dir"))
		if err != nil {
			return "", nil, fmt.Errorf("working_dir: %w", err)
		}
		path = append(path, cwd)
	}
	for i, uri := range env.pyModules {
		d, err := unpack(ctx, src, uri, filepath.Join(dir, "py_modules", strconv.Itoa(i)))
		if err != nil {
			return "", nil, fmt.Errorf("py_modules: %w", err)
		}
		path = append(path, d)
	}
	return cwd, path, nil
}

// unpack makes a package's files available at target (a local:// URI is
// used where it is).
func unpack(ctx context.Context, src fetch, uri, target string) (string, error) {
	u, err := url.Parse(uri)
	if err != nil {
		return "", fmt.Errorf("%w: %s: %v", ErrRuntimeEnv, uri, err)
	}
	if u.Scheme == "local" {
		if st, err := os.Stat(u.Path); err != nil || !st.IsDir() {
			return "", fmt.Errorf("%w: %s: %s is not a directory on the head", ErrRuntimeEnv, uri, u.Path)
		}
		return u.Path, nil
	}
	if src == nil {
		return "", fmt.Errorf("%w: %s: no package store", ErrRuntimeEnv, uri)
	}
	data, err := src(ctx, uri)
	if err != nil {
		return "", fmt.Errorf("%w: %s: %w", ErrRuntimeEnv, uri, err)
	}
	if err := os.MkdirAll(target, 0o755); err != nil {
		return "", err
	}
	if err := pkgzip.Unzip(data, target, pkgzip.DefaultMaxUnpackedBytes, pkgzip.DefaultMaxEntries); err != nil {
		return "", fmt.Errorf("%w: %s: %w", ErrRuntimeEnv, uri, err)
	}
	return target, nil
}

// buildPython builds the job's pip/uv environment (once per head, shared
// with the head raylet's tasks) and records its interpreter in env; pip's
// output goes to the job's log.
func (m *Manager) buildPython(ctx context.Context, env *jobEnv, logPath string) error {
	if env.pyEnv.IsZero() {
		return nil
	}
	if m.cfg.PythonEnvs == nil {
		return fmt.Errorf("%w: this head builds no pip/uv environments", ErrRuntimeEnv)
	}
	ctx, cancel := context.WithTimeout(ctx, setupTimeout)
	defer cancel()
	pe, err := m.cfg.PythonEnvs.Ensure(ctx, env.pyEnv, func(line string) { appendLog(logPath, line+"\n") })
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrRuntimeEnv, env.pyEnv.Tool, err)
	}
	env.python = pe.Python
	return nil
}

// setupTimeout is stock Ray's default config.setup_timeout_seconds.
const setupTimeout = 600 * time.Second

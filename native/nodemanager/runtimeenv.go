package nodemanager

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	commonpb "github.com/gray-cluster/gray/proto/ray/commonpb"
	"github.com/gray-cluster/gray/pyenv"
)

// ErrRuntimeEnv is a runtime_env this raylet cannot set up.
var ErrRuntimeEnv = errors.New("runtime_env not supported")

// runtimeEnv is the part of a lease's runtime_env that decides which worker
// process may run it: workers are started with its environment variables,
// in its working_dir and with its packages on PYTHONPATH, and only serve
// leases with the same ones.
type runtimeEnv struct {
	key  string   // canonical form; "" = none
	hash int32    // --runtime-env-hash of its workers
	vars []string // KEY=VALUE, sorted

	workingDir string     // working_dir URI ("" = none)
	pyModules  []string   // py_modules URIs, in the runtime_env's order
	pyEnv      pyenv.Spec // pip / uv environment (zero = none)
	// setupTimeout bounds fetching and unpacking the packages
	// (config.setup_timeout_seconds; 0 = none).
	setupTimeout time.Duration

	// Filled by Raylet.prepareRuntimeEnv once the packages are on disk.
	cwd        string   // the worker's working directory
	pythonPath []string // directories put first on PYTHONPATH
	python     string   // the pip/uv environment's interpreter ("" = the node's)
}

// needsPackages reports whether the env refers to packages or a Python
// environment to set up.
func (e runtimeEnv) needsPackages() bool {
	return e.workingDir != "" || len(e.pyModules) > 0 || !e.pyEnv.IsZero()
}

// defaultRuntimeEnvSetupTimeout is stock Ray's default
// config.setup_timeout_seconds.
const defaultRuntimeEnvSetupTimeout = 600 * time.Second

// runtimeEnvFields the raylet sets up or may ignore: env_vars becomes the
// worker's environment; working_dir and py_modules are unpacked from the
// GCS; pip and uv are built into a virtualenv (package pyenv); config only
// tunes set-up (timeouts, eager install); excludes was applied by the
// driver when it zipped the directory; the _ray_* keys only tell Ray's
// own pip set-up which ray the driver runs.
var runtimeEnvFields = map[string]bool{
	"env_vars": true, "config": true, "working_dir": true, "py_modules": true, "excludes": true,
	"pip": true, "uv": true,
	"_ray_release": true, "_ray_commit": true, "_inject_current_ray": true,
}

// parseRuntimeEnv reads a lease's serialized runtime_env. Fields that need
// what this raylet does not set up (conda, container, image_uri, remote
// working_dir/py_modules URIs, ...) are refused with ErrRuntimeEnv naming
// the field.
func parseRuntimeEnv(spec *commonpb.LeaseSpec) (runtimeEnv, error) {
	s := strings.TrimSpace(spec.GetRuntimeEnvInfo().GetSerializedRuntimeEnv())
	if s == "" || s == "{}" {
		return runtimeEnv{}, nil
	}
	var env map[string]json.RawMessage
	if err := json.Unmarshal([]byte(s), &env); err != nil {
		return runtimeEnv{}, fmt.Errorf("%w: malformed runtime_env %q: %v", ErrRuntimeEnv, s, err)
	}
	var unsupported []string
	for k, v := range env {
		if !runtimeEnvFields[k] && string(v) != "null" {
			unsupported = append(unsupported, k)
		}
	}
	if len(unsupported) > 0 {
		sort.Strings(unsupported)
		return runtimeEnv{}, fmt.Errorf("%w: gray's native raylet sets up env_vars, working_dir, py_modules (gcs:// and local:// URIs), pip and uv, not %s (runtime_env %s)",
			ErrRuntimeEnv, strings.Join(unsupported, ", "), s)
	}
	re := runtimeEnv{}
	vars := map[string]string{}
	if raw, ok := env["env_vars"]; ok && string(raw) != "null" {
		if err := json.Unmarshal(raw, &vars); err != nil {
			return runtimeEnv{}, fmt.Errorf("%w: env_vars must map strings to strings: %v", ErrRuntimeEnv, err)
		}
	}
	if raw, ok := env["working_dir"]; ok && string(raw) != "null" {
		if err := json.Unmarshal(raw, &re.workingDir); err != nil {
			return runtimeEnv{}, fmt.Errorf("%w: working_dir must be a URI string: %v", ErrRuntimeEnv, err)
		}
		if err := checkPackageURI("working_dir", re.workingDir); err != nil {
			return runtimeEnv{}, err
		}
	}
	if raw, ok := env["py_modules"]; ok && string(raw) != "null" {
		if err := json.Unmarshal(raw, &re.pyModules); err != nil {
			return runtimeEnv{}, fmt.Errorf("%w: py_modules must be a list of URI strings: %v", ErrRuntimeEnv, err)
		}
		for _, u := range re.pyModules {
			if err := checkPackageURI("py_modules", u); err != nil {
				return runtimeEnv{}, err
			}
		}
	}
	var pip, uv any
	for field, dst := range map[string]*any{"pip": &pip, "uv": &uv} {
		if raw, ok := env[field]; ok && string(raw) != "null" {
			if err := json.Unmarshal(raw, dst); err != nil {
				return runtimeEnv{}, fmt.Errorf("%w: %s: %v", ErrRuntimeEnv, field, err)
			}
		}
	}
	py, err := pyenv.FromRuntimeEnv(pip, uv)
	if err != nil {
		return runtimeEnv{}, fmt.Errorf("%w: %w", ErrRuntimeEnv, err)
	}
	re.pyEnv = py
	re.setupTimeout = defaultRuntimeEnvSetupTimeout
	if raw, ok := env["config"]; ok && string(raw) != "null" {
		var cfg struct {
			SetupTimeoutSeconds *float64 `json:"setup_timeout_seconds"`
		}
		if err := json.Unmarshal(raw, &cfg); err != nil {
			return runtimeEnv{}, fmt.Errorf("%w: config must be an object: %v", ErrRuntimeEnv, err)
		}
		if t := cfg.SetupTimeoutSeconds; t != nil {
			switch {
			case *t == -1:
				re.setupTimeout = 0
			case *t > 0:
				re.setupTimeout = time.Duration(*t * float64(time.Second))
			default:
				return runtimeEnv{}, fmt.Errorf("%w: config.setup_timeout_seconds must be positive or -1, not %v", ErrRuntimeEnv, *t)
			}
		}
	}
	keys := make([]string, 0, len(vars))
	for k := range vars {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.Contains(vars[k], "\x00") {
			return runtimeEnv{}, fmt.Errorf("%w: bad environment variable %q", ErrRuntimeEnv, k)
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		re.vars = append(re.vars, k+"="+vars[k])
	}
	if len(re.vars) == 0 && !re.needsPackages() {
		return runtimeEnv{}, nil
	}
	parts := append([]string{}, re.vars...)
	if re.workingDir != "" {
		parts = append(parts, "\x01working_dir="+re.workingDir)
	}
	for _, u := range re.pyModules {
		parts = append(parts, "\x01py_modules="+u)
	}
	if py := re.pyEnv.Encode(); py != "" {
		parts = append(parts, "\x01python="+py)
	}
	re.key = strings.Join(parts, "\x00")
	h := fnv.New32a()
	h.Write([]byte(re.key))
	re.hash = int32(h.Sum32() & 0x7fffffff)
	if re.hash == 0 {
		re.hash = 1
	}
	return re, nil
}

// checkPackageURI accepts the package URIs this raylet can set up: a
// gcs://_ray_pkg_<hash>.zip the driver uploaded to the GCS KV, or a
// local:///abs/dir already on the node.
func checkPackageURI(field, uri string) error {
	u, err := url.Parse(uri)
	if err != nil || u.Scheme == "" {
		return fmt.Errorf("%w: %s %q is not a URI (the driver uploads local directories as gcs:// URIs)", ErrRuntimeEnv, field, uri)
	}
	switch u.Scheme {
	case "gcs":
		name := u.Host + u.Path
		if name == "" || strings.ContainsAny(name, "/\\") || name == "." || name == ".." {
			return fmt.Errorf("%w: %s %q: bad gcs:// package name", ErrRuntimeEnv, field, uri)
		}
		if !strings.HasSuffix(name, ".zip") {
			return fmt.Errorf("%w: %s %q: gray's native raylet unpacks only .zip packages from the GCS", ErrRuntimeEnv, field, uri)
		}
		return nil
	case "local":
		if u.Host != "" || !filepath.IsAbs(u.Path) {
			return fmt.Errorf("%w: %s %q: a local:// URI names an absolute directory (local:///path)", ErrRuntimeEnv, field, uri)
		}
		return nil
	default:
		return fmt.Errorf("%w: %s %q: gray's native raylet does not download %s:// packages (only gcs:// uploads from the driver and local:// directories)",
			ErrRuntimeEnv, field, uri, u.Scheme)
	}
}

// prepareRuntimeEnv puts a lease's working_dir and py_modules packages on
// disk (once per URI) and fills in the worker's working directory and
// PYTHONPATH head: the py_modules directories, then the working_dir, as
// the stock runtime-env agent orders them.
func (r *Raylet) prepareRuntimeEnv(ctx context.Context, env runtimeEnv, jobID []byte) (runtimeEnv, error) {
	if !env.needsPackages() {
		return env, nil
	}
	if r.pkgs == nil {
		return env, fmt.Errorf("%w: no package cache", ErrRuntimeEnv)
	}
	var cancel context.CancelFunc
	if env.setupTimeout > 0 {
		ctx, cancel = context.WithTimeoutCause(ctx, env.setupTimeout,
			fmt.Errorf("runtime_env set-up took longer than config.setup_timeout_seconds (%v)", env.setupTimeout))
	} else {
		ctx, cancel = context.WithCancel(ctx)
	}
	defer cancel()
	stop := context.AfterFunc(r.ctx, cancel) // the raylet closing ends set-up
	defer stop()
	if !env.pyEnv.IsZero() {
		if r.pyenvs == nil {
			return env, fmt.Errorf("%w: no python env builder", ErrRuntimeEnv)
		}
		setup := r.newSetupLog(jobID)
		pe, err := r.pyenvs.Ensure(ctx, env.pyEnv, func(line string) {
			r.log.Debug("runtime_env python env build", "tool", env.pyEnv.Tool, "line", line)
			setup.line(line)
		})
		if err != nil {
			return env, fmt.Errorf("%w: %s: %w", ErrRuntimeEnv, env.pyEnv.Tool, setupErr(ctx, err))
		}
		env.python = pe.Python
	}
	var path []string
	for _, u := range env.pyModules {
		d, err := r.pkgs.dir(ctx, pyModulesFiles, u)
		if err != nil {
			return env, fmt.Errorf("%w: py_modules: %w", ErrRuntimeEnv, setupErr(ctx, err))
		}
		path = append(path, d)
	}
	if env.workingDir != "" {
		d, err := r.pkgs.dir(ctx, workingDirFiles, env.workingDir)
		if err != nil {
			return env, fmt.Errorf("%w: working_dir: %w", ErrRuntimeEnv, setupErr(ctx, err))
		}
		env.cwd = d
		path = append(path, d)
	}
	env.pythonPath = path
	return env, nil
}

// setupErr names why set-up was cut short when ctx ended it.
func setupErr(ctx context.Context, err error) error {
	if c := context.Cause(ctx); c != nil && ctx.Err() != nil && !errors.Is(err, c) {
		return fmt.Errorf("%w (%v)", err, c)
	}
	return err
}

// workerPythonPath is the PYTHONPATH of a worker started with env over
// the environment base: the env's directories, then a PYTHONPATH from its
// env_vars, then the one the worker would have had anyway. ok is false
// when the env sets no directories.
func workerPythonPath(env runtimeEnv, base []string) (string, bool) {
	if len(env.pythonPath) == 0 {
		return "", false
	}
	parts := append([]string{}, env.pythonPath...)
	for _, kv := range env.vars {
		if v, ok := strings.CutPrefix(kv, "PYTHONPATH="); ok && v != "" {
			parts = append(parts, v)
		}
	}
	for i := len(base) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(base[i], "PYTHONPATH="); ok {
			if v != "" {
				parts = append(parts, v)
			}
			break
		}
	}
	return strings.Join(parts, string(os.PathListSeparator)), true
}

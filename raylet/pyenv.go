package raylet

import (
	"context"
	"fmt"
	"time"

	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/pyenv"
	"github.com/gray-cluster/gray/taskspec"
)

// defaultSetupTimeout is stock Ray's default config.setup_timeout_seconds.
const defaultSetupTimeout = 600 * time.Second

// setupEnv builds the Python environment (runtime_env pip or uv) that the
// work of job in env runs in, once per node (package pyenv), before a
// worker is started for it. The build's output goes to the job's driver
// as log lines; a failure carries pip's error output.
func (r *Raylet) setupEnv(job ids.JobID, env taskspec.RuntimeEnv) error {
	if env.Python.IsZero() {
		return nil
	}
	if _, ok := r.pyenvs.Lookup(env.Python); ok {
		return nil
	}
	ctx, cancel := r.ctx, context.CancelFunc(func() {})
	switch t := env.SetupTimeout; {
	case t == taskspec.NoSetupTimeout:
	case t > 0:
		ctx, cancel = context.WithTimeoutCause(r.ctx, t, fmt.Errorf("runtime_env set-up took longer than config.setup_timeout_seconds (%v)", t))
	default:
		ctx, cancel = context.WithTimeoutCause(r.ctx, defaultSetupTimeout, fmt.Errorf("runtime_env set-up took longer than the default setup_timeout_seconds (%v)", defaultSetupTimeout))
	}
	defer cancel()
	r.cfg.Logs(job, fmt.Sprintf("(raylet) Setting up the runtime_env %s environment %v on node %s\n", env.Python.Tool, env.Python.Packages, r.cfg.NodeIP), false)
	_, err := r.pyenvs.Ensure(ctx, env.Python, func(line string) {
		r.cfg.Logs(job, "(raylet) "+line+"\n", false)
	})
	return err
}

// PythonEnvs is the raylet's builder of pip/uv environments (nil before
// Start), which the head's Jobs API shares for entrypoints.
func (r *Raylet) PythonEnvs() *pyenv.Builder { return r.pyenvs }

// interpreter is the Python a worker for env runs (the runtime_env's
// environment, built by setupEnv, or the node's) and the environment's
// directory ("" for the node's).
func (r *Raylet) interpreter(env taskspec.RuntimeEnv) (python, envDir string, err error) {
	if env.Python.IsZero() {
		return r.cfg.Python, "", nil
	}
	pe, ok := r.pyenvs.Lookup(env.Python)
	if !ok {
		return "", "", fmt.Errorf("%w: the %s environment %v is not set up on this node", taskspec.ErrRuntimeEnv, env.Python.Tool, env.Python.Packages)
	}
	return pe.Python, pe.Dir, nil
}

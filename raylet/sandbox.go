package raylet

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/rayerr"
	"github.com/gray-cluster/gray/sandbox"
	"github.com/gray-cluster/gray/sandbox/cgroup"
	"github.com/gray-cluster/gray/taskspec"
)

// SandboxConfig turns on sandboxed workers (package sandbox).
type SandboxConfig struct {
	// Bwrap is the bubblewrap binary (default: bwrap on PATH).
	Bwrap string
	// DevDir is where GPU device nodes are (default /dev); tests point it
	// at fake nodes.
	DevDir string
	// Shared are host paths the operator shares with every worker.
	Shared []sandbox.Share
	// Protected are paths no worker may see besides the raylet's own
	// session dir: the provider's home, state dir, the head's session dir.
	Protected []string
}

// startSandbox sets up the launcher when workers are sandboxed.
func (r *Raylet) startSandbox(ctx context.Context) error {
	sc := r.cfg.Sandbox
	if sc == nil {
		return nil
	}
	l, err := sandbox.New(ctx, sandbox.Config{
		Bwrap: sc.Bwrap, Python: r.cfg.Python, Dir: filepath.Join(r.cfg.SessionDir, "sandbox"),
		DevDir: sc.DevDir, Shared: sc.Shared,
		Protected:  append(append([]string(nil), sc.Protected...), r.cfg.SessionDir),
		CgroupName: "gray-" + r.cfg.NodeID.Hex()[:12] + "-" + strconv.Itoa(os.Getpid()),
		Node:       sandbox.NodeLimits(r.cfg.Resources), Logger: r.log,
	})
	if err != nil {
		return err
	}
	r.sandbox = l
	return nil
}

// poolKey groups idle workers that may serve one another's work. With the
// sandbox a worker serves one job only (its /tmp, its loaded modules and
// whatever its code left running belong to that job); a prestarted worker
// (job zero, default env) is unbound until its first task.
func (p *pool) poolKey(job ids.JobID, env taskspec.RuntimeEnv) string {
	k := env.Key()
	if p.r.sandbox == nil || job == (ids.JobID{}) {
		return k
	}
	return "job=" + job.Hex() + "\x00" + k
}

// sandboxed prepares a worker's sandbox and its command.
func (p *pool) sandboxed(w *workerProc, env taskspec.RuntimeEnv, python, envDir string, gpus []int) (*sandbox.Proc, error) {
	argv := []string{python, "-u", sandbox.InnerRuntime + "/" + filepath.Base(p.script),
		"--socket", sandbox.InnerSocket, "--address", p.r.cfg.ClientAddress, "--worker-id", w.id}
	return p.r.sandbox.Command(w.id, sandbox.Worker{
		Argv: argv, Runtime: filepath.Dir(p.script), Socket: p.sockPath,
		WorkingDir: env.WorkingDir, GPUs: gpus, ReadOnly: sandboxReadOnly(env, envDir),
	})
}

// limit applies the cgroup limits of the work a worker runs next. A worker
// that already holds more memory than the new limit (cgroup v1 then
// refuses the limit) is killed and counted as out of memory.
func (w *workerProc) limit(resources map[string]float64) {
	if w.box == nil {
		return
	}
	l := sandbox.LimitsFor(resources)
	w.mu.Lock()
	same := w.limited && w.limits == l
	w.limits, w.limited = l, true
	w.mu.Unlock()
	if same {
		return // the common case: the same kind of task again
	}
	if err := w.box.SetLimits(l); err != nil {
		w.pool.r.log.Info("worker is over the memory limit of its next task; killing it", "worker", w.id, "err", err)
		w.mu.Lock()
		w.overLimit = true
		w.mu.Unlock()
		w.kill()
	}
}

// outOfMemory reports whether the worker died of its memory limit.
func (w *workerProc) outOfMemory() (bool, cgroup.Limits) {
	select {
	case <-w.dead:
	default:
		return false, cgroup.Limits{}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.oom || w.overLimit, w.limits
}

// oomError is the OutOfMemoryError a task killed for memory fails with.
func (r *Raylet) oomError(t *task, l cgroup.Limits) [][]byte {
	limit := "what the node offers its workers"
	if l.MemoryBytes > 0 {
		limit = fmt.Sprintf("%d bytes (the task's memory=%d)", l.MemoryBytes, l.MemoryBytes)
	}
	msg := fmt.Sprintf("Task %s was killed for using more memory than its limit, %s, on node %s: "+
		"the worker was killed by the out-of-memory killer and the node kept serving. "+
		"Ask for more with .options(memory=BYTES), or use less.", t.spec.Name, limit, r.cfg.NodeIP)
	r.cfg.Logs(t.spec.JobID, "(raylet) "+msg+"\n", true)
	return r.errorPickle(rayerr.OutOfMemory(msg))
}

// Protecting returns a copy of c that also hides paths (nil stays nil).
func (c *SandboxConfig) Protecting(paths ...string) *SandboxConfig {
	if c == nil {
		return nil
	}
	out := *c
	out.Protected = append(append([]string(nil), c.Protected...), paths...)
	return &out
}

// sandboxReadOnly are the runtime_env's directories a sandboxed worker
// reads: its Python environment and its py_modules.
func sandboxReadOnly(env taskspec.RuntimeEnv, envDir string) []string {
	var out []string
	if envDir != "" {
		out = append(out, envDir)
	}
	return append(out, env.PyModules...)
}

package sandbox

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gray-cluster/gray/sandbox/cgroup"
)

// Config configures a Launcher.
type Config struct {
	// Bwrap is the bubblewrap binary (default: bwrap on PATH).
	Bwrap string
	// Python is the workers' interpreter; its directories are bound.
	Python string
	// Dir holds the workers' private /tmp directories (each removed when
	// its worker exits); it must not be visible to workers.
	Dir string
	// DevDir is where GPU device nodes are looked up (default /dev).
	DevDir string
	// Shared are operator-shared host paths bound into every worker.
	Shared []Share
	// Protected are paths no worker may see (home, state dir, session dir).
	Protected []string
	// CgroupName names the parent control group (unique per raylet).
	CgroupName string
	// Node bounds all workers together (what the node offers).
	Node   cgroup.Limits
	Logger *slog.Logger
	// Cgroups overrides where control groups are looked for (tests).
	Cgroups cgroup.Options
}

// Launcher starts sandboxed workers.
type Launcher struct {
	cfg    Config
	bwrap  string
	interp []string
	cg     *cgroup.Manager
	log    *slog.Logger
	// StartCost is what one empty sandbox took to start and exit when the
	// launcher probed bubblewrap.
	StartCost time.Duration
}

// New probes bubblewrap (it must start a sandbox here) and the interpreter,
// and sets up control groups. Without bubblewrap it fails with ErrNoBwrap;
// without usable cgroups it logs that limits are off and goes on.
func New(ctx context.Context, cfg Config) (*Launcher, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.DevDir == "" {
		cfg.DevDir = "/dev"
	}
	if cfg.Dir == "" {
		return nil, fmt.Errorf("%w: no directory for private /tmp", ErrBadSpec)
	}
	l := &Launcher{cfg: cfg, log: cfg.Logger.With("component", "sandbox")}
	bw := cfg.Bwrap
	if bw == "" {
		bw = "bwrap"
	}
	path, err := exec.LookPath(bw)
	if err != nil {
		return nil, fmt.Errorf("%w: %v (install the bubblewrap package, or start with --sandbox=off on a trusted single-user pool)", ErrNoBwrap, err)
	}
	l.bwrap = path
	start := time.Now()
	probe := exec.CommandContext(ctx, path, "--die-with-parent", "--unshare-pid", "--ro-bind", "/", "/",
		"--proc", "/proc", "--dev", "/dev", "--", "true")
	if out, err := probe.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("%w: %s cannot start a sandbox here: %v: %s (unprivileged user namespaces may be off; or start with --sandbox=off on a trusted single-user pool)",
			ErrNoBwrap, path, err, strings.TrimSpace(string(out)))
	}
	l.StartCost = time.Since(start)
	if l.interp, err = interpreterDirs(ctx, cfg.Python); err != nil {
		return nil, err
	}
	for _, s := range cfg.Shared {
		if _, err := os.Stat(s.Path); err != nil {
			return nil, fmt.Errorf("%w: shared path: %v", ErrBadSpec, err)
		}
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	name := cfg.CgroupName
	if name == "" {
		name = "gray-" + strconv.Itoa(os.Getpid())
	}
	if l.cg, err = cgroup.New(name, cfg.Cgroups); err != nil {
		return nil, err
	}
	if n := l.cg.SweepStale("gray-"); n > 0 {
		l.log.Info("sandbox: removed control groups of workers of daemons that are gone", "groups", n)
	}
	switch {
	case !l.cg.Enabled():
		l.log.Warn("sandbox: worker memory and CPU limits are NOT applied: no writable cgroup hierarchy (run as root, or delegate a cgroup v2 subtree with memory and cpu to this user)",
			"reason", l.cg.Reason)
	default:
		if l.cg.Reason != "" {
			l.log.Info("sandbox: " + l.cg.Reason)
		}
		if err := l.cg.SetParentLimits(cfg.Node); err != nil {
			l.log.Warn("sandbox: cannot bound all workers together", "err", err)
		}
	}
	l.log.Info("sandbox on: workers run in bubblewrap", "bwrap", path, "cgroup", l.cg.Version,
		"start_cost", l.StartCost.Round(time.Microsecond), "python_dirs", l.interp)
	return l, nil
}

// Limited reports whether workers get cgroup limits.
func (l *Launcher) Limited() bool { return l.cg.Enabled() }

// Close removes the parent control group (call once every worker exited).
func (l *Launcher) Close() error { return l.cg.Close() }

// interpreterDirs asks the Python where it lives: its prefixes and the
// existing sys.path entries, and where its executable's links lead.
func interpreterDirs(ctx context.Context, python string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	const src = `import json, os, sys
out = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
p = sys.executable
for _ in range(20):
    out.append(os.path.dirname(os.path.abspath(p)))
    if not os.path.islink(p):
        break
    p = os.path.join(os.path.dirname(p), os.readlink(p))
out += [x for x in sys.path[1:] if x and os.path.exists(x)]
print(json.dumps(out))`
	out, err := exec.CommandContext(ctx, python, "-c", src).Output()
	if err != nil {
		return nil, fmt.Errorf("sandbox: ask %s where it lives: %w", python, err)
	}
	var dirs []string
	if err := json.Unmarshal(bytes.TrimSpace(out), &dirs); err != nil {
		return nil, fmt.Errorf("sandbox: read %s's paths: %w", python, err)
	}
	if abs, err := exec.LookPath(python); err == nil {
		if abs, err = filepath.Abs(abs); err == nil {
			dirs = append(dirs, filepath.Dir(abs))
		}
	}
	var keep []string
	for _, d := range dirs {
		if filepath.IsAbs(d) {
			keep = append(keep, filepath.Clean(d))
		}
	}
	return dedupe(keep), nil
}

// Proc is one sandboxed worker process.
type Proc struct {
	// Cmd runs bwrap; set its Env, output and SysProcAttr, then Start.
	Cmd   *exec.Cmd
	l     *Launcher
	group *cgroup.Group
	tmp   string
	// infoR and blockW are the parent's ends of bwrap's info and block fds.
	infoR, blockW *os.File
	child         int
}

// Command prepares a sandboxed worker: w's Tmp, Interpreter, Shared,
// Protected, DevDir, DevFiles and fds are filled in here.
func (l *Launcher) Command(name string, w Worker) (*Proc, error) {
	if !cgroupName(name) {
		return nil, fmt.Errorf("%w: worker name %q", ErrBadSpec, name)
	}
	p := &Proc{l: l, tmp: filepath.Join(l.cfg.Dir, name)}
	if err := os.MkdirAll(filepath.Join(p.tmp, "tmp"), 0o700); err != nil {
		return nil, fmt.Errorf("sandbox: private tmp: %w", err)
	}
	w.Tmp = filepath.Join(p.tmp, "tmp")
	w.Interpreter = append(append([]string(nil), l.interp...), w.Interpreter...)
	w.Shared = append(append([]Share(nil), l.cfg.Shared...), w.Shared...)
	w.Protected = append(append([]string(nil), l.cfg.Protected...), w.Protected...)
	w.DevDir = l.cfg.DevDir
	if len(w.GPUs) > 0 {
		entries, err := os.ReadDir(l.cfg.DevDir)
		if err != nil {
			p.cleanup()
			return nil, fmt.Errorf("sandbox: GPU devices: %w", err)
		}
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), "nvidia") {
				w.DevFiles = append(w.DevFiles, e.Name())
			}
		}
	}
	infoR, infoW, err := os.Pipe()
	if err != nil {
		p.cleanup()
		return nil, err
	}
	blockR, blockW, err := os.Pipe()
	if err != nil {
		infoR.Close()
		infoW.Close()
		p.cleanup()
		return nil, err
	}
	// ExtraFiles[i] is fd 3+i in bwrap.
	w.InfoFD, w.BlockFD = 3, 4
	argv, err := Plan(w)
	if err != nil {
		for _, f := range []*os.File{infoR, infoW, blockR, blockW} {
			f.Close()
		}
		p.cleanup()
		return nil, err
	}
	if p.group, err = l.cg.NewGroup(name); err != nil {
		for _, f := range []*os.File{infoR, infoW, blockR, blockW} {
			f.Close()
		}
		p.cleanup()
		return nil, err
	}
	p.Cmd = exec.Command(l.bwrap, argv...)
	p.Cmd.ExtraFiles = []*os.File{infoW, blockR}
	p.infoR, p.blockW = infoR, blockW
	return p, nil
}

// Start starts bwrap, puts the sandbox into the worker's control group
// and only then lets it run the worker.
func (p *Proc) Start() error {
	err := p.Cmd.Start()
	for _, f := range p.Cmd.ExtraFiles {
		f.Close()
	}
	if err != nil {
		p.infoR.Close()
		p.blockW.Close()
		p.cleanup()
		return err
	}
	defer p.blockW.Close()
	defer p.infoR.Close()
	_ = p.infoR.SetReadDeadline(time.Now().Add(30 * time.Second))
	var info struct {
		ChildPID int `json:"child-pid"`
	}
	if err := json.NewDecoder(p.infoR).Decode(&info); err != nil || info.ChildPID <= 0 {
		_ = p.Cmd.Process.Kill()
		return fmt.Errorf("sandbox: bwrap reported no child: %v", err)
	}
	p.child = info.ChildPID
	for _, pid := range []int{p.Cmd.Process.Pid, info.ChildPID} {
		if err := p.group.Add(pid); err != nil {
			_ = p.Cmd.Process.Kill()
			return err
		}
	}
	if _, err := p.blockW.Write([]byte{1}); err != nil {
		_ = p.Cmd.Process.Kill()
		return fmt.Errorf("sandbox: release worker: %w", err)
	}
	return nil
}

// WorkerPID is the host pid of the program bwrap runs (the sandbox's
// pid 2, under bwrap's own init), or 0 when it is not running yet.
func (p *Proc) WorkerPID() int {
	if p.child == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", p.child, p.child))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	pid, _ := strconv.Atoi(f[0])
	return pid
}

// SetLimits applies the limits of the work the worker runs next.
func (p *Proc) SetLimits(l cgroup.Limits) error { return p.group.Set(l) }

// Kill kills every process of the sandbox: bwrap, its init and whatever
// the worker started.
func (p *Proc) Kill() {
	if p.Cmd.Process != nil {
		_ = p.Cmd.Process.Kill()
	}
	if p.child > 0 {
		_ = syscall.Kill(p.child, syscall.SIGKILL)
	}
	p.group.Kill()
}

// Finish reports whether the kernel's OOM killer killed one of the
// worker's processes, then removes its control group and private /tmp.
// Call it once bwrap has been waited for: what is left of the sandbox
// (bwrap's init dies with bwrap, but not at once) is killed and waited for.
func (p *Proc) Finish() (oomKilled bool) {
	oomKilled = p.group.OOMKills() > 0
	deadline := time.Now().Add(5 * time.Second)
	for {
		p.Kill()
		err := p.group.Remove()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			p.l.log.Warn("sandbox: worker cgroup not removed", "err", err)
			break
		}
		time.Sleep(5 * time.Millisecond) // the kernel is reaping the sandbox's processes
	}
	p.cleanup()
	return oomKilled
}

func (p *Proc) cleanup() {
	if err := os.RemoveAll(p.tmp); err != nil {
		p.l.log.Warn("sandbox: remove private tmp", "dir", p.tmp, "err", err)
	}
}

func cgroupName(s string) bool {
	return s != "" && s != "." && s != ".." && !strings.ContainsAny(s, "/\x00\n")
}

// Package sandbox runs a provider's Python workers in bubblewrap sandboxes
// so that code sent by pool clients cannot read or change the provider's
// machine beyond what its task needs.
//
// A sandboxed worker sees: the system (/usr and the usual /bin, /lib links)
// and an allow-list of /etc read-only; its interpreter's directories (the
// venv and the base Python) read-only; the worker runtime read-only; the
// raylet's socket; its session's working_dir, its runtime_env's Python
// environment and py_modules read-only; a private /tmp
// (a host directory of its own, removed when it exits) that is also its
// HOME; a private /dev with only the device nodes of the GPUs assigned to it
// (/dev/nvidia<N> plus nvidiactl and nvidia-uvm*); its own pid, IPC and UTS
// namespaces; and the host network (it reaches the pool's Ray Client port
// over TCP). It does not see the provider's home, state dir (node key,
// certificates), session dir, other workers' /tmp or other sessions'
// working dirs: none of them is mounted.
//
// The policy (Plan, LimitsFor) is pure: a worker's spec in, bubblewrap's
// argument vector and the cgroup limits out. Launcher does the I/O: it
// probes bubblewrap and the interpreter, starts workers, and puts each into
// a control group of its own (package cgroup) before it runs a line of
// Python.
package sandbox

import (
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/gray-cluster/gray/sandbox/cgroup"
)

// Sentinel errors.
var (
	ErrExposes  = errors.New("sandbox: bind would expose a protected path")
	ErrBadSpec  = errors.New("sandbox: bad worker spec")
	ErrNoBwrap  = errors.New("sandbox: bubblewrap (bwrap) is not usable")
	ErrDisabled = errors.New("sandbox: disabled")
)

// Paths inside every sandbox.
const (
	// RunDir holds the runtime and the raylet socket inside the sandbox.
	RunDir = "/run/gray"
	// InnerSocket is where the raylet's socket appears.
	InnerSocket = RunDir + "/raylet.sock"
	// InnerRuntime is where the worker runtime's directory appears.
	InnerRuntime = RunDir + "/runtime"
)

// systemDirs are bound read-only when they exist (on merged-/usr systems
// /bin, /lib... are links into /usr and bind as such).
var systemDirs = []string{"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"}

// etcAllow is the part of /etc a Python worker needs: name resolution,
// users and groups (getpwuid), TLS roots, the dynamic linker, time zones,
// MIME types, and the alternatives links /usr/bin points through.
var etcAllow = []string{
	"/etc/alternatives", "/etc/ca-certificates", "/etc/ca-certificates.conf", "/etc/gai.conf",
	"/etc/group", "/etc/host.conf", "/etc/hostname", "/etc/hosts", "/etc/ld.so.cache",
	"/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime", "/etc/mime.types",
	"/etc/nsswitch.conf", "/etc/os-release", "/etc/passwd", "/etc/pki", "/etc/protocols",
	"/etc/resolv.conf", "/etc/services", "/etc/ssl", "/etc/timezone",
}

// GPU device nodes every GPU worker gets besides its own /dev/nvidia<N>.
var gpuShared = []string{"nvidiactl", "nvidia-uvm", "nvidia-uvm-tools"}

// Worker is one worker process to sandbox.
type Worker struct {
	// Argv is the command inside the sandbox (its paths are inner paths:
	// InnerRuntime, InnerSocket).
	Argv []string
	// Interpreter are the Python's directories (venv, base prefix, extra
	// sys.path entries), bound read-only at their own paths.
	Interpreter []string
	// Runtime is the host directory of the worker runtime (→ InnerRuntime)
	// and Socket the raylet's unix socket (→ InnerSocket).
	Runtime string
	Socket  string
	// WorkingDir is the session's unpacked working_dir, bound read-only at
	// its own path ("" for none).
	WorkingDir string
	// ReadOnly are more host directories bound read-only at their own
	// paths: the runtime_env's Python environment and py_modules.
	ReadOnly []string
	// Tmp is the worker's private host directory, mounted as /tmp.
	Tmp string
	// GPUs are the indexes of the GPUs assigned to the worker.
	GPUs []int
	// DevDir is where the host's GPU device nodes are (default /dev);
	// DevFiles the names found there (nvidia0, nvidiactl, ...).
	DevDir   string
	DevFiles []string
	// Shared are operator-shared host paths: read-write, or read-only
	// when ReadOnly is set.
	Shared []Share
	// Protected are paths no bind may equal or contain: the provider's
	// home, state dir and session dir. A bind inside one (the raylet's
	// socket in the session dir) is fine.
	Protected []string
	// InfoFD and BlockFD are the descriptors (in bwrap's process) for its
	// --info-fd and --block-fd (0: not used).
	InfoFD, BlockFD int
}

// Share is an operator-shared host path.
type Share struct {
	Path     string
	ReadOnly bool
}

// ParseShare reads "PATH" (read-write) or "PATH:ro" (read-only).
func ParseShare(s string) (Share, error) {
	sh := Share{Path: s}
	if p, ok := strings.CutSuffix(s, ":ro"); ok {
		sh = Share{Path: p, ReadOnly: true}
	} else if p, ok := strings.CutSuffix(s, ":rw"); ok {
		sh.Path = p
	}
	if !filepath.IsAbs(sh.Path) {
		return sh, fmt.Errorf("%w: shared path %q must be absolute", ErrBadSpec, s)
	}
	sh.Path = filepath.Clean(sh.Path)
	return sh, nil
}

// Plan returns bubblewrap's arguments (without the bwrap program itself)
// that run w.Argv in its sandbox.
func Plan(w Worker) ([]string, error) {
	if len(w.Argv) == 0 || w.Runtime == "" || w.Socket == "" || w.Tmp == "" {
		return nil, fmt.Errorf("%w: argv, runtime, socket and tmp are required", ErrBadSpec)
	}
	for _, p := range append([]string{w.Runtime, w.Socket, w.Tmp}, w.Interpreter...) {
		if !filepath.IsAbs(p) {
			return nil, fmt.Errorf("%w: path %q is not absolute", ErrBadSpec, p)
		}
	}
	var a args
	a.add("--die-with-parent", "--new-session", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try")
	if w.InfoFD > 0 {
		a.add("--info-fd", strconv.Itoa(w.InfoFD))
	}
	if w.BlockFD > 0 {
		a.add("--block-fd", strconv.Itoa(w.BlockFD))
	}
	for _, d := range systemDirs {
		a.add("--ro-bind-try", d, d)
	}
	for _, e := range etcAllow {
		a.add("--ro-bind-try", e, e)
	}
	a.add("--proc", "/proc", "--dev", "/dev", "--tmpfs", "/dev/shm")
	if len(w.GPUs) > 0 {
		dev := w.DevDir
		if dev == "" {
			dev = "/dev"
		}
		have := map[string]bool{}
		for _, f := range w.DevFiles {
			have[f] = true
		}
		ids := append([]int(nil), w.GPUs...)
		sort.Ints(ids)
		for _, id := range ids {
			if id < 0 {
				return nil, fmt.Errorf("%w: GPU index %d", ErrBadSpec, id)
			}
			name := "nvidia" + strconv.Itoa(id)
			if !have[name] {
				continue // nothing to give (a mock GPU, --gpu-mock)
			}
			a.add("--dev-bind", filepath.Join(dev, name), "/dev/"+name)
		}
		for _, name := range gpuShared {
			if have[name] {
				a.add("--dev-bind", filepath.Join(dev, name), "/dev/"+name)
			}
		}
		// NVML and CUDA read PCI topology from sysfs.
		a.add("--ro-bind-try", "/sys", "/sys")
	}
	seen := map[string]bool{}
	bind := func(kind, src, dst string) error {
		if err := exposes(src, w.Protected); err != nil {
			return err
		}
		if seen[dst] {
			return nil
		}
		seen[dst] = true
		a.add(kind, src, dst)
		return nil
	}
	// /tmp first: later binds below it (a working dir or share under the
	// host's /tmp) must land on top of it, not under it.
	if err := bind("--bind", w.Tmp, "/tmp"); err != nil {
		return nil, err
	}
	for _, p := range dedupe(w.Interpreter) {
		if underSystem(p) {
			continue
		}
		if err := bind("--ro-bind", p, p); err != nil {
			return nil, err
		}
	}
	if err := bind("--ro-bind", w.Runtime, InnerRuntime); err != nil {
		return nil, err
	}
	if err := bind("--bind", w.Socket, InnerSocket); err != nil {
		return nil, err
	}
	if w.WorkingDir != "" {
		if !filepath.IsAbs(w.WorkingDir) {
			return nil, fmt.Errorf("%w: working dir %q is not absolute", ErrBadSpec, w.WorkingDir)
		}
		if err := bind("--ro-bind", w.WorkingDir, w.WorkingDir); err != nil {
			return nil, err
		}
	}
	for _, d := range w.ReadOnly {
		if !filepath.IsAbs(d) {
			return nil, fmt.Errorf("%w: read-only dir %q is not absolute", ErrBadSpec, d)
		}
		if err := bind("--ro-bind", d, d); err != nil {
			return nil, err
		}
	}
	for _, s := range w.Shared {
		kind := "--bind"
		if s.ReadOnly {
			kind = "--ro-bind"
		}
		if err := bind(kind, s.Path, s.Path); err != nil {
			return nil, err
		}
	}
	a.add("--setenv", "HOME", "/tmp", "--setenv", "TMPDIR", "/tmp", "--chdir", "/tmp")
	a.add("--")
	a.add(w.Argv...)
	return a.list, nil
}

type args struct{ list []string }

func (a *args) add(s ...string) { a.list = append(a.list, s...) }

// exposes fails when binding src would show a protected path: src is one,
// or contains one.
func exposes(src string, protected []string) error {
	src = filepath.Clean(src)
	for _, p := range protected {
		if p == "" {
			continue
		}
		p = filepath.Clean(p)
		if within(p, src) {
			return fmt.Errorf("%w: %s contains %s", ErrExposes, src, p)
		}
	}
	return nil
}

// within reports whether path is dir or below it.
func within(path, dir string) bool {
	if dir == "/" {
		return true
	}
	return path == dir || strings.HasPrefix(path, dir+"/")
}

func underSystem(p string) bool {
	return within(filepath.Clean(p), "/usr")
}

// dedupe drops repeated paths and paths inside another listed one, keeping
// the order of the rest.
func dedupe(paths []string) []string {
	clean := make([]string, 0, len(paths))
	for _, p := range paths {
		if p != "" {
			clean = append(clean, filepath.Clean(p))
		}
	}
	var out []string
	for i, p := range clean {
		keep := true
		for j, q := range clean {
			if i != j && (within(p, q) && p != q || p == q && j < i) {
				keep = false
				break
			}
		}
		if keep {
			out = append(out, p)
		}
	}
	return out
}

// LimitsFor is the cgroup limit of a worker running work that holds
// resources: its "memory" (bytes, as Ray counts it) and its "CPU". Work
// that asks for no memory gets no limit of its own (the parent group's,
// what the node offers, still holds), and work with no CPUs no quota.
func LimitsFor(resources map[string]float64) cgroup.Limits {
	return cgroup.Limits{MemoryBytes: int64(resources["memory"]), CPUs: resources["CPU"]}
}

// NodeLimits bounds all of a node's workers together: what it offers.
func NodeLimits(total map[string]float64) cgroup.Limits {
	return cgroup.Limits{MemoryBytes: int64(total["memory"]), CPUs: total["CPU"]}
}

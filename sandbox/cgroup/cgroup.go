// Package cgroup puts sandboxed worker processes into their own control
// groups and applies memory and CPU limits to them, on cgroup v2 (the
// unified hierarchy, preferred) or on cgroup v1's memory and cpu
// controllers. A Manager owns one parent group for a raylet's workers (its
// limit is what the node offers, so workers together cannot starve the
// provider daemon) and one child group per worker.
//
// Where no writable hierarchy is found (a provider that runs as a user
// without a delegated cgroup) New returns a Manager whose Reason says why;
// its groups are no-ops, so the caller runs workers without limits and logs
// the reason once.
package cgroup

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// Sentinel errors.
var (
	ErrUnavailable = errors.New("cgroup: no writable memory/cpu hierarchy")
	ErrBadName     = errors.New("cgroup: bad group name")
)

// Limits are what one group may use. Zero means no limit of that kind.
type Limits struct {
	// MemoryBytes is the most memory (RSS, page cache, tmpfs) the group's
	// processes may hold; past it the kernel's OOM killer kills one of them.
	MemoryBytes int64
	// CPUs is the CPU time per wall-clock second, in cores (1.5 = 150 ms
	// every 100 ms).
	CPUs float64
}

// cpuPeriod is the CFS period, in microseconds, quotas are expressed in.
const cpuPeriod = 100000

// Options tells New where to look; zero values are the real system's.
type Options struct {
	// Root is where the hierarchies are mounted (default /sys/fs/cgroup).
	Root string
	// Self is the content of /proc/self/cgroup (default: read it).
	Self string
	// PID is the calling process, moved into a leaf on cgroup v2 when its
	// own group must delegate controllers (default os.Getpid()).
	PID int
}

// Manager owns the parent group of a raylet's workers.
type Manager struct {
	// Version is 2, 1, or 0 when limits cannot be applied.
	Version int
	// Reason says why limits are not applied (Version 0), or notes what
	// was done to apply them (a move into a leaf group on v2).
	Reason string
	// dirs are the parent group's directories: one on v2, one per
	// controller (memory, cpu) on v1.
	dirs map[string]string
}

// Group is one worker's control group. Its methods may be called from
// several goroutines.
type Group struct {
	m    *Manager
	mu   sync.Mutex
	dirs map[string]string // emptied by Remove
}

// New creates the parent group name under the calling process's own group.
// It never fails for lack of cgroups: the returned Manager then has Version
// 0 and a Reason.
func New(name string, o Options) (*Manager, error) {
	if !validName(name) {
		return nil, fmt.Errorf("%w: %q", ErrBadName, name)
	}
	if o.Root == "" {
		o.Root = "/sys/fs/cgroup"
	}
	if o.Self == "" {
		b, err := os.ReadFile("/proc/self/cgroup")
		if err != nil {
			return &Manager{Reason: "cannot read /proc/self/cgroup: " + err.Error()}, nil
		}
		o.Self = string(b)
	}
	if o.PID == 0 {
		o.PID = os.Getpid()
	}
	own := parseSelf(o.Self)
	var reasons []string
	if m, err := newV2(name, o, own); err == nil {
		return m, nil
	} else {
		reasons = append(reasons, "v2: "+err.Error())
	}
	if m, err := newV1(name, o, own); err == nil {
		return m, nil
	} else {
		reasons = append(reasons, "v1: "+err.Error())
	}
	return &Manager{Reason: strings.Join(reasons, "; ")}, nil
}

// parseSelf maps controller ("" for the v2 line) to the group path.
func parseSelf(s string) map[string]string {
	out := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[1] == "" {
			out[""] = parts[2]
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			out[c] = parts[2]
		}
	}
	return out
}

func newV2(name string, o Options, own map[string]string) (*Manager, error) {
	base, ok := own[""]
	if !ok {
		return nil, fmt.Errorf("process is in no v2 group")
	}
	// The unified hierarchy is at Root itself, or at Root/unified beside v1
	// controllers (a hybrid layout).
	var mount string
	for _, cand := range []string{o.Root, filepath.Join(o.Root, "unified")} {
		if _, err := os.Stat(filepath.Join(cand, "cgroup.controllers")); err == nil {
			mount = cand
			break
		}
	}
	if mount == "" {
		return nil, fmt.Errorf("no cgroup2 mount under %s", o.Root)
	}
	ownDir := filepath.Join(mount, filepath.FromSlash(base))
	avail, err := os.ReadFile(filepath.Join(ownDir, "cgroup.controllers"))
	if err != nil {
		return nil, err
	}
	if !hasWords(string(avail), "memory", "cpu") {
		return nil, fmt.Errorf("memory and cpu controllers are not available in %s (have %q)", ownDir, strings.TrimSpace(string(avail)))
	}
	m := &Manager{Version: 2}
	if err := enable(ownDir); err != nil {
		// A group with processes cannot hand controllers to children: move
		// this process into a leaf of its own first, as a delegated
		// service would.
		leaf := filepath.Join(ownDir, "gray-daemon")
		if mkErr := os.MkdirAll(leaf, 0o755); mkErr != nil {
			return nil, fmt.Errorf("enable controllers in %s: %v; create leaf: %v", ownDir, err, mkErr)
		}
		if mvErr := writeFile(filepath.Join(leaf, "cgroup.procs"), strconv.Itoa(o.PID)); mvErr != nil {
			return nil, fmt.Errorf("enable controllers in %s: %v; move into leaf: %v", ownDir, err, mvErr)
		}
		if err2 := enable(ownDir); err2 != nil {
			return nil, fmt.Errorf("enable controllers in %s: %v", ownDir, err2)
		}
		m.Reason = "moved the daemon into " + leaf + " so its group can delegate memory and cpu"
	}
	dir := filepath.Join(ownDir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := enable(dir); err != nil {
		_ = os.Remove(dir)
		return nil, err
	}
	m.dirs = map[string]string{"": dir}
	return m, nil
}

func enable(dir string) error {
	return writeFile(filepath.Join(dir, "cgroup.subtree_control"), "+memory +cpu")
}

func hasWords(s string, words ...string) bool {
	have := map[string]bool{}
	for _, f := range strings.Fields(s) {
		have[f] = true
	}
	for _, w := range words {
		if !have[w] {
			return false
		}
	}
	return true
}

func newV1(name string, o Options, own map[string]string) (*Manager, error) {
	dirs := map[string]string{}
	for _, c := range []string{"memory", "cpu"} {
		base, ok := own[c]
		if !ok {
			return nil, fmt.Errorf("process is in no %s group", c)
		}
		mount := filepath.Join(o.Root, c)
		if _, err := os.Stat(filepath.Join(mount, "cgroup.procs")); err != nil {
			return nil, fmt.Errorf("%s controller is not mounted at %s", c, mount)
		}
		dir := filepath.Join(mount, filepath.FromSlash(base), name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			for _, d := range dirs {
				_ = os.Remove(d)
			}
			return nil, err
		}
		dirs[c] = dir
	}
	return &Manager{Version: 1, dirs: dirs}, nil
}

// SweepStale removes the sibling parent groups left behind by daemons that
// died without cleaning up (kill -9): those named prefix...-PID whose PID
// no longer runs and whose worker groups are empty. It returns how many it
// removed.
func (m *Manager) SweepStale(prefix string) int {
	if !m.Enabled() {
		return 0
	}
	removed := 0
	stale := map[string][]string{} // sibling name -> its dirs, one per hierarchy
	for _, dir := range m.dirs {
		parent := filepath.Dir(dir)
		entries, err := os.ReadDir(parent)
		if err != nil {
			continue
		}
		for _, e := range entries {
			name := e.Name()
			if !e.IsDir() || !strings.HasPrefix(name, prefix) || filepath.Join(parent, name) == dir {
				continue
			}
			i := strings.LastIndexByte(name, '-')
			pid, err := strconv.Atoi(name[i+1:])
			if i < 0 || err != nil || pid <= 0 || syscall.Kill(pid, 0) != syscall.ESRCH {
				continue
			}
			stale[name] = append(stale[name], filepath.Join(parent, name))
		}
	}
	for _, dirs := range stale {
		ok := true
		for _, d := range dirs {
			children, _ := os.ReadDir(d)
			for _, c := range children {
				if !c.IsDir() {
					continue
				}
				// Workers die with their daemon (bwrap --die-with-parent):
				// a group that still has processes is not garbage (its
				// daemon may run in another pid namespace), so it stays.
				g := &Group{m: m, dirs: map[string]string{"": filepath.Join(d, c.Name())}}
				if len(g.Procs()) > 0 || g.Remove() != nil {
					ok = false
				}
			}
			if os.Remove(d) != nil {
				ok = false
			}
		}
		if ok {
			removed++
		}
	}
	return removed
}

// Enabled reports whether limits are applied.
func (m *Manager) Enabled() bool { return m != nil && m.Version != 0 }

// SetParentLimits bounds all workers together.
func (m *Manager) SetParentLimits(l Limits) error {
	if !m.Enabled() {
		return nil
	}
	return m.set(m.dirs, l, false)
}

// NewGroup creates a worker's group under the parent.
func (m *Manager) NewGroup(name string) (*Group, error) {
	if !validName(name) {
		return nil, fmt.Errorf("%w: %q", ErrBadName, name)
	}
	g := &Group{m: m, dirs: map[string]string{}}
	if !m.Enabled() {
		return g, nil
	}
	for c, parent := range m.dirs {
		dir := filepath.Join(parent, name)
		if err := os.Mkdir(dir, 0o755); err != nil && !os.IsExist(err) {
			g.Remove()
			return nil, fmt.Errorf("cgroup: create %s: %w", dir, err)
		}
		g.dirs[c] = dir
	}
	if m.Version == 2 {
		// A worker over its limit dies whole (all its processes), alone.
		_ = writeFile(filepath.Join(g.dirs[""], "memory.oom.group"), "1")
	}
	return g, nil
}

// Add moves a process into the group.
func (g *Group) Add(pid int) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, dir := range g.dirs {
		if err := writeFile(filepath.Join(dir, "cgroup.procs"), strconv.Itoa(pid)); err != nil {
			return fmt.Errorf("cgroup: add %d to %s: %w", pid, dir, err)
		}
	}
	return nil
}

// Set applies limits (zero fields lift that limit).
func (g *Group) Set(l Limits) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.dirs) == 0 {
		return nil
	}
	return g.m.set(g.dirs, l, true)
}

func (m *Manager) set(dirs map[string]string, l Limits, noSwap bool) error {
	var errs []error
	switch m.Version {
	case 2:
		dir := dirs[""]
		mem := "max"
		if l.MemoryBytes > 0 {
			mem = strconv.FormatInt(l.MemoryBytes, 10)
		}
		errs = append(errs, writeFile(filepath.Join(dir, "memory.max"), mem))
		if noSwap {
			// Missing without swap accounting; then there is nothing to cap.
			if _, err := os.Stat(filepath.Join(dir, "memory.swap.max")); err == nil {
				errs = append(errs, writeFile(filepath.Join(dir, "memory.swap.max"), "0"))
			}
		}
		cpu := "max " + strconv.Itoa(cpuPeriod)
		if q := quota(l.CPUs); q > 0 {
			cpu = strconv.Itoa(q) + " " + strconv.Itoa(cpuPeriod)
		}
		errs = append(errs, writeFile(filepath.Join(dir, "cpu.max"), cpu))
	case 1:
		mem := "-1"
		if l.MemoryBytes > 0 {
			mem = strconv.FormatInt(l.MemoryBytes, 10)
		}
		memDir := dirs["memory"]
		if noSwap {
			// memsw (memory+swap) must stay >= the memory limit: lift it
			// first, set memory, then bring memsw down to the same value.
			if _, err := os.Stat(filepath.Join(memDir, "memory.memsw.limit_in_bytes")); err == nil {
				_ = writeFile(filepath.Join(memDir, "memory.memsw.limit_in_bytes"), "-1")
				errs = append(errs, writeFile(filepath.Join(memDir, "memory.limit_in_bytes"), mem))
				errs = append(errs, writeFile(filepath.Join(memDir, "memory.memsw.limit_in_bytes"), mem))
				break
			}
		}
		errs = append(errs, writeFile(filepath.Join(memDir, "memory.limit_in_bytes"), mem))
	}
	if m.Version == 1 {
		cpuDir := dirs["cpu"]
		q := "-1"
		if n := quota(l.CPUs); n > 0 {
			q = strconv.Itoa(n)
		}
		errs = append(errs, writeFile(filepath.Join(cpuDir, "cpu.cfs_period_us"), strconv.Itoa(cpuPeriod)))
		errs = append(errs, writeFile(filepath.Join(cpuDir, "cpu.cfs_quota_us"), q))
	}
	return errors.Join(errs...)
}

// quota is the CFS quota in microseconds per period for cpus cores (0: none).
func quota(cpus float64) int {
	if cpus <= 0 {
		return 0
	}
	return max(1000, int(cpus*cpuPeriod)) // the kernel's minimum is 1 ms
}

// OOMKills is how many of the group's processes the kernel's OOM killer
// has killed.
func (g *Group) OOMKills() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	var path, key string
	switch g.m.Version {
	case 2:
		path, key = filepath.Join(g.dirs[""], "memory.events"), "oom_kill"
	case 1:
		path, key = filepath.Join(g.dirs["memory"], "memory.oom_control"), "oom_kill"
	default:
		return 0
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == key {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	return 0
}

// Procs lists the processes in the group.
func (g *Group) Procs() []int {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []int
	seen := map[int]bool{}
	for _, dir := range g.dirs {
		b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil && !seen[pid] {
				seen[pid] = true
				out = append(out, pid)
			}
		}
	}
	return out
}

// Kill sends SIGKILL to every process in the group.
func (g *Group) Kill() {
	for _, pid := range g.Procs() {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// Remove deletes the group; its processes must have exited.
func (g *Group) Remove() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	var errs []error
	for c, dir := range g.dirs {
		if err := os.Remove(dir); err != nil && !os.IsNotExist(err) {
			errs = append(errs, err)
			continue
		}
		delete(g.dirs, c)
	}
	return errors.Join(errs...)
}

// Close removes the parent group (its worker groups must be gone).
func (m *Manager) Close() error {
	if !m.Enabled() {
		return nil
	}
	var errs []error
	for _, dir := range m.dirs {
		if err := os.Remove(dir); err != nil && !os.IsNotExist(err) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func writeFile(path, value string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(value)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %q to %s: %w", value, path, err)
	}
	return nil
}

func validName(s string) bool {
	if s == "" || s == "." || s == ".." || len(s) > 200 {
		return false
	}
	return !strings.ContainsAny(s, "/\x00\n")
}

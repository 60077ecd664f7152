package cgroup

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// fakeFile creates path (and its directory) with content.
func fakeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestParseSelf(t *testing.T) {
	got := parseSelf("12:cpu,cpuacct:/a\n4:memory:/process_api/x\n0::/user.slice\nbad line\n")
	want := map[string]string{"cpu": "/a", "cpuacct": "/a", "memory": "/process_api/x", "": "/user.slice"}
	if len(got) != len(want) {
		t.Fatalf("got %v", got)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%q: got %q want %q", k, got[k], v)
		}
	}
}

func TestQuota(t *testing.T) {
	for _, tc := range []struct {
		cpus float64
		want int
	}{{0, 0}, {-1, 0}, {1, 100000}, {0.5, 50000}, {2.25, 225000}, {0.001, 1000}} {
		if got := quota(tc.cpus); got != tc.want {
			t.Errorf("quota(%v) = %d, want %d", tc.cpus, got, tc.want)
		}
	}
}

// On a v1 layout (this repository's CI machine has one) the parent group
// lands under the process's own memory and cpu groups, and limits are
// written in v1's files.
func TestV1Layout(t *testing.T) {
	root := t.TempDir()
	fakeFile(t, filepath.Join(root, "memory", "cgroup.procs"), "")
	fakeFile(t, filepath.Join(root, "cpu", "cgroup.procs"), "")
	m, err := New("gray-1", Options{Root: root, Self: "4:memory:/outer\n1:cpu:/\n0::/\n", PID: 1})
	if err != nil {
		t.Fatal(err)
	}
	if m.Version != 1 {
		t.Fatalf("version %d (%s)", m.Version, m.Reason)
	}
	memDir := filepath.Join(root, "memory", "outer", "gray-1")
	cpuDir := filepath.Join(root, "cpu", "gray-1")
	if m.dirs["memory"] != memDir || m.dirs["cpu"] != cpuDir {
		t.Fatalf("dirs %v", m.dirs)
	}
	g, err := m.NewGroup("w-1")
	if err != nil {
		t.Fatal(err)
	}
	// The kernel creates these files; the fake must.
	for _, f := range []string{"memory.limit_in_bytes", "cgroup.procs"} {
		fakeFile(t, filepath.Join(memDir, "w-1", f), "")
	}
	for _, f := range []string{"cpu.cfs_quota_us", "cpu.cfs_period_us", "cgroup.procs"} {
		fakeFile(t, filepath.Join(cpuDir, "w-1", f), "")
	}
	fakeFile(t, filepath.Join(memDir, "w-1", "memory.oom_control"), "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
	if err := g.Set(Limits{MemoryBytes: 1 << 30, CPUs: 1.5}); err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(memDir, "w-1", "memory.limit_in_bytes")); got != "1073741824" {
		t.Errorf("memory limit %q", got)
	}
	if got := read(t, filepath.Join(cpuDir, "w-1", "cpu.cfs_quota_us")); got != "150000" {
		t.Errorf("cpu quota %q", got)
	}
	if err := g.Add(42); err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(cpuDir, "w-1", "cgroup.procs")); got != "42" {
		t.Errorf("procs %q", got)
	}
	if n := g.OOMKills(); n != 2 {
		t.Errorf("oom kills %d", n)
	}
	if err := g.Set(Limits{}); err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(memDir, "w-1", "memory.limit_in_bytes")); got != "-1" {
		t.Errorf("lifted memory limit %q", got)
	}
}

// On v2, where even a leaf move cannot make the group delegate memory and
// cpu, the manager applies no limits and says why.
func TestV2UndelegatableDegrades(t *testing.T) {
	root := t.TempDir()
	own := filepath.Join(root, "svc")
	fakeFile(t, filepath.Join(root, "cgroup.controllers"), "cpuset cpu io memory pids")
	fakeFile(t, filepath.Join(own, "cgroup.controllers"), "cpu memory pids")
	// A read-only subtree_control stands for the kernel's EBUSY.
	fakeFile(t, filepath.Join(own, "cgroup.subtree_control"), "")
	if err := os.Chmod(filepath.Join(own, "cgroup.subtree_control"), 0o444); err != nil {
		t.Fatal(err)
	}
	fakeFile(t, filepath.Join(own, "gray-daemon", "cgroup.procs"), "")
	if os.Geteuid() == 0 {
		t.Skip("root writes read-only files; the EBUSY stand-in does not hold")
	}
	m, err := New("gray-1", Options{Root: root, Self: "0::/svc\n", PID: 7})
	if err != nil {
		t.Fatal(err)
	}
	if m.Version != 0 {
		t.Fatalf("version %d with a subtree_control that never accepts", m.Version)
	}
	if !strings.Contains(m.Reason, "gray-daemon") && !strings.Contains(m.Reason, "subtree_control") {
		t.Errorf("reason %q", m.Reason)
	}
}

func TestV2Layout(t *testing.T) {
	root := t.TempDir()
	own := filepath.Join(root, "svc")
	fakeFile(t, filepath.Join(root, "cgroup.controllers"), "cpuset cpu io memory pids")
	fakeFile(t, filepath.Join(own, "cgroup.controllers"), "cpu memory pids")
	fakeFile(t, filepath.Join(own, "cgroup.subtree_control"), "")
	fakeFile(t, filepath.Join(own, "gray-1", "cgroup.subtree_control"), "")
	m, err := New("gray-1", Options{Root: root, Self: "0::/svc\n", PID: 7})
	if err != nil {
		t.Fatal(err)
	}
	if m.Version != 2 {
		t.Fatalf("version %d (%s)", m.Version, m.Reason)
	}
	if got := read(t, filepath.Join(own, "cgroup.subtree_control")); got != "+memory +cpu" {
		t.Errorf("subtree_control %q", got)
	}
	g, err := m.NewGroup("w-1")
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(own, "gray-1", "w-1")
	for _, f := range []string{"memory.max", "memory.swap.max", "cpu.max"} {
		fakeFile(t, filepath.Join(dir, f), "")
	}
	fakeFile(t, filepath.Join(dir, "memory.events"), "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
	if err := g.Set(Limits{MemoryBytes: 5 << 20, CPUs: 0.25}); err != nil {
		t.Fatal(err)
	}
	for f, want := range map[string]string{"memory.max": "5242880", "memory.swap.max": "0", "cpu.max": "25000 100000"} {
		if got := read(t, filepath.Join(dir, f)); got != want {
			t.Errorf("%s = %q, want %q", f, got, want)
		}
	}
	if n := g.OOMKills(); n != 1 {
		t.Errorf("oom kills %d", n)
	}
}

func TestNoHierarchy(t *testing.T) {
	m, err := New("gray-1", Options{Root: t.TempDir(), Self: "0::/\n", PID: 1})
	if err != nil {
		t.Fatal(err)
	}
	if m.Enabled() || m.Reason == "" {
		t.Fatalf("enabled=%v reason=%q", m.Enabled(), m.Reason)
	}
	g, err := m.NewGroup("w")
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Set(Limits{MemoryBytes: 1}); err != nil {
		t.Fatal(err)
	}
	if err := g.Add(1); err != nil {
		t.Fatal(err)
	}
}

func TestBadNames(t *testing.T) {
	for _, n := range []string{"", ".", "..", "a/b", "a\x00"} {
		if _, err := New(n, Options{Root: t.TempDir(), Self: "0::/\n"}); err == nil {
			t.Errorf("New(%q) accepted", n)
		}
	}
}

// TestRealLimit applies a memory limit to a real process where the machine
// lets this test create groups (root with a memory hierarchy).
func TestRealLimit(t *testing.T) {
	m, err := New("gray-test-"+strings.ReplaceAll(t.Name(), "/", "_"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !m.Enabled() {
		t.Skip("no writable cgroup hierarchy: " + m.Reason)
	}
	defer m.Close()
	g, err := m.NewGroup("w")
	if err != nil {
		t.Fatal(err)
	}
	defer g.Remove()
	if err := g.Set(Limits{MemoryBytes: 64 << 20, CPUs: 1}); err != nil {
		t.Fatal(err)
	}
	// A shell that joins the group and then tries to hold 256 MiB.
	cmd := exec.Command("sh", "-c", `read _; exec python3 -c 'b = bytearray(256 << 20); b[::4096] = b"x" * len(b[::4096])'`)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if err := g.Add(cmd.Process.Pid); err != nil {
		_ = cmd.Process.Kill()
		t.Fatal(err)
	}
	stdin.Write([]byte("go\n"))
	stdin.Close()
	err = cmd.Wait()
	if err == nil {
		t.Fatal("a process over its memory limit exited cleanly")
	}
	if n := g.OOMKills(); n < 1 {
		t.Errorf("oom kills %d after %v", n, err)
	}
}

// A daemon killed with -9 leaves its groups; the next one removes those of
// daemons that are gone and keeps those of live ones.
func TestSweepStale(t *testing.T) {
	root := t.TempDir()
	fakeFile(t, filepath.Join(root, "memory", "cgroup.procs"), "")
	fakeFile(t, filepath.Join(root, "cpu", "cgroup.procs"), "")
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	gone := "gray-abc-" + strconv.Itoa(dead.Process.Pid)
	live := "gray-abc-" + strconv.Itoa(os.Getpid())
	for _, c := range []string{"memory", "cpu"} {
		for _, n := range []string{gone, live} {
			if err := os.MkdirAll(filepath.Join(root, c, n, "w-1"), 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	m, err := New("gray-new-1", Options{Root: root, Self: "4:memory:/\n1:cpu:/\n", PID: 1})
	if err != nil || m.Version != 1 {
		t.Fatalf("%v %+v", err, m)
	}
	if n := m.SweepStale("gray-"); n != 1 {
		t.Errorf("swept %d, want 1", n)
	}
	for _, c := range []string{"memory", "cpu"} {
		if _, err := os.Stat(filepath.Join(root, c, gone)); !os.IsNotExist(err) {
			t.Errorf("%s/%s still there: %v", c, gone, err)
		}
		if _, err := os.Stat(filepath.Join(root, c, live, "w-1")); err != nil {
			t.Errorf("live daemon's group removed: %v", err)
		}
		if _, err := os.Stat(filepath.Join(root, c, "gray-new-1")); err != nil {
			t.Errorf("own group removed: %v", err)
		}
	}
}

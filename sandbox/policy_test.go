package sandbox

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/gray-cluster/gray/sandbox/cgroup"
)

func base() Worker {
	return Worker{
		Argv:        []string{"python", "-u", InnerRuntime + "/gray_worker.py"},
		Interpreter: []string{"/opt/venv", "/root/.pyenv/versions/3.11.7", "/opt/venv/lib/python3.11/site-packages", "/usr/lib/python3.11"},
		Runtime:     "/tmp/gray/s/raylet/runtime",
		Socket:      "/tmp/gray/s/raylet/raylet.sock",
		Tmp:         "/tmp/gray/s/raylet/sandbox/w1/tmp",
		Protected:   []string{"/root", "/tmp/gray/state", "/tmp/gray/s"},
	}
}

// binds lists (kind, src, dst) triples in argv order.
func binds(argv []string) [][3]string {
	var out [][3]string
	for i := 0; i+2 < len(argv); i++ {
		switch argv[i] {
		case "--bind", "--ro-bind", "--dev-bind":
			out = append(out, [3]string{argv[i], argv[i+1], argv[i+2]})
			i += 2
		case "--":
			return out
		}
	}
	return out
}

func hasBind(argv []string, kind, src, dst string) bool {
	for _, b := range binds(argv) {
		if b == [3]string{kind, src, dst} {
			return true
		}
	}
	return false
}

func hasDst(argv []string, dst string) bool {
	for _, b := range binds(argv) {
		if b[2] == dst || strings.HasPrefix(b[2], dst+"/") {
			return true
		}
	}
	return false
}

func TestPlan(t *testing.T) {
	type check func(t *testing.T, argv []string)
	for _, tc := range []struct {
		name   string
		modify func(w *Worker)
		err    error
		checks []check
	}{
		{
			name: "default worker",
			checks: []check{
				func(t *testing.T, a []string) {
					for _, b := range [][3]string{
						{"--ro-bind", "/opt/venv", "/opt/venv"},
						{"--ro-bind", "/root/.pyenv/versions/3.11.7", "/root/.pyenv/versions/3.11.7"},
						{"--ro-bind", "/tmp/gray/s/raylet/runtime", InnerRuntime},
						{"--bind", "/tmp/gray/s/raylet/raylet.sock", InnerSocket},
						{"--bind", "/tmp/gray/s/raylet/sandbox/w1/tmp", "/tmp"},
					} {
						if !hasBind(a, b[0], b[1], b[2]) {
							t.Errorf("missing %v in %v", b, a)
						}
					}
				},
				func(t *testing.T, a []string) {
					// Nested interpreter paths ride on their parent; /usr is
					// the system's; no GPU devices or /sys without GPUs.
					for _, dst := range []string{"/opt/venv/lib/python3.11/site-packages", "/usr/lib/python3.11", "/dev/nvidiactl", "/sys"} {
						for _, b := range binds(a) {
							if b[2] == dst {
								t.Errorf("unexpected bind %v", b)
							}
						}
					}
				},
				func(t *testing.T, a []string) {
					for _, flag := range []string{"--unshare-pid", "--die-with-parent", "--new-session", "--unshare-ipc"} {
						if !contains(a, flag) {
							t.Errorf("missing %s", flag)
						}
					}
					if contains(a, "--unshare-net") {
						t.Error("workers need the host network to reach the Ray Client port")
					}
					if i := index(a, "--"); i < 0 || !reflect.DeepEqual(a[i+1:], base().Argv) {
						t.Errorf("argv tail %v", a)
					}
				},
				func(t *testing.T, a []string) {
					// No bind shows the home, state dir or session dir.
					for _, b := range binds(a) {
						for _, p := range []string{"/root", "/tmp/gray/state", "/tmp/gray/s"} {
							if b[1] == p || b[2] == p || b[2] == "/tmp/gray" || b[2] == "/" {
								t.Errorf("bind %v shows %s", b, p)
							}
						}
					}
				},
			},
		},
		{
			name:   "working dir bound read-only at its path",
			modify: func(w *Worker) { w.WorkingDir = "/tmp/gray/s/packages/_ray_pkg_abc" },
			checks: []check{func(t *testing.T, a []string) {
				if !hasBind(a, "--ro-bind", "/tmp/gray/s/packages/_ray_pkg_abc", "/tmp/gray/s/packages/_ray_pkg_abc") {
					t.Errorf("working dir not bound read-only: %v", a)
				}
			}},
		},
		{
			name: "runtime_env python env and py_modules bound read-only at their paths",
			modify: func(w *Worker) {
				w.ReadOnly = []string{"/tmp/gray/s/runtime_resources/pip/abc", "/tmp/gray/s/packages/_ray_pkg_mod"}
			},
			checks: []check{func(t *testing.T, a []string) {
				for _, d := range []string{"/tmp/gray/s/runtime_resources/pip/abc", "/tmp/gray/s/packages/_ray_pkg_mod"} {
					if !hasBind(a, "--ro-bind", d, d) {
						t.Errorf("%s not bound read-only: %v", d, a)
					}
				}
			}},
		},
		{
			name:   "a read-only dir that holds the session dir",
			modify: func(w *Worker) { w.ReadOnly = []string{"/tmp/gray"} },
			err:    ErrExposes,
		},
		{
			name:   "a relative read-only dir",
			modify: func(w *Worker) { w.ReadOnly = []string{"pip/abc"} },
			err:    ErrBadSpec,
		},
		{
			name: "only the assigned GPUs' device nodes",
			modify: func(w *Worker) {
				w.GPUs = []int{2, 0}
				w.DevDir = "/fake/dev"
				w.DevFiles = []string{"nvidia0", "nvidia1", "nvidia2", "nvidia3", "nvidiactl", "nvidia-uvm", "nvidia-modeset"}
			},
			checks: []check{func(t *testing.T, a []string) {
				for _, n := range []string{"nvidia0", "nvidia2", "nvidiactl", "nvidia-uvm"} {
					if !hasBind(a, "--dev-bind", "/fake/dev/"+n, "/dev/"+n) {
						t.Errorf("missing %s", n)
					}
				}
				for _, n := range []string{"nvidia1", "nvidia3", "nvidia-modeset", "nvidia-uvm-tools"} {
					if hasDst(a, "/dev/"+n) {
						t.Errorf("unassigned or absent device %s bound", n)
					}
				}
			}},
		},
		{
			// A mock GPU (--gpu-mock) has no node: nothing is bound for it,
			// and never another GPU's node instead.
			name:   "assigned GPU without a device node",
			modify: func(w *Worker) { w.GPUs = []int{1}; w.DevFiles = []string{"nvidia0", "nvidiactl"} },
			checks: []check{func(t *testing.T, a []string) {
				if hasDst(a, "/dev/nvidia0") || hasDst(a, "/dev/nvidia1") || !hasDst(a, "/dev/nvidiactl") {
					t.Errorf("device binds %v", binds(a))
				}
			}},
		},
		{
			name:   "sharing a directory that holds the state dir",
			modify: func(w *Worker) { w.Shared = []Share{{Path: "/tmp"}} },
			err:    ErrExposes,
		},
		{
			name:   "sharing the whole home",
			modify: func(w *Worker) { w.Shared = []Share{{Path: "/root", ReadOnly: true}} },
			err:    ErrExposes,
		},
		{
			name:   "interpreter at the filesystem root",
			modify: func(w *Worker) { w.Interpreter = append(w.Interpreter, "/") },
			err:    ErrExposes,
		},
		{
			name:   "a shared data set, read-only",
			modify: func(w *Worker) { w.Shared = []Share{{Path: "/data/sets", ReadOnly: true}, {Path: "/scratch"}} },
			checks: []check{func(t *testing.T, a []string) {
				if !hasBind(a, "--ro-bind", "/data/sets", "/data/sets") || !hasBind(a, "--bind", "/scratch", "/scratch") {
					t.Errorf("shares not bound: %v", a)
				}
			}},
		},
		{
			name:   "fds for cgroup placement",
			modify: func(w *Worker) { w.InfoFD, w.BlockFD = 3, 4 },
			checks: []check{func(t *testing.T, a []string) {
				if i := index(a, "--info-fd"); i < 0 || a[i+1] != "3" {
					t.Errorf("info fd: %v", a)
				}
				if i := index(a, "--block-fd"); i < 0 || a[i+1] != "4" {
					t.Errorf("block fd: %v", a)
				}
			}},
		},
		{name: "no argv", modify: func(w *Worker) { w.Argv = nil }, err: ErrBadSpec},
		{name: "relative socket", modify: func(w *Worker) { w.Socket = "raylet.sock" }, err: ErrBadSpec},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := base()
			if tc.modify != nil {
				tc.modify(&w)
			}
			argv, err := Plan(w)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("err %v, want %v", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range tc.checks {
				c(t, argv)
			}
		})
	}
}

func TestLimitsFor(t *testing.T) {
	for _, tc := range []struct {
		res  map[string]float64
		want cgroup.Limits
	}{
		{map[string]float64{"CPU": 1}, cgroup.Limits{CPUs: 1}},
		{map[string]float64{"CPU": 0.5, "memory": 200 << 20}, cgroup.Limits{MemoryBytes: 200 << 20, CPUs: 0.5}},
		{map[string]float64{"GPU": 1}, cgroup.Limits{}},
		{nil, cgroup.Limits{}},
	} {
		if got := LimitsFor(tc.res); got != tc.want {
			t.Errorf("LimitsFor(%v) = %+v, want %+v", tc.res, got, tc.want)
		}
	}
}

func TestParseShare(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Share
		ok   bool
	}{
		{"/data", Share{Path: "/data"}, true},
		{"/data/:ro", Share{Path: "/data", ReadOnly: true}, true},
		{"/data:rw", Share{Path: "/data"}, true},
		{"data", Share{}, false},
	} {
		got, err := ParseShare(tc.in)
		if (err == nil) != tc.ok || (tc.ok && got != tc.want) {
			t.Errorf("ParseShare(%q) = %+v, %v", tc.in, got, err)
		}
	}
}

func TestDedupe(t *testing.T) {
	got := dedupe([]string{"/a/b", "/a", "/c/", "/a", "", "/c/d/e", "/ab"})
	want := []string{"/a", "/c", "/ab"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("dedupe = %v, want %v", got, want)
	}
}

func contains(a []string, s string) bool { return index(a, s) >= 0 }

func index(a []string, s string) int {
	for i, x := range a {
		if x == s {
			return i
		}
	}
	return -1
}

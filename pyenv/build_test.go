package pyenv

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// fakePython stands in for an interpreter: it answers the builder's probes,
// makes a venv whose bin/python is itself, and "installs" by logging the
// command to $FAKE_LOG (failing for a requirement named nope, as pip does
// for a package that does not exist). Until $FAKE_GATE exists, installs
// wait for it, so that concurrent callers overlap the build.
const fakePython = `#!/bin/bash
case "$1" in
-c)
  case "$2" in
  *getsitepackages*) echo '{"executable": "/fake/python3", "version": "3.fake", "site": ["/fake/site-packages"]}' ;;
  *purelib*) d=$(cd "$(dirname "$0")/.." && pwd); mkdir -p "$d/lib/site"; echo "$d/lib/site" ;;
  "import ray") exit 0 ;;
  *) exit 3 ;;
  esac ;;
-m)
  case "$2" in
  venv) mkdir -p "$4/bin" && ln -s "$0" "$4/bin/python" ;;
  pip|uv)
    while [ -n "$FAKE_GATE" ] && [ ! -e "$FAKE_GATE" ]; do sleep 0.02; done
    echo "$2 $3 $4 $5" >> "$FAKE_LOG"
    if [ "$3" = "--version" ]; then exit 0; fi
    if grep -q "^nope" "$5" 2>/dev/null; then
      echo "ERROR: No matching distribution found for nope" >&2; exit 1
    fi
    echo "Successfully installed $(cat "$5" 2>/dev/null)" ;;
  esac ;;
esac
`

func setup(t *testing.T) (python, log string) {
	t.Helper()
	dir := t.TempDir()
	python = filepath.Join(dir, "python")
	if err := os.WriteFile(python, []byte(fakePython), 0o755); err != nil {
		t.Fatal(err)
	}
	log = filepath.Join(dir, "installs.log")
	t.Setenv("FAKE_LOG", log)
	t.Setenv("FAKE_GATE", "")
	return python, log
}

func installs(t *testing.T, log string, what string) int {
	t.Helper()
	b, err := os.ReadFile(log)
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), what)
}

func TestEnsureBuildsOnceForConcurrentCallers(t *testing.T) {
	python, log := setup(t)
	gate := filepath.Join(t.TempDir(), "go")
	t.Setenv("FAKE_GATE", gate)
	root := t.TempDir()
	// Two builders on one root stand for two processes (lock file).
	b1, _ := NewBuilder(root, python, nil)
	b2, _ := NewBuilder(root, python, nil)
	spec := Spec{Tool: Pip, Packages: []string{"six==1.16.0"}}
	const callers = 8
	envs := make([]Env, callers)
	errs := make([]error, callers)
	var wg sync.WaitGroup
	for i := range callers {
		b := b1
		if i%2 == 1 {
			b = b2
		}
		wg.Go(func() { envs[i], errs[i] = b.Ensure(context.Background(), spec, nil) })
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for i := range callers {
		if errs[i] != nil {
			t.Fatalf("caller %d: %v", i, errs[i])
		}
		if envs[i] != envs[0] {
			t.Fatalf("caller %d got %+v, caller 0 %+v", i, envs[i], envs[0])
		}
	}
	if n := installs(t, log, "pip install -r"); n != 1 {
		t.Fatalf("pip install ran %d times, want 1", n)
	}
	if got := b1.Builds() + b2.Builds(); got != 1 {
		t.Fatalf("builds = %d, want 1", got)
	}
	if _, err := os.Stat(filepath.Join(envs[0].Dir, ReadyFile)); err != nil {
		t.Fatalf("no ready mark: %v", err)
	}
	if envs[0].Python != filepath.Join(envs[0].Dir, "bin", "python") {
		t.Fatalf("python = %s", envs[0].Python)
	}
	pth, err := os.ReadFile(filepath.Join(envs[0].Dir, "lib", "site", basePth))
	if err != nil || !strings.Contains(string(pth), `site.addsitedir("/fake/site-packages")`) {
		t.Fatalf("base layering: %q, %v", pth, err)
	}
	// A new builder (a restarted raylet) finds the env on disk.
	b3, _ := NewBuilder(root, python, nil)
	if env, err := b3.Ensure(context.Background(), spec, nil); err != nil || env != envs[0] || b3.Builds() != 0 {
		t.Fatalf("rebuilt after restart: %+v %v builds=%d", env, err, b3.Builds())
	}
	if got, ok := b1.Lookup(spec); !ok || got != envs[0] {
		t.Fatalf("Lookup = %+v, %v", got, ok)
	}
}

func TestEnsureFailureIsNotCached(t *testing.T) {
	python, log := setup(t)
	b, _ := NewBuilder(t.TempDir(), python, nil)
	spec := Spec{Tool: Pip, Packages: []string{"nope==9"}}
	var lines []string
	_, err := b.Ensure(context.Background(), spec, func(l string) { lines = append(lines, l) })
	var be *BuildError
	if !errors.As(err, &be) || !errors.Is(err, ErrBuild) || !strings.Contains(err.Error(), "No matching distribution found for nope") {
		t.Fatalf("err = %v", err)
	}
	if len(lines) == 0 || !strings.Contains(strings.Join(lines, "\n"), "No matching distribution") {
		t.Fatalf("progress lines = %q", lines)
	}
	if _, ok := b.Lookup(spec); ok {
		t.Fatal("a failed env is ready")
	}
	entries, _ := os.ReadDir(b.Root())
	for _, e := range entries {
		if e.IsDir() {
			t.Fatalf("a failed build left %s", e.Name())
		}
	}
	if _, err := b.Ensure(context.Background(), spec, nil); err == nil {
		t.Fatal("second try succeeded")
	}
	if n := installs(t, log, "pip install -r"); n != 2 {
		t.Fatalf("pip install ran %d times, want 2 (failures are retried)", n)
	}
}

func TestEnsureSteps(t *testing.T) {
	cases := []struct {
		name string
		spec Spec
		want []string // log lines in order
	}{
		{"pip", Spec{Tool: Pip, Packages: []string{"six"}}, []string{"pip install -r"}},
		{"pip version and check", Spec{Tool: Pip, Packages: []string{"six"}, Version: "==23.3.1", Check: true},
			[]string{"pip install --disable-pip-version-check --no-cache-dir", "pip install -r", "pip check"}},
		{"uv", Spec{Tool: UV, Packages: []string{"six"}}, []string{"uv --version", "uv pip install -r"}},
		{"uv version and check", Spec{Tool: UV, Packages: []string{"six"}, Version: ">=0.4", Check: true},
			[]string{"pip install --disable-pip-version-check --no-cache-dir", "uv pip install -r", "uv pip check"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			python, log := setup(t)
			b, _ := NewBuilder(t.TempDir(), python, nil)
			if _, err := b.Ensure(context.Background(), c.spec, nil); err != nil {
				t.Fatal(err)
			}
			raw, _ := os.ReadFile(log)
			got := strings.Split(strings.TrimSpace(string(raw)), "\n")
			if len(got) != len(c.want) {
				t.Fatalf("steps %q, want %q", got, c.want)
			}
			for i := range got {
				if !strings.HasPrefix(got[i], c.want[i]) {
					t.Fatalf("step %d = %q, want %q...", i, got[i], c.want[i])
				}
			}
		})
	}
}

func TestEnsureCancelledIsNotCached(t *testing.T) {
	python, log := setup(t)
	t.Setenv("FAKE_GATE", filepath.Join(t.TempDir(), "never"))
	b, _ := NewBuilder(t.TempDir(), python, nil)
	ctx, cancel := context.WithCancel(context.Background())
	spec := Spec{Tool: Pip, Packages: []string{"six"}}
	done := make(chan error)
	go func() { _, err := b.Ensure(ctx, spec, func(string) {}); done <- err }()
	cancel()
	if err := <-done; err == nil {
		t.Fatal("a cancelled build succeeded")
	}
	t.Setenv("FAKE_GATE", "")
	if _, err := b.Ensure(context.Background(), spec, nil); err != nil {
		t.Fatalf("after a cancelled build: %v", err)
	}
	if n := installs(t, log, "pip install -r"); n != 1 {
		t.Fatalf("installs = %d", n)
	}
}

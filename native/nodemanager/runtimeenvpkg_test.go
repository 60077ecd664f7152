package nodemanager

import (
	"archive/zip"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gray-cluster/gray/internal/testlog"
	commonpb "github.com/gray-cluster/gray/proto/ray/commonpb"
	raypb "github.com/gray-cluster/gray/proto/ray/raypb"
)

type zipMember struct {
	name string
	body string
	mode os.FileMode
}

func makeZip(t *testing.T, members ...zipMember) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, m := range members {
		h := &zip.FileHeader{Name: m.name, Method: zip.Deflate}
		if m.mode != 0 {
			h.SetMode(m.mode)
		}
		w, err := zw.CreateHeader(h)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write([]byte(m.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestUnzipKeepsTopLevelDirAndModes(t *testing.T) {
	dir := t.TempDir()
	data := makeZip(t,
		zipMember{name: "mypkg/"},
		zipMember{name: "mypkg/__init__.py", body: "X = 1\n"},
		zipMember{name: "mypkg/sub/run.sh", body: "#!/bin/sh\n", mode: 0o755},
		zipMember{name: "empty/", mode: os.ModeDir | 0o755},
	)
	if err := unzipInto(data, dir, 1<<20, 100); err != nil {
		t.Fatal(err)
	}
	// A gcs:// package keeps its top-level directory (py_modules zips carry
	// the package directory's name), as the stock agent does.
	if got := readFile(t, filepath.Join(dir, "mypkg", "__init__.py")); got != "X = 1\n" {
		t.Errorf("__init__.py = %q", got)
	}
	st, err := os.Stat(filepath.Join(dir, "mypkg", "sub", "run.sh"))
	if err != nil || st.Mode().Perm() != 0o755 {
		t.Errorf("run.sh: %v %v", st, err)
	}
	if st, err := os.Stat(filepath.Join(dir, "empty")); err != nil || !st.IsDir() {
		t.Errorf("empty dir: %v", err)
	}
}

func TestUnzipRefusesZipSlipAndBombs(t *testing.T) {
	outer := t.TempDir()
	dir := filepath.Join(outer, "pkg")
	for _, tc := range []struct {
		name    string
		data    []byte
		max     int64
		entries int
	}{
		{"dotdot", makeZip(t, zipMember{name: "ok.py", body: "1"}, zipMember{name: "../evil.py", body: "x"}), 1 << 20, 100},
		{"nested dotdot", makeZip(t, zipMember{name: "a/../../evil.py", body: "x"}), 1 << 20, 100},
		{"absolute", makeZip(t, zipMember{name: "/tmp/evil.py", body: "x"}), 1 << 20, 100},
		{"backslash", makeZip(t, zipMember{name: "..\\evil.py", body: "x"}), 1 << 20, 100},
		{"drive", makeZip(t, zipMember{name: "C:/evil.py", body: "x"}), 1 << 20, 100},
		{"too big", makeZip(t, zipMember{name: "a", body: string(make([]byte, 600))}, zipMember{name: "b", body: string(make([]byte, 600))}), 1000, 100},
		{"too many", makeZip(t, zipMember{name: "a"}, zipMember{name: "b"}, zipMember{name: "c"}), 1 << 20, 2},
	} {
		os.RemoveAll(dir)
		os.MkdirAll(dir, 0o755)
		err := unzipInto(tc.data, dir, tc.max, tc.entries)
		if !errors.Is(err, errUnsafeZip) {
			t.Errorf("%s: err %v, want errUnsafeZip", tc.name, err)
		}
		if _, err := os.Stat(filepath.Join(outer, "evil.py")); err == nil {
			t.Fatalf("%s: a file was written outside the package directory", tc.name)
		}
	}
	if err := unzipInto([]byte("not a zip"), dir, 1<<20, 10); err == nil {
		t.Error("garbage unpacked")
	}
}

// countingFetch serves packages from a map and counts fetches per URI.
type countingFetch struct {
	mu    sync.Mutex
	pkgs  map[string][]byte
	calls map[string]int
	fail  atomic.Int32 // fail this many fetches first
	gate  chan struct{}
}

func (f *countingFetch) fetch(ctx context.Context, uri string) ([]byte, error) {
	f.mu.Lock()
	f.calls[uri]++
	gate := f.gate
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if f.fail.Add(-1) >= 0 {
		return nil, errors.New("injected failure")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.pkgs[uri]
	if !ok {
		return nil, fmt.Errorf("%q: %w", uri, errKVMissing)
	}
	return b, nil
}

func (f *countingFetch) n(uri string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[uri]
}

func TestPkgCacheUnpacksOncePerURI(t *testing.T) {
	root := t.TempDir()
	const uri = "gcs://_ray_pkg_0123.zip"
	f := &countingFetch{pkgs: map[string][]byte{uri: makeZip(t, zipMember{name: "mod.py", body: "V = 2\n"})},
		calls: map[string]int{}, gate: make(chan struct{})}
	c := newPkgCache(root, f.fetch, testlog.New(t))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// Concurrent set-ups of one URI share one fetch.
	const n = 4
	dirs := make(chan string, n)
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		go func() {
			d, err := c.dir(ctx, workingDirFiles, uri)
			dirs <- d
			errs <- err
		}()
	}
	close(f.gate)
	want := filepath.Join(root, workingDirFiles, "_ray_pkg_0123")
	for i := 0; i < n; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
		if d := <-dirs; d != want {
			t.Fatalf("dir %q, want %q", d, want)
		}
	}
	if got := readFile(t, filepath.Join(want, "mod.py")); got != "V = 2\n" {
		t.Errorf("mod.py = %q", got)
	}
	if d, err := c.dir(ctx, workingDirFiles, uri); err != nil || d != want {
		t.Fatalf("again: %q %v", d, err)
	}
	if got := f.n(uri); got != 1 {
		t.Errorf("%d fetches of one URI, want 1", got)
	}
	// The same URI as a py_module lives in the py_modules tree.
	d, err := c.dir(ctx, pyModulesFiles, uri)
	if err != nil || d != filepath.Join(root, pyModulesFiles, "_ray_pkg_0123") {
		t.Fatalf("py_modules dir %q %v", d, err)
	}
}

func TestPkgCacheFailureIsNotCached(t *testing.T) {
	root := t.TempDir()
	const uri = "gcs://_ray_pkg_77.zip"
	f := &countingFetch{pkgs: map[string][]byte{}, calls: map[string]int{}}
	f.fail.Store(1)
	c := newPkgCache(root, f.fetch, testlog.New(t))
	ctx := context.Background()
	if _, err := c.dir(ctx, workingDirFiles, uri); !errors.Is(err, ErrPackage) {
		t.Fatalf("err %v", err)
	}
	if _, err := c.dir(ctx, workingDirFiles, uri); !errors.Is(err, errKVMissing) {
		t.Fatalf("missing package: err %v", err)
	}
	f.mu.Lock()
	f.pkgs[uri] = makeZip(t, zipMember{name: "m.py", body: "1"})
	f.mu.Unlock()
	if _, err := c.dir(ctx, workingDirFiles, uri); err != nil {
		t.Fatalf("after upload: %v", err)
	}
	// A zip-slip package fails set-up and leaves nothing behind.
	const bad = "gcs://_ray_pkg_bad.zip"
	f.mu.Lock()
	f.pkgs[bad] = makeZip(t, zipMember{name: "../../x.py", body: "1"})
	f.mu.Unlock()
	if _, err := c.dir(ctx, workingDirFiles, bad); !errors.Is(err, errUnsafeZip) {
		t.Fatalf("zip-slip package: err %v", err)
	}
	ents, _ := os.ReadDir(filepath.Join(root, workingDirFiles))
	if len(ents) != 1 || ents[0].Name() != "_ray_pkg_77" {
		t.Errorf("left behind: %v", ents)
	}
	// local:// directories are used in place; a missing one is an error.
	if d, err := c.dir(ctx, workingDirFiles, "local://"+root); err != nil || d != root {
		t.Errorf("local: %q %v", d, err)
	}
	if _, err := c.dir(ctx, workingDirFiles, "local://"+root+"/nope"); !errors.Is(err, ErrPackage) {
		t.Errorf("missing local dir: %v", err)
	}
}

// A lease with working_dir and py_modules reads the packages from the GCS
// KV (namespace none, key = URI), unpacks them under the session's
// runtime_resources, and starts its worker there; another lease of the
// same env reuses both the packages and the worker.
func TestLeaseWorkingDirFromGCS(t *testing.T) {
	tn := newTestNode(t, true, nil)
	const wd, mod = "gcs://_ray_pkg_aaaa.zip", "gcs://_ray_pkg_bbbb.zip"
	tn.gcs.kvPut("", wd, makeZip(t, zipMember{name: "helper.py", body: "X = 1\n"}))
	tn.gcs.kvPut("", mod, makeZip(t, zipMember{name: "mypkg/__init__.py", body: "Y = 2\n"}))
	renv := fmt.Sprintf(`{"working_dir": %q, "py_modules": [%q]}`, wd, mod)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var started *worker
	spawned := make(chan *worker, 4)
	prev := tn.r.spawnHook
	tn.r.spawnHook = func(w *worker) { spawned <- w; prev(w) }

	spec := leaseSpec(1, jobID(1), owner1, map[string]float64{"CPU": 1})
	spec.RuntimeEnvInfo = &commonpb.RuntimeEnvInfo{SerializedRuntimeEnv: renv}
	rep := waitLease(t, tn.requestAsync(ctx, spec, false))
	if rep.GetWorkerAddress() == nil {
		t.Fatalf("lease: %v", rep)
	}
	select {
	case started = <-spawned:
	case <-ctx.Done():
		t.Fatal("no worker started")
	}
	session := tn.r.cfg.SessionDir
	wantWD := filepath.Join(session, "runtime_resources", workingDirFiles, "_ray_pkg_aaaa")
	wantMod := filepath.Join(session, "runtime_resources", pyModulesFiles, "_ray_pkg_bbbb")
	if started.env.cwd != wantWD {
		t.Errorf("worker cwd %q, want %q", started.env.cwd, wantWD)
	}
	if got := fmt.Sprint(started.env.pythonPath); got != fmt.Sprint([]string{wantMod, wantWD}) {
		t.Errorf("worker PYTHONPATH head %s", got)
	}
	if got := readFile(t, filepath.Join(wantWD, "helper.py")); got != "X = 1\n" {
		t.Errorf("helper.py %q", got)
	}
	if got := readFile(t, filepath.Join(wantMod, "mypkg", "__init__.py")); got != "Y = 2\n" {
		t.Errorf("mypkg %q", got)
	}
	if _, err := tn.nm.ReturnWorkerLease(ctx, &raypb.ReturnWorkerLeaseRequest{LeaseId: spec.LeaseId}); err != nil {
		t.Fatal(err)
	}
	spec2 := leaseSpec(2, jobID(1), owner1, map[string]float64{"CPU": 1})
	spec2.RuntimeEnvInfo = &commonpb.RuntimeEnvInfo{SerializedRuntimeEnv: renv}
	rep2 := waitLease(t, tn.requestAsync(ctx, spec2, false))
	if string(rep2.GetWorkerAddress().GetWorkerId()) != string(started.id[:]) {
		t.Errorf("the second lease of the same env got another worker")
	}
	if n := len(tn.gcs.rec.get("InternalKVGet")); n != 2 {
		t.Errorf("%d KV reads for two packages over two leases, want 2", n)
	}

	// A package missing from the GCS is a runtime env set-up failure.
	spec3 := leaseSpec(3, jobID(1), owner1, map[string]float64{"CPU": 1})
	spec3.RuntimeEnvInfo = &commonpb.RuntimeEnvInfo{SerializedRuntimeEnv: `{"working_dir": "gcs://_ray_pkg_gone.zip"}`}
	rep3 := waitLease(t, tn.requestAsync(ctx, spec3, false))
	if !rep3.GetCanceled() || rep3.GetFailureType().String() != "SCHEDULING_CANCELLED_RUNTIME_ENV_SETUP_FAILED" {
		t.Errorf("missing package: %v", rep3)
	}
}

// A package directory already in runtime_resources (another raylet of the
// session unpacked it) is used without fetching: gcs:// names are content
// hashes and directories appear there only complete.
func TestPkgCacheReusesUnpackedDir(t *testing.T) {
	root := t.TempDir()
	done := filepath.Join(root, workingDirFiles, "_ray_pkg_done")
	if err := os.MkdirAll(done, 0o755); err != nil {
		t.Fatal(err)
	}
	f := &countingFetch{pkgs: map[string][]byte{}, calls: map[string]int{}}
	c := newPkgCache(root, f.fetch, testlog.New(t))
	d, err := c.dir(context.Background(), workingDirFiles, "gcs://_ray_pkg_done.zip")
	if err != nil || d != done {
		t.Fatalf("%q %v", d, err)
	}
	if n := f.n("gcs://_ray_pkg_done.zip"); n != 0 {
		t.Errorf("%d fetches", n)
	}
}

// A package set-up that outlasts config.setup_timeout_seconds fails with a
// runtime env error saying so.
func TestPrepareRuntimeEnvTimeout(t *testing.T) {
	env, err := parseRuntimeEnv(leaseWithEnv(`{"working_dir": "gcs://_ray_pkg_slow.zip", "config": {"setup_timeout_seconds": 1}}`))
	if err != nil || env.setupTimeout != time.Second {
		t.Fatalf("%+v %v", env, err)
	}
	if e, _ := parseRuntimeEnv(leaseWithEnv(`{"working_dir": "gcs://_ray_pkg_slow.zip", "config": {"setup_timeout_seconds": -1}}`)); e.setupTimeout != 0 {
		t.Errorf("-1: %v", e.setupTimeout)
	}
	if _, err := parseRuntimeEnv(leaseWithEnv(`{"working_dir": "gcs://_ray_pkg_slow.zip", "config": {"setup_timeout_seconds": 0}}`)); !errors.Is(err, ErrRuntimeEnv) {
		t.Errorf("0: %v", err)
	}
	f := &countingFetch{pkgs: map[string][]byte{}, calls: map[string]int{}, gate: make(chan struct{})}
	r := &Raylet{ctx: context.Background(), pkgs: newPkgCache(t.TempDir(), f.fetch, testlog.New(t))}
	env.setupTimeout = 50 * time.Millisecond
	done := make(chan error, 1)
	go func() { _, err := r.prepareRuntimeEnv(context.Background(), env, nil); done <- err }()
	select {
	case err := <-done:
		if !errors.Is(err, ErrRuntimeEnv) || !strings.Contains(err.Error(), "setup_timeout_seconds") {
			t.Errorf("err %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("set-up did not time out")
	}
}

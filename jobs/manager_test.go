package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

var ctx = context.Background()

func TestSucceededJobRecordsTimesLogAndExitCode(t *testing.T) {
	m, clk := testManager(t, nil)
	start := clk.Now().UnixMilli()
	sid, err := m.Submit(ctx, Request{Entrypoint: "echo out; echo err >&2", Metadata: map[string]string{"k": "v"}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(sid, "raysubmit_") || len(sid) != len("raysubmit_")+16 || strings.ContainsAny(sid[10:], "IloO0") {
		t.Fatalf("submission id %q is not raysubmit_ + 16 unambiguous characters", sid)
	}
	rec := wait(t, m, sid)
	if rec.Status != Succeeded || rec.DriverExitCode == nil || *rec.DriverExitCode != 0 || rec.ErrorType != "" {
		t.Fatalf("record %+v", rec)
	}
	if rec.StartTime != start || rec.EndTime != start {
		t.Fatalf("times %d..%d, want the clock's %d", rec.StartTime, rec.EndTime, start)
	}
	d, err := m.Job(ctx, sid)
	if err != nil {
		t.Fatal(err)
	}
	if d.Type != TypeSubmission || *d.Message != "Job finished successfully." || d.JobID != nil || d.Metadata["k"] != "v" ||
		*d.DriverNodeID != "aa" || *d.DriverAgentHTTPAddress != "http://127.0.0.1:8265" {
		t.Fatalf("details %+v", d)
	}
	logs, err := m.Logs(ctx, sid)
	if err != nil {
		t.Fatal(err)
	}
	want := "Running entrypoint for job " + sid + ": echo out; echo err >&2\nout\nerr\n"
	if logs != want {
		t.Fatalf("logs %q, want %q", logs, want)
	}
}

func TestFailedJobReportsExitCodeAndLastLines(t *testing.T) {
	m, _ := testManager(t, nil)
	sid, err := m.Submit(ctx, Request{Entrypoint: "for i in 1 2 3 4 5 6 7 8 9 10 11 12; do echo line$i; done; exit 7"})
	if err != nil {
		t.Fatal(err)
	}
	rec := wait(t, m, sid)
	if rec.Status != Failed || rec.ErrorType != CommandError || *rec.DriverExitCode != 7 {
		t.Fatalf("record %+v", rec)
	}
	want := "Job entrypoint command failed with exit code 7, last available logs (truncated to 20,000 chars):\nline3\nline4\nline5\nline6\nline7\nline8\nline9\nline10\nline11\nline12"
	if rec.Message != want {
		t.Fatalf("message %q, want %q", rec.Message, want)
	}
}

func TestJobKilledBySignalHasNegativeExitCode(t *testing.T) {
	m, _ := testManager(t, nil)
	sid, _ := m.Submit(ctx, Request{Entrypoint: "kill -9 $$"})
	rec := wait(t, m, sid)
	if rec.Status != Failed || *rec.DriverExitCode != -9 {
		t.Fatalf("record %+v", rec)
	}
}

func TestEntrypointEnvironmentAndPackages(t *testing.T) {
	pkgs := map[string][]byte{
		"gcs://_ray_pkg_aaaa.zip": makeZip(t, map[string]string{"mod.py": "V = 1\n", "sub/data.txt": "data\n"}),
		"gcs://_ray_pkg_bbbb.zip": makeZip(t, map[string]string{"pm/__init__.py": "W = 2\n"}),
	}
	for _, native := range []bool{false, true} {
		m, _ := testManager(t, func(c *Config) {
			c.Packages = func(_ context.Context, _, uri string) ([]byte, error) {
				if b, ok := pkgs[uri]; ok {
					return b, nil
				}
				return nil, errors.New("no such package")
			}
			if native {
				a := c.Addresses
				c.Addresses = func() Addresses { x := a(); x.GCS = "10.0.0.1:6379"; return x }
			}
		})
		re := map[string]any{
			"working_dir": "gcs://_ray_pkg_aaaa.zip", "py_modules": []any{"gcs://_ray_pkg_bbbb.zip"},
			"env_vars": map[string]any{"MYVAR": "v 1"},
		}
		script := `cat sub/data.txt; ls "${PYTHONPATH##*:}"; echo "MYVAR=$MYVAR"; echo "ADDR=$RAY_ADDRESS"; echo "API=$RAY_API_SERVER_ADDRESS"; ` +
			`echo "UNBUF=$PYTHONUNBUFFERED"; echo "JOBID=${RAY_JOB_ID:-unset}"; echo "PP=$PYTHONPATH"; echo "CFG=$RAY_JOB_CONFIG_JSON_ENV_VAR"`
		sid, err := m.Submit(ctx, Request{Entrypoint: script, RuntimeEnv: re, Metadata: map[string]string{"team": "a"}})
		if err != nil {
			t.Fatal(err)
		}
		if rec := wait(t, m, sid); rec.Status != Succeeded {
			logs, _ := m.Logs(ctx, sid)
			t.Fatalf("native=%v: %+v\n%s", native, rec, logs)
		}
		logs, _ := m.Logs(ctx, sid)
		_, logs, _ = strings.Cut(logs, "\n") // past "Running entrypoint ...", which quotes the script
		addr := "ray://127.0.0.1:10001"
		if native {
			addr = "10.0.0.1:6379"
		}
		for _, want := range []string{"data\npm\n", "MYVAR=v 1\n", "ADDR=" + addr + "\n", "API=http://127.0.0.1:8265\n", "UNBUF=1\n", "JOBID=unset\n"} {
			if !strings.Contains(logs, want) {
				t.Errorf("native=%v: log lacks %q:\n%s", native, want, logs)
			}
		}
		pp := between(logs, "PP=", "\n")
		parts := strings.Split(pp, ":")
		if len(parts) != 2 || !strings.HasSuffix(parts[0], sid+"/working_dir") || !strings.HasSuffix(parts[1], sid+"/py_modules/0") {
			t.Errorf("PYTHONPATH %q: want the working_dir, then the py_module", pp)
		}
		var cfg struct {
			RuntimeEnv map[string]any    `json:"runtime_env"`
			Metadata   map[string]string `json:"metadata"`
		}
		if err := json.Unmarshal([]byte(between(logs, "CFG=", "\n")), &cfg); err != nil {
			t.Fatal(err)
		}
		if cfg.Metadata["job_submission_id"] != sid || cfg.Metadata["job_name"] != sid || cfg.Metadata["team"] != "a" ||
			cfg.RuntimeEnv["working_dir"] != "gcs://_ray_pkg_aaaa.zip" {
			t.Errorf("job config %+v", cfg)
		}
	}
}

func between(s, a, b string) string {
	_, rest, _ := strings.Cut(s, a)
	v, _, _ := strings.Cut(rest, b)
	return v
}

func TestUnsupportedRuntimeEnvFailsSetup(t *testing.T) {
	m, _ := testManager(t, nil)
	for _, tc := range []struct {
		re   map[string]any
		want string
	}{
		{map[string]any{"pip": map[string]any{"packages": []any{"requests"}}}, "builds no pip/uv environments"},
		{map[string]any{"pip": []any{"six"}, "uv": []any{"six"}}, "cannot both be specified"},
		{map[string]any{"conda": "env", "container": map[string]any{}}, "not conda, container"},
		{map[string]any{"working_dir": "https://example.com/x.zip"}, "https:// packages"},
		{map[string]any{"working_dir": "gcs://_ray_pkg_missing.zip"}, "was not uploaded"},
		{map[string]any{"py_modules": []any{"gcs://x.whl"}}, ".zip packages only"},
		{map[string]any{"env_vars": map[string]any{"A": 1}}, "must be a string"},
	} {
		src := func(context.Context, string, string) ([]byte, error) { return nil, errors.New("was not uploaded") }
		m.cfg.Packages = src
		sid, err := m.Submit(ctx, Request{Entrypoint: "echo never", RuntimeEnv: tc.re})
		if err != nil {
			t.Fatal(err)
		}
		rec := wait(t, m, sid)
		if rec.Status != Failed || rec.ErrorType != RuntimeEnvSetupFailure || rec.DriverPID != 0 ||
			!strings.HasPrefix(rec.Message, "runtime_env setup failed: ") || !strings.Contains(rec.Message, tc.want) {
			t.Errorf("%v: record %+v", tc.re, rec)
		}
		if logs, _ := m.Logs(ctx, sid); !strings.Contains(logs, rec.Message) || strings.Contains(logs, "never") {
			t.Errorf("%v: log %q", tc.re, logs)
		}
	}
}

func TestPendingUntilEntrypointResourcesFree(t *testing.T) {
	res := newFakeResources(map[string]float64{"CPU": 1, "GPU": 0})
	m, clk := testManager(t, func(c *Config) { c.Resources = res })
	gate := fifo(t)
	first, _ := m.Submit(ctx, Request{Entrypoint: "cat " + gate, EntrypointNumCPUs: 1})
	waitStatus(t, m, first, Running)
	second, _ := m.Submit(ctx, Request{Entrypoint: "echo second", EntrypointNumCPUs: 1})
	clk.nextWait(t) // the second polls for its CPU
	d, _ := m.Job(ctx, second)
	if d.Status != Pending || *d.Message != "Job has not started yet. It may be waiting for resources (CPUs, GPUs, memory, custom resources) to become available." {
		t.Fatalf("second job %s %q", d.Status, *d.Message)
	}
	writeFifo(t, gate, "go\n")
	if rec := wait(t, m, first); rec.Status != Succeeded {
		t.Fatalf("first %+v", rec)
	}
	clk.Advance(m.cfg.PollInterval)
	if rec := wait(t, m, second); rec.Status != Succeeded {
		t.Fatalf("second %+v", rec)
	}
	if n := res.heldCount(); n != 0 {
		t.Fatalf("%d holds left after both jobs", n)
	}
	// More than the node has can never run.
	third, _ := m.Submit(ctx, Request{Entrypoint: "echo x", EntrypointNumGPUs: 1})
	rec := wait(t, m, third)
	if rec.Status != Failed || rec.ErrorType != Unschedulable || !strings.Contains(rec.Message, "GPU: 1") {
		t.Fatalf("third %+v", rec)
	}
}

func waitStatus(t *testing.T, m *Manager, sid string, st Status) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		ch := m.changes(sid)
		if rec, _ := m.store.Get(ctx, sid); rec.Status == st {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("%s never became %s", sid, st)
		}
	}
}

func TestStopSendsTermThenKillsTheGroup(t *testing.T) {
	m, clk := testManager(t, nil)
	ready := fifo(t)
	sid, _ := m.Submit(ctx, Request{Entrypoint: "trap '' TERM; sleep 1000 & echo ready > " + ready + "; wait"})
	readFifo(t, ready) // TERM is ignored from here on, by the sleep too
	rec, _ := m.store.Get(ctx, sid)
	pgid := rec.DriverPID
	if ok, err := m.Stop(ctx, sid); !ok || err != nil {
		t.Fatalf("stop: %v %v", ok, err)
	}
	clk.nextWait(t) // the stop grace
	if !groupAlive(pgid) {
		t.Fatal("the group died of an ignored SIGTERM")
	}
	clk.Advance(m.cfg.StopWait)
	rec = wait(t, m, sid)
	if rec.Status != Stopped || rec.DriverExitCode != nil || rec.EndTime != clk.Now().UnixMilli() {
		t.Fatalf("record %+v", rec)
	}
	if !groupGone(pgid) {
		t.Fatal("a process of the stopped job's group is still alive")
	}
	d, _ := m.Job(ctx, sid)
	if *d.Message != "Job was intentionally stopped." {
		t.Fatalf("message %q", *d.Message)
	}
	if ok, _ := m.Stop(ctx, sid); ok {
		t.Fatal("stopping a stopped job reported true")
	}
}

func TestStopEndsAtOnceWhenTheGroupExitsOnTerm(t *testing.T) {
	// A real clock: the grace is an hour, so only the group's exit ends
	// the stop.
	m, _ := testManager(t, func(c *Config) {
		c.Clock, c.StopWait, c.PollInterval = realClock{}, time.Hour, 10*time.Millisecond
	})
	ready := fifo(t)
	sid, _ := m.Submit(ctx, Request{Entrypoint: "echo ready > " + ready + "; sleep 1000"})
	readFifo(t, ready)
	m.Stop(ctx, sid)
	rec := wait(t, m, sid)
	if rec.Status != Stopped {
		t.Fatalf("record %+v", rec)
	}
	if !groupGone(rec.DriverPID) {
		t.Fatal("the group outlived its stop")
	}
}

func TestStopWhilePending(t *testing.T) {
	res := newFakeResources(map[string]float64{"CPU": 1})
	res.TryHold("someone", map[string]float64{"CPU": 1})
	m, clk := testManager(t, func(c *Config) { c.Resources = res })
	sid, _ := m.Submit(ctx, Request{Entrypoint: "echo never", EntrypointNumCPUs: 1})
	clk.nextWait(t)
	if ok, _ := m.Stop(ctx, sid); !ok {
		t.Fatal("stop of a pending job reported false")
	}
	if rec := wait(t, m, sid); rec.Status != Stopped || rec.DriverPID != 0 {
		t.Fatalf("record %+v", rec)
	}
}

func TestDeleteDuplicateAndUnknown(t *testing.T) {
	m, _ := testManager(t, nil)
	gate := fifo(t)
	sid, err := m.Submit(ctx, Request{Entrypoint: "cat " + gate, SubmissionID: "mine"})
	if err != nil || sid != "mine" {
		t.Fatalf("%q %v", sid, err)
	}
	if _, err := m.Submit(ctx, Request{Entrypoint: "true", SubmissionID: "mine"}); !errors.Is(err, ErrDuplicate) ||
		!strings.Contains(err.Error(), "Job with submission_id mine already exists. Please use a different submission_id.") {
		t.Fatalf("duplicate: %v", err)
	}
	waitStatus(t, m, sid, Running)
	if _, err := m.Delete(ctx, sid); !errors.Is(err, ErrNotTerminal) {
		t.Fatalf("delete of a running job: %v", err)
	}
	writeFifo(t, gate, "x")
	wait(t, m, sid)
	if ok, err := m.Delete(ctx, sid); !ok || err != nil {
		t.Fatalf("delete: %v %v", ok, err)
	}
	for _, f := range []func() error{
		func() error { _, err := m.Job(ctx, sid); return err },
		func() error { _, err := m.Logs(ctx, "nope"); return err },
		func() error { _, err := m.Stop(ctx, "nope"); return err },
		func() error { _, err := m.Delete(ctx, "nope"); return err },
	} {
		if err := f(); !errors.Is(err, ErrNotFound) {
			t.Errorf("want ErrNotFound, got %v", err)
		}
	}
	for _, bad := range []Request{
		{Entrypoint: "x", SubmissionID: "../etc"},
		{Entrypoint: "x", EntrypointNumCPUs: -1},
		{Entrypoint: "x", EntrypointResources: map[string]float64{"a": -2}},
	} {
		if _, err := m.Submit(ctx, bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: %v", bad, err)
		}
	}
}

func TestDriversAreListedAndLinked(t *testing.T) {
	drivers := &fakeDrivers{}
	m, _ := testManager(t, func(c *Config) { c.Drivers = drivers })
	sid, _ := m.Submit(ctx, Request{Entrypoint: "true"})
	wait(t, m, sid)
	drivers.list = []Driver{
		{JobID: "02000000", Alive: true, StartTime: 5, PID: 42, NodeIP: "10.0.0.1", Entrypoint: "python x.py"},
		{JobID: "01000000", Alive: false, StartTime: 1, EndTime: 2, NodeIP: "10.0.0.1"},
		{JobID: "03000000", SubmissionID: sid, Alive: false, NodeIP: "10.0.0.1", PID: 77},
	}
	list, err := m.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 3 || list[0].Type != TypeSubmission || list[1].Type != TypeDriver || *list[1].JobID != "01000000" ||
		list[1].Status != Succeeded || list[2].Status != Running || list[2].DriverInfo.PID != "42" {
		b, _ := json.Marshal(list)
		t.Fatalf("list %s", b)
	}
	if *list[0].JobID != "03000000" || list[0].DriverInfo.PID != "77" || list[0].DriverInfo.NodeIPAddress != "10.0.0.1" {
		t.Fatalf("submission not linked to its driver: %+v", list[0])
	}
	// A job id finds the driver, or the submission its driver belongs to.
	if d, _ := m.Job(ctx, "02000000"); d.Type != TypeDriver || d.Message != nil {
		t.Fatalf("driver by job id: %+v", d)
	}
	if d, _ := m.Job(ctx, "03000000"); d.Type != TypeSubmission || *d.SubmissionID != sid {
		t.Fatalf("submission by its driver's job id: %+v", d)
	}
	for _, f := range []func() error{
		func() error { _, err := m.Logs(ctx, "02000000"); return err },
		func() error { _, err := m.Stop(ctx, "02000000"); return err },
		func() error { _, err := m.Delete(ctx, "02000000"); return err },
	} {
		if err := f(); !errors.Is(err, ErrNotSubmission) {
			t.Errorf("want ErrNotSubmission, got %v", err)
		}
	}
}

func TestCloseEndsRunningEntrypoints(t *testing.T) {
	m, _ := testManager(t, nil)
	ready := fifo(t)
	sid, _ := m.Submit(ctx, Request{Entrypoint: "trap '' TERM; echo ready > " + ready + "; sleep 1000"})
	readFifo(t, ready)
	rec, _ := m.store.Get(ctx, sid)
	m.Close()
	if !groupGone(rec.DriverPID) {
		t.Fatal("entrypoint outlived the manager")
	}
	rec, _ = m.store.Get(ctx, sid)
	if rec.Status != Failed || rec.ErrorType != SupervisorDied {
		t.Fatalf("record %+v", rec)
	}
	if _, err := m.Submit(ctx, Request{Entrypoint: "true"}); !errors.Is(err, ErrClosed) {
		t.Fatalf("submit after close: %v", err)
	}
}

func TestStartErrorWhenTheShellIsMissing(t *testing.T) {
	m, _ := testManager(t, func(c *Config) { c.Shell = "/nonexistent/sh" })
	sid, _ := m.Submit(ctx, Request{Entrypoint: "true"})
	rec := wait(t, m, sid)
	if rec.Status != Failed || rec.ErrorType != CommandStartError {
		t.Fatalf("record %+v", rec)
	}
}

package jobs

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// orphan starts entrypoint under the wrapper as a head that then died
// would have, and records it RUNNING in a store a restarted head opens.
func orphan(t *testing.T, entrypoint string) (*MemStore, Record, *process) {
	t.Helper()
	dir := t.TempDir()
	rec := Record{SubmissionID: "raysubmit_orphan", Entrypoint: entrypoint, Status: Running, StartTime: 1,
		Account: DefaultAccount, LogPath: filepath.Join(dir, "job.log"), CredentialID: "cred1"}
	log, err := os.Create(rec.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	p, err := startProcess("sh", testWrapper(t), filepath.Join(dir, "job.exit"), entrypoint, dir, os.Environ(), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = p.signalGroup(syscall.SIGKILL)
		<-p.done
	})
	rec.DriverPID, rec.DriverStartTime, rec.StatusPath = p.pid(), p.startTime, p.statusPath
	if rec.DriverStartTime == 0 {
		t.Fatal("no start time read from /proc")
	}
	st := NewMemStore()
	if err := st.Create(ctx, rec); err != nil {
		t.Fatal(err)
	}
	return st, rec, p
}

func restarted(t *testing.T, st Store, released *[]string) *Manager {
	m, _ := testManager(t, func(c *Config) {
		c.Store, c.Clock, c.PollInterval = st, realClock{}, 20*time.Millisecond
		c.ReleaseCredentials = func(id string) { *released = append(*released, id) }
	})
	return m
}

func TestRestartedManagerAdoptsRunningEntrypoint(t *testing.T) {
	sig := filepath.Join(t.TempDir(), "go")
	st, rec, _ := orphan(t, "echo before; while [ ! -e "+sig+" ]; do sleep 0.05; done; echo after; exit 3")
	var released []string
	m := restarted(t, st, &released)
	got, err := m.Record(ctx, rec.SubmissionID)
	if err != nil || got.Status != Running {
		t.Fatalf("after the restart: %+v %v", got, err)
	}
	if err := os.WriteFile(sig, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	got = wait(t, m, rec.SubmissionID)
	if got.Status != Failed || got.ErrorType != CommandError || got.DriverExitCode == nil || *got.DriverExitCode != 3 {
		t.Fatalf("adopted job ended %+v", got)
	}
	logs, _ := m.Logs(ctx, rec.SubmissionID)
	if !strings.Contains(logs, "before") || !strings.Contains(logs, "after") {
		t.Fatalf("log %q", logs)
	}
	if len(released) != 1 || released[0] != "cred1" {
		t.Fatalf("credentials released %v", released)
	}
}

func TestAdoptedEntrypointStops(t *testing.T) {
	st, rec, p := orphan(t, "sleep 600")
	var released []string
	m := restarted(t, st, &released)
	if ok, err := m.Stop(ctx, rec.SubmissionID); !ok || err != nil {
		t.Fatalf("stop: %v %v", ok, err)
	}
	if got := wait(t, m, rec.SubmissionID); got.Status != Stopped {
		t.Fatalf("stopped job %+v", got)
	}
	<-p.done
	if !groupGone(p.pid()) {
		t.Fatal("the entrypoint's group outlived the stop")
	}
}

func TestEntrypointDeadWhileHeadWasDownFails(t *testing.T) {
	st, rec, p := orphan(t, "sleep 600")
	_ = p.signalGroup(syscall.SIGKILL) // the wrapper too: no exit code left
	<-p.done
	var released []string
	m := restarted(t, st, &released)
	got := wait(t, m, rec.SubmissionID)
	if got.Status != Failed || got.ErrorType != SupervisorDied || got.DriverExitCode != nil {
		t.Fatalf("job whose entrypoint died: %+v", got)
	}
	if len(released) != 1 {
		t.Fatalf("credentials released %v", released)
	}
}

func TestEntrypointEndedWhileHeadWasDownKeepsItsExitCode(t *testing.T) {
	st, rec, p := orphan(t, "exit 0")
	<-p.done
	var released []string
	m := restarted(t, st, &released)
	got := wait(t, m, rec.SubmissionID)
	if got.Status != Succeeded || got.DriverExitCode == nil || *got.DriverExitCode != 0 {
		t.Fatalf("job that ended while the head was down: %+v", got)
	}
}

func TestReusedPidIsNotAdopted(t *testing.T) {
	st, rec, _ := orphan(t, "sleep 600")
	rec.DriverStartTime++ // another process with the same pid
	if err := st.Put(ctx, rec); err != nil {
		t.Fatal(err)
	}
	var released []string
	m := restarted(t, st, &released)
	if got := wait(t, m, rec.SubmissionID); got.Status != Failed || got.ErrorType != SupervisorDied {
		t.Fatalf("job with a reused pid: %+v", got)
	}
}

// A head killed after starting an entrypoint and before recording it
// RUNNING leaves a PENDING record naming the wrapper's status file: the
// restarted head finds the wrapper by its command line and adopts it.
func TestRestartedManagerAdoptsEntrypointStartedBeforeItsRunningRecord(t *testing.T) {
	sig := filepath.Join(t.TempDir(), "go")
	st, rec, p := orphan(t, "echo before; while [ ! -e "+sig+" ]; do sleep 0.05; done; exit 4")
	rec.Status, rec.DriverPID, rec.DriverStartTime = Pending, 0, 0
	if err := st.Put(ctx, rec); err != nil {
		t.Fatal(err)
	}
	var released []string
	m := restarted(t, st, &released)
	got, err := m.Record(ctx, rec.SubmissionID)
	if err != nil || got.Status != Running || got.DriverPID != p.pid() {
		t.Fatalf("after the restart: %+v %v (wrapper pid %d)", got, err, p.pid())
	}
	if err := os.WriteFile(sig, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	got = wait(t, m, rec.SubmissionID)
	if got.Status != Failed || got.ErrorType != CommandError || got.DriverExitCode == nil || *got.DriverExitCode != 4 {
		t.Fatalf("adopted job ended %+v", got)
	}
}

// One that also ended while the head was down ends with its recorded code;
// one whose entrypoint never started still fails as its supervisor died.
func TestPendingRecordWithStatusFileEndsWithItsCode(t *testing.T) {
	st, rec, p := orphan(t, "exit 0")
	<-p.done
	rec.Status, rec.DriverPID, rec.DriverStartTime = Pending, 0, 0
	if err := st.Put(ctx, rec); err != nil {
		t.Fatal(err)
	}
	never := rec
	never.SubmissionID, never.StatusPath = "raysubmit_never", filepath.Join(t.TempDir(), "never.exit")
	if err := st.Create(ctx, never); err != nil {
		t.Fatal(err)
	}
	var released []string
	m := restarted(t, st, &released)
	if got := wait(t, m, rec.SubmissionID); got.Status != Succeeded {
		t.Fatalf("ended while down: %+v", got)
	}
	if got := wait(t, m, never.SubmissionID); got.Status != Failed || got.ErrorType != SupervisorDied {
		t.Fatalf("never started: %+v", got)
	}
}

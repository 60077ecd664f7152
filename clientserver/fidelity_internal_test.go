package clientserver

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/internal/pickle"
	"github.com/gray-cluster/gray/taskspec"
)

func TestCheckWaitFollowsRayWait(t *testing.T) {
	a := ids.NewTaskID(ids.NilActorFor(ids.JobFromInt(1))).ReturnID(1)
	b := ids.NewTaskID(ids.NilActorFor(ids.JobFromInt(1))).ReturnID(1)
	for _, c := range []struct {
		list []ids.ObjectID
		want int
		ok   bool
	}{
		{[]ids.ObjectID{a, b}, 1, true},
		{[]ids.ObjectID{a, b}, 2, true},
		{[]ids.ObjectID{a, a}, 1, false}, // duplicates
		{[]ids.ObjectID{a, b}, 3, false}, // more than given
		{[]ids.ObjectID{a}, 0, false},
		{[]ids.ObjectID{a}, -1, false},
	} {
		err := checkWait(c.list, c.want)
		if (err == nil) != c.ok || (err != nil && !errors.Is(err, ErrBadWait)) {
			t.Errorf("checkWait(%d refs, %d) = %v, want ok=%v", len(c.list), c.want, err, c.ok)
		}
	}
}

func TestLogTeeSendsRecordsAtTheRequestedLevel(t *testing.T) {
	for l, want := range map[slog.Level]int32{slog.LevelDebug: 10, slog.LevelInfo: 20, slog.LevelWarn: 30, slog.LevelError: 40} {
		if got := pyLevel(l); got != want {
			t.Errorf("pyLevel(%v) = %d, want %d", l, got, want)
		}
	}
	sink := newLogSink()
	inner := slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo})
	log := slog.New(&logTee{inner: inner, sink: sink}).With("component", "clientserver")
	ctx := context.Background()
	if log.Enabled(ctx, slog.LevelDebug) {
		t.Fatal("debug enabled with no session asking for it")
	}
	log.Debug("dropped")
	sink.min.Store(10)
	if !log.Enabled(ctx, slog.LevelDebug) {
		t.Fatal("debug not enabled though a session asked for DEBUG")
	}
	log.Debug("put", "object", "abc")
	select {
	case d := <-sink.queue:
		if d.Level != 10 || d.Msg != "put object=abc" || d.Name != logRecordName {
			t.Fatalf("record = %+v", d)
		}
	case <-time.After(time.Second):
		t.Fatal("no record queued")
	}
	select {
	case d := <-sink.queue:
		t.Fatalf("unexpected record %+v", d)
	default:
	}
	sink.min.Store(math.MaxInt32)
	log.Info("info")
	if len(sink.queue) != 0 {
		t.Fatal("a record was queued with no session streaming")
	}
}

func TestWithOMPThreads(t *testing.T) {
	for cpus, want := range map[float64]string{0: "", 0.5: "", 1: "", 1.9: "", 2: "2", 3.5: "3", 16: "16"} {
		env := withOMPThreads(taskspec.RuntimeEnv{EnvVars: map[string]string{}}, map[string]float64{"CPU": cpus})
		if got := env.EnvVars[ompThreads]; got != want {
			t.Errorf("cpus %v: OMP_NUM_THREADS %q, want %q", cpus, got, want)
		}
	}
	env := withOMPThreads(taskspec.RuntimeEnv{EnvVars: map[string]string{ompThreads: "7"}}, map[string]float64{"CPU": 4})
	if env.EnvVars[ompThreads] != "7" {
		t.Errorf("a set OMP_NUM_THREADS was replaced: %q", env.EnvVars[ompThreads])
	}
	if env := withOMPThreads(taskspec.RuntimeEnv{}, map[string]float64{"CPU": 2}); env.EnvVars[ompThreads] != "2" {
		t.Errorf("nil env vars: %v", env.EnvVars)
	}
}

func TestActorStubs(t *testing.T) {
	a, b := ids.NewActorID(ids.JobFromInt(1)), ids.NewActorID(ids.JobFromInt(1))
	oid := ids.NewTaskID(a).ReturnID(1)
	got := actorStubs([]pickle.Stub{
		{Type: "Actor", RefID: a[:]}, {Type: "Object", RefID: oid[:]}, {Type: "RemoteMethod", RefID: b[:]},
		{Type: "Actor", RefID: a[:]}, {Type: "Actor", RefID: []byte("short")},
	})
	if len(got) != 2 || got[0] != a || got[1] != b {
		t.Fatalf("actorStubs = %v, want [%v %v]", got, a, b)
	}
}

func TestNeedsPutCheck(t *testing.T) {
	driver, worker := newSession("c1", ""), newSession("c2", "w1")
	byValue := [][]byte{[]byte("\x80\x05...ray.cloudpickle.cloudpickle\x94_make_skeleton_class...")}
	plain := [][]byte{[]byte("\x80\x05K\x01.")}
	if !needsPutCheck(driver, byValue, 100, nil) {
		t.Error("a by-value class instance is not checked")
	}
	if needsPutCheck(driver, plain, 100, nil) {
		t.Error("a plain value is checked")
	}
	if needsPutCheck(worker, byValue, 100, nil) || needsPutCheck(driver, byValue, 100, []byte{1}) ||
		needsPutCheck(driver, byValue, putCheckMax+1, nil) {
		t.Error("worker puts, payloads and big values must not be checked")
	}
	oid := ids.NewTaskID(ids.NilActorFor(ids.JobFromInt(3))).ReturnID(1)
	args := putCheckArgs(oid)
	if !strings.Contains(string(args), "ClientObjectRef") || !strings.Contains(string(args), string(oid[:])) {
		t.Errorf("putCheckArgs = %q", args)
	}
}

func TestSessionHolds(t *testing.T) {
	driver, worker := newSession("c1", ""), newSession("c2", "w1")
	oid := ids.NewTaskID(ids.NilActorFor(ids.JobFromInt(3))).ReturnID(1)
	if driver.holds(oid) {
		t.Fatal("a fresh session holds an object")
	}
	driver.track(oid)
	if !driver.holds(oid) {
		t.Fatal("a tracked object is not held")
	}
	driver.untrack(oid)
	if driver.holds(oid) {
		t.Fatal("an untracked object is still held")
	}
	if !worker.holds(oid) {
		t.Fatal("worker sessions act for their task's job and may use any object")
	}
}

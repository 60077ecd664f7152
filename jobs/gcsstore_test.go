package jobs

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"

	"github.com/gray-cluster/gray/gcs"
)

// Both stores keep the same contract.
func TestStoresKeepTheContract(t *testing.T) {
	for name, st := range map[string]Store{"memory": NewMemStore(), "gcs": NewGCSStore(gcs.NewMemStore())} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			a := Record{SubmissionID: "raysubmit_a", Entrypoint: "echo a", Status: Pending, StartTime: 2,
				Metadata: map[string]string{"k": "v"}, RuntimeEnv: map[string]any{"env_vars": map[string]any{"X": "1"}}}
			b := Record{SubmissionID: "raysubmit_b", Entrypoint: "echo b", Status: Pending, StartTime: 1}
			for _, r := range []Record{a, b} {
				if err := st.Create(ctx, r); err != nil {
					t.Fatal(err)
				}
			}
			if err := st.Create(ctx, a); !errors.Is(err, ErrDuplicate) {
				t.Fatalf("second create: %v, want ErrDuplicate", err)
			}
			code := 0
			a.Status, a.DriverExitCode = Succeeded, &code
			if err := st.Put(ctx, a); err != nil {
				t.Fatal(err)
			}
			if err := st.Put(ctx, Record{SubmissionID: "raysubmit_none"}); !errors.Is(err, ErrNotFound) {
				t.Fatalf("put of an unknown record: %v", err)
			}
			got, err := st.Get(ctx, "raysubmit_a")
			if err != nil || got.Status != Succeeded || *got.DriverExitCode != 0 || got.Metadata["k"] != "v" ||
				got.RuntimeEnv["env_vars"].(map[string]any)["X"] != "1" {
				t.Fatalf("get: %+v, %v", got, err)
			}
			list, err := st.List(ctx)
			if err != nil || len(list) != 2 || list[0].SubmissionID != "raysubmit_b" {
				t.Fatalf("list (oldest first): %+v, %v", list, err)
			}
			if err := st.Delete(ctx, "raysubmit_b"); err != nil {
				t.Fatal(err)
			}
			if err := st.Delete(ctx, "raysubmit_b"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("second delete: %v", err)
			}
			if _, err := st.Get(ctx, "raysubmit_b"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("get after delete: %v", err)
			}
		})
	}
}

// A head restarted on the same bbolt file finds its finished jobs, and
// the jobs it was still running are FAILED (no one supervises them now).
func TestRecordsOutliveTheManager(t *testing.T) {
	dir := t.TempDir()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	open := func() gcs.Store {
		st, err := gcs.OpenStore(context.Background(), "bolt", dir, quiet)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	st := open()
	m, _ := testManager(t, func(c *Config) { c.Store = NewGCSStore(st) })
	done, err := m.Submit(ctx, Request{Entrypoint: "echo done"})
	if err != nil {
		t.Fatal(err)
	}
	wait(t, m, done)
	// A job that was running when its head went away.
	running := Record{SubmissionID: "raysubmit_wasrunning", Entrypoint: "sleep 100", Status: Running, StartTime: 1}
	if err := m.store.Create(ctx, running); err != nil {
		t.Fatal(err)
	}
	m.Close()
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	st2 := open()
	defer st2.Close()
	m2, _ := testManager(t, func(c *Config) { c.Store = NewGCSStore(st2) })
	rec, err := m2.Record(ctx, done)
	if err != nil || rec.Status != Succeeded {
		t.Fatalf("finished job after restart: %+v, %v", rec, err)
	}
	rec, err = m2.Record(ctx, "raysubmit_wasrunning")
	if err != nil || rec.Status != Failed || rec.ErrorType != SupervisorDied || rec.EndTime == 0 {
		t.Fatalf("orphaned job after restart: %+v, %v", rec, err)
	}
	list, err := m2.List(ctx)
	if err != nil || len(list) < 2 {
		t.Fatalf("list after restart: %d jobs, %v", len(list), err)
	}
}

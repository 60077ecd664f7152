package gcs

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/gray-cluster/gray/internal/ids"
)

// A session's record and payloads are there after a reopen until the
// session is deleted, which removes both and leaves other sessions alone.
func TestSessionsReopen(t *testing.T) {
	forEachBackend(t, func(t *testing.T, open opener) {
		ctx := context.Background()
		s := mustOpen(t, open)
		tab := NewSessionTable(s)
		start := time.UnixMilli(time.Now().UnixMilli())
		a := SessionRecord{
			ClientID: "aaaa", Account: "acct", Job: ids.JobFromInt(7), Namespace: "ns",
			RuntimeEnv: map[string]any{"env_vars": map[string]any{"K": "V"}}, Grace: 30 * time.Second,
			SubmissionID: "raysubmit_1", Start: start,
		}
		b := SessionRecord{ClientID: "bbbb", Job: ids.JobFromInt(8), Namespace: "other", Grace: time.Second, Start: start}
		f := ids.NewTaskID(ids.NilActorFor(a.Job)).ReturnID(1)
		g := ids.NewTaskID(ids.NilActorFor(b.Job)).ReturnID(1)
		pa := SessionPayload{Object: f, ClientRef: []byte{1, 2}, SelfRefs: []string{"0102"}, Data: []byte("pickle-f")}
		pb := SessionPayload{Object: g, Data: []byte("pickle-g")}
		for _, r := range []SessionRecord{a, b} {
			if err := tab.Put(ctx, r); err != nil {
				t.Fatal(err)
			}
		}
		if err := tab.AddPayload(ctx, a.ClientID, pa); err != nil {
			t.Fatal(err)
		}
		if err := tab.AddPayload(ctx, b.ClientID, pb); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s = mustOpen(t, open)
		tab = NewSessionTable(s)
		got, err := tab.Load(ctx)
		if err != nil {
			t.Fatal(err)
		}
		a.Payloads, b.Payloads = []SessionPayload{pa}, []SessionPayload{pb}
		if want := []SessionRecord{a, b}; !reflect.DeepEqual(got, want) {
			t.Fatalf("after reopen:\n got  %+v\n want %+v", got, want)
		}
		if err := tab.Delete(ctx, a.ClientID); err != nil {
			t.Fatal(err)
		}
		got, err = tab.Load(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if want := []SessionRecord{b}; !reflect.DeepEqual(got, want) {
			t.Fatalf("after delete:\n got  %+v\n want %+v", got, want)
		}
		keys, err := s.Keys(ctx, SessionPayloadsTable, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(keys) != 1 {
			t.Fatalf("payload keys after delete: %q", keys)
		}
	})
}

// A table on no store keeps nothing and fails nothing.
func TestSessionsNoStore(t *testing.T) {
	var tab *Sessions
	ctx := context.Background()
	if err := tab.Put(ctx, SessionRecord{ClientID: "x"}); err != nil {
		t.Fatal(err)
	}
	if got, err := tab.Load(ctx); err != nil || got != nil {
		t.Fatalf("Load = %v, %v", got, err)
	}
}

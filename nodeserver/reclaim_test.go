package nodeserver

import (
	"bytes"
	"context"
	"slices"
	"testing"
	"time"

	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/internal/nodewire"
	"github.com/gray-cluster/gray/objectstore"
	pb "github.com/gray-cluster/gray/proto/nodepb"
)

func returnOf(job ids.JobID) ids.ObjectID { return ids.NewTaskID(ids.NilActorFor(job)).ReturnID(1) }

// A restored provider's held objects and results to come are claimed for
// the resumed session of their job (pending entries it holds, the
// provider a holder in the directory); the held ones are asked back, the
// ones nobody claims dropped, and those the head has already left alone.
func TestReclaimClaimsForResumedSessionsAndDropsTheRest(t *testing.T) {
	store := objectstore.New(4 << 20)
	resumed, ended := ids.JobFromInt(1), ids.JobFromInt(2)
	claims := map[ids.ObjectID]bool{}
	s := New(Config{Store: store, Claim: func(id ids.ObjectID) bool {
		if id.Task().Job() != resumed {
			return false
		}
		claims[id] = true
		store.Create(id, "session:c1")
		return true
	}})
	node := ids.NewNodeID()
	r := newRemote(node, store)
	r.out = newSendQueue()
	held, running, orphan, payload := returnOf(resumed), returnOf(resumed), returnOf(ended), returnOf(resumed)
	if err := store.Put(&objectstore.Object{ID: payload, Size: 1, Chunks: [][]byte{{1}}}, "session:c1"); err != nil {
		t.Fatal(err)
	}
	reg := &pb.Register{
		HeldObjects:    nodewire.IDs([]ids.ObjectID{held, orphan, payload}),
		RunningReturns: nodewire.IDs([]ids.ObjectID{running}),
	}
	s.reclaim(r, reg)

	msgs, err := r.out.take(context.Background())
	if err != nil || len(msgs) != 1 {
		t.Fatalf("sent %d messages: %v", len(msgs), err)
	}
	m := msgs[0].GetReturnObjects()
	got := func(raw [][]byte) []ids.ObjectID {
		list, err := nodewire.ObjectIDs(raw)
		if err != nil {
			t.Fatal(err)
		}
		return list
	}
	if h, p, d := got(m.Held), got(m.Pending), got(m.Drop); !slices.Equal(h, []ids.ObjectID{held}) ||
		!slices.Equal(p, []ids.ObjectID{running}) || !slices.Equal(d, []ids.ObjectID{orphan}) {
		t.Fatalf("held %v pending %v dropped %v", h, p, d)
	}
	if len(claims) != 2 || !claims[held] || !claims[running] {
		t.Fatalf("claimed %v", claims)
	}
	for _, id := range []ids.ObjectID{held, running} {
		if !store.Contains(id) || store.Ready(id) {
			t.Fatalf("%s: want a pending entry", id.Hex())
		}
	}
	if !slices.Contains(s.Holders(held), node) {
		t.Fatal("the provider is not recorded as a holder of the object it holds")
	}
	// The held object arrives as any result does, and is the session's.
	if !store.Seal(&objectstore.Object{ID: held, Size: 2, Chunks: [][]byte{{7, 8}}}) {
		t.Fatal("the pushed-back object was dropped")
	}
	if store.Release(held, "session:c1"); store.Contains(held) {
		t.Fatal("released by its session, the object is still there")
	}
	if store.Contains(orphan) {
		t.Fatal("an unclaimed object got an entry on the head")
	}
}

// A held object the provider no longer has is ObjectLostError; the
// results still owed by a provider that dies are NodeDiedError; a
// sealed one is left as it is.
func TestReclaimedObjectsFailWhenTheyCannotArrive(t *testing.T) {
	store := objectstore.New(4 << 20)
	job := ids.JobFromInt(1)
	s := New(Config{Store: store, Claim: func(id ids.ObjectID) bool { store.Create(id, "session:c1"); return true }})
	r := newRemote(ids.NewNodeID(), store)
	r.out = newSendQueue()
	gone, owed, arrived := returnOf(job), returnOf(job), returnOf(job)
	s.reclaim(r, &pb.Register{HeldObjects: nodewire.IDs([]ids.ObjectID{gone, arrived}), RunningReturns: nodewire.IDs([]ids.ObjectID{owed})})
	if !store.Seal(&objectstore.Object{ID: arrived, Size: 1, Chunks: [][]byte{{1}}}) {
		t.Fatal("seal")
	}
	s.reclaimMissing(r, gone)
	s.reclaimFailed(r, "the node died")
	for id, want := range map[ids.ObjectID]string{gone: "ObjectLostError", owed: "NodeDiedError"} {
		obj, err := store.Get(id)
		if err != nil || obj == nil || !obj.IsError {
			t.Fatalf("%s: %v %v, want an error value", id.Hex(), obj, err)
		}
		if !bytes.Contains(obj.Chunks[0], []byte(want)) {
			t.Fatalf("%s: error value is not %s", id.Hex(), want)
		}
	}
	if obj, err := store.Get(arrived); err != nil || obj.IsError {
		t.Fatalf("the arrived object was replaced: %v %v", obj, err)
	}
}

// AwaitRestored returns at once on a head that restored no provider, and
// otherwise once every restored provider has reported.
func TestAwaitRestoredWaitsForEveryRestoredProvider(t *testing.T) {
	s := New(Config{Store: objectstore.New(1 << 20)})
	if err := s.AwaitRestored(context.Background()); err != nil {
		t.Fatal(err)
	}
	a, b := ids.NewNodeID(), ids.NewNodeID()
	s.mu.Lock()
	s.awaitRestoredLocked(a)
	s.awaitRestoredLocked(b)
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := s.AwaitRestored(ctx); err == nil {
		t.Fatal("returned before the providers reported")
	}
	s.restoredReported(a)
	s.restoredReported(a) // twice is once
	done := make(chan error, 1)
	go func() { done <- s.AwaitRestored(context.Background()) }()
	select {
	case <-done:
		t.Fatal("returned with one provider still to report")
	default:
	}
	s.restoredReported(b)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

package cluster

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"

	"github.com/gray-cluster/gray/gcs"
	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/objectstore"
	"github.com/gray-cluster/gray/taskspec"
)

// headOn is a cluster writing through to st, as one head process has it;
// placed collects what OnActorPlaced reported.
type headOn struct {
	c      *Cluster
	store  *objectstore.Store
	mu     sync.Mutex
	placed map[ids.ActorID][]byte
	nodeOf map[ids.ActorID]ids.NodeID
	dead   []ids.ActorID
}

func newHeadOn(t *testing.T, st gcs.Store) *headOn {
	t.Helper()
	h := &headOn{store: objectstore.New(1 << 20), placed: map[ids.ActorID][]byte{}, nodeOf: map[ids.ActorID]ids.NodeID{}}
	h.c = New(Config{
		Store: h.store, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Seed: 1,
		Nodes: gcs.NewNodeTable(st), Groups: gcs.NewGroupTable(st),
		OnActorPlaced: func(spec *taskspec.ActorSpec, node ids.NodeID) {
			b, err := EncodeActorSpec(spec)
			if err != nil {
				t.Error(err)
			}
			h.mu.Lock()
			h.placed[spec.ActorID], h.nodeOf[spec.ActorID] = b, node
			h.mu.Unlock()
		},
		OnActorDead: func(id ids.ActorID) {
			h.mu.Lock()
			h.dead = append(h.dead, id)
			h.mu.Unlock()
		},
	})
	return h
}

// TestRestoreFromTables: what one cluster wrote through to the store, a
// second one (the restarted head) restores: the provider as a suspect
// member, the detached group on it (the other group removed, its release
// sent to the node), and the actor, whose calls wait until the node
// re-attaches it and then go to it in order.
func TestRestoreFromTables(t *testing.T) {
	ctx := context.Background()
	st := gcs.NewMemStore()
	res := map[string]float64{"CPU": 4, "x": 2}
	first := newHeadOn(t, st)
	f := newFake(1, res)
	first.c.Add(f, gcs.NodeInfo{IP: "10.0.0.2", Labels: map[string]string{"zone": "a"}})
	keep, err := first.c.CreatePlacementGroup(job1, "keep", "PACK", true, []map[string]float64{{"x": 1}})
	if err != nil {
		t.Fatal(err)
	}
	drop, err := first.c.CreatePlacementGroup(job1, "", "PACK", false, []map[string]float64{{"CPU": 1}})
	if err != nil {
		t.Fatal(err)
	}
	actor := &taskspec.ActorSpec{ActorID: ids.NewActorID(job1), JobID: job1, Name: "C",
		Resources: map[string]float64{"x": 1}, MaxRestarts: 2, BundleIndex: -1}
	if err := first.c.CreateActor(actor); err != nil {
		t.Fatal(err)
	}
	f.waitOp(t, "create")
	if first.nodeOf[actor.ActorID] != f.id {
		t.Fatalf("actor placed on %v, want %v", first.nodeOf[actor.ActorID], f.id)
	}

	nodes, err := gcs.NewNodeTable(st).List(ctx)
	if err != nil || len(nodes) != 1 || nodes[0].ID != f.id || nodes[0].Total["x"] != 2 || nodes[0].Labels["zone"] != "a" {
		t.Fatalf("node table: %+v, %v", nodes, err)
	}
	groups, err := gcs.NewGroupTable(st).List(ctx)
	if err != nil || len(groups) != 2 {
		t.Fatalf("group table: %+v, %v", groups, err)
	}

	// The restart: a new cluster on the same tables, the provider's new
	// connection not up yet.
	second := newHeadOn(t, st)
	f2 := newFake(1, res)
	second.c.RestoreNode(f2, nodes[0])
	if n := second.c.Nodes(); len(n) != 1 || n[0].State != gcs.NodeSuspect {
		t.Fatalf("restored node: %+v", n)
	}
	for _, g := range groups {
		if err := second.c.RestoreGroup(g); err != nil {
			t.Fatal(err)
		}
	}
	table := second.c.PlacementGroupTable("")
	kept, _ := table[keep].(map[string]any)
	if kept["state"] != PGCreated || kept["bundles_to_node_id"].(map[string]any)["0"] != f.id.Hex() {
		t.Fatalf("restored group: %+v", kept)
	}
	if gone, _ := table[drop].(map[string]any); gone["state"] != PGRemoved {
		t.Fatalf("non-detached group of an ended job: %+v", gone)
	}
	if rel := f2.waitOp(t, "release"); rel.PG != drop {
		t.Fatalf("release sent for %s, want %s", rel.PG, drop)
	}
	if groups, _ := gcs.NewGroupTable(st).List(ctx); len(groups) != 1 || groups[0].ID != keep {
		t.Fatalf("group table after restore: %+v", groups)
	}

	spec, err := DecodeActorSpec(first.placed[actor.ActorID])
	if err != nil {
		t.Fatal(err)
	}
	second.c.RestoreActor(spec, f.id, nil)
	calls := []*taskspec.ActorCall{
		{TaskID: ids.NewTaskID(actor.ActorID), ActorID: actor.ActorID, JobID: job1, Method: "a", NumReturns: 1},
		{TaskID: ids.NewTaskID(actor.ActorID), ActorID: actor.ActorID, JobID: job1, Method: "b", NumReturns: 1},
	}
	for _, c := range calls {
		if err := second.c.SubmitActorTask(c); err != nil {
			t.Fatal(err)
		}
	}
	if got := f2.recorded("call", "create"); len(got) != 0 {
		t.Fatalf("calls reached the node before it re-attached the actor: %+v", got)
	}
	second.c.Add(f2, nodes[0]) // the provider reconnects
	second.c.Reattach(f2.id, []ids.ActorID{actor.ActorID})
	later := &taskspec.ActorCall{TaskID: ids.NewTaskID(actor.ActorID), ActorID: actor.ActorID, JobID: job1, Method: "c", NumReturns: 1}
	if err := second.c.SubmitActorTask(later); err != nil {
		t.Fatal(err)
	}
	var methods []string
	for _, o := range f2.recorded("call", "create") {
		methods = append(methods, o.Kind+":"+o.Method)
	}
	if !slices.Equal(methods, []string{"call:a", "call:b", "call:c"}) {
		t.Fatalf("ops on the re-attached node: %v", methods)
	}
	if len(second.dead) != 0 {
		t.Fatalf("actors declared dead: %v", second.dead)
	}
}

// TestRestoreActorWhoseNodeIsGone: an actor of a node the restarted head
// does not know (its own old raylet) restarts elsewhere within
// max_restarts, or dies.
func TestRestoreActorWhoseNodeIsGone(t *testing.T) {
	h := newHeadOn(t, gcs.NewMemStore())
	f := newFake(2, cpu(4))
	h.c.Add(f, gcs.NodeInfo{})
	var classHere bool
	f.onCreate = func(spec *taskspec.ActorSpec) { classHere = h.store.Contains(spec.ClassID) }
	oldHead := nodeID(9)
	restarts := &taskspec.ActorSpec{ActorID: ids.NewActorID(job1), JobID: job1, Name: "R", MaxRestarts: 1, BundleIndex: -1}
	once := &taskspec.ActorSpec{ActorID: ids.NewActorID(job1), JobID: job1, Name: "D", MaxRestarts: 0, BundleIndex: -1}
	h.c.RestoreActor(restarts, oldHead, []byte("class"))
	h.c.RestoreActor(once, oldHead, nil)
	o := f.waitOp(t, "create")
	if o.Actor != restarts.ActorID || o.MaxRestarts != 0 {
		t.Fatalf("restart: %+v", o)
	}
	if h.nodeOf[restarts.ActorID] != f.id {
		t.Fatalf("restarted actor's placement not reported: %v", h.nodeOf)
	}
	if !slices.Equal(h.dead, []ids.ActorID{once.ActorID}) {
		t.Fatalf("dead actors: %v", h.dead)
	}
	if got := f.recorded("create"); len(got) != 1 {
		t.Fatalf("creates: %+v", got)
	}
	if !classHere {
		t.Fatalf("the class payload was not in the store again when the actor was created")
	}
}

// TestRestorePendingActor: an actor that was waiting for a node when the
// head died waits again after the restart (no restart spent), and is
// created once a node that fits joins.
func TestRestorePendingActor(t *testing.T) {
	st := gcs.NewMemStore()
	first := newHeadOn(t, st)
	first.c.Add(newFake(1, cpu(1)), gcs.NodeInfo{})
	spec := &taskspec.ActorSpec{ActorID: ids.NewActorID(job1), JobID: job1, Name: "P",
		Resources: map[string]float64{"gpu_x": 1}, MaxRestarts: 1, BundleIndex: -1}
	if err := first.c.CreateActor(spec); err != nil {
		t.Fatal(err)
	}
	b, ok := first.placed[spec.ActorID]
	if !ok || first.nodeOf[spec.ActorID] != (ids.NodeID{}) {
		t.Fatalf("pending actor not reported to the actor table: %v", first.nodeOf)
	}
	second := newHeadOn(t, st)
	restored, err := DecodeActorSpec(b)
	if err != nil {
		t.Fatal(err)
	}
	second.c.RestoreActor(restored, ids.NodeID{}, nil)
	f := newFake(2, map[string]float64{"gpu_x": 1})
	second.c.Add(f, gcs.NodeInfo{})
	second.c.retryPending()
	if o := f.waitOp(t, "create"); o.Actor != spec.ActorID || o.MaxRestarts != 1 {
		t.Fatalf("create: %+v", o)
	}
}

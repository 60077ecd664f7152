package cluster

import (
	"context"
	"errors"
	"maps"
	"slices"
	"testing"

	"github.com/gray-cluster/gray/gcs"
	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/raylet"
	"github.com/gray-cluster/gray/taskspec"
)

// createGroup creates a group through the cluster and returns its id.
func (h *harness) createGroup(strategy string, bundles ...map[string]float64) string {
	h.t.Helper()
	id, err := h.c.CreatePlacementGroup(job1, "", strategy, false, bundles)
	if err != nil {
		h.t.Fatalf("CreatePlacementGroup(%s): %v", strategy, err)
	}
	return id
}

// groupEntry is the group's placement_group_table entry.
func (h *harness) groupEntry(id string) (state string, nodes map[string]any) {
	h.t.Helper()
	e, ok := h.c.PlacementGroupTable(id)[id].(map[string]any)
	if !ok {
		h.t.Fatalf("group %s not in the table", id)
	}
	return e["state"].(string), e["bundles_to_node_id"].(map[string]any)
}

// holders maps each fake to the bundles of pg it holds.
func holders(pg string, fs ...*fakeMember) map[string]string {
	out := map[string]string{}
	for _, f := range fs {
		if b := f.holding(pg); b != "" {
			out[short(f.id)] = b
		}
	}
	return out
}

func cpuNodes(h *harness, n int, cpus float64) []*fakeMember {
	var fs []*fakeMember
	for i := range n {
		fs = append(fs, h.add(i, cpu(cpus), nil))
	}
	return fs
}

func TestStrictSpreadUsesDistinctNodes(t *testing.T) {
	h := newHarness(t)
	fs := cpuNodes(h, 3, 4)
	pg := h.createGroup("STRICT_SPREAD", cpu(1), cpu(1), cpu(1))
	state, nodes := h.groupEntry(pg)
	if state != PGCreated {
		t.Fatalf("state %s, want CREATED", state)
	}
	seen := map[string]bool{}
	for i := range 3 {
		n, _ := nodes[string(rune('0'+i))].(string)
		seen[n] = true
	}
	if len(seen) != 3 || seen[""] {
		t.Fatalf("bundles_to_node_id %v, want 3 distinct nodes", nodes)
	}
	for _, f := range fs {
		if got := f.holding(pg); len(got) != 1 {
			t.Errorf("node %s holds bundles %q, want exactly one", short(f.id), got)
		}
		if nodes[f.holding(pg)] != f.id.Hex() {
			t.Errorf("table says bundle %s is on %v, but node %s holds it", f.holding(pg), nodes[f.holding(pg)], short(f.id))
		}
		if got := f.Available()["CPU"]; got != 3 {
			t.Errorf("node %s available CPU %v, want 3", short(f.id), got)
		}
	}
}

func TestStrictPackUsesOneNode(t *testing.T) {
	h := newHarness(t)
	fs := cpuNodes(h, 3, 4)
	pg := h.createGroup("STRICT_PACK", cpu(2), cpu(2))
	got := holders(pg, fs...)
	if len(got) != 1 || !slices.Contains(slices.Collect(maps.Values(got)), "0,1") {
		t.Fatalf("holders %v, want one node with bundles 0,1", got)
	}
	if state, _ := h.groupEntry(pg); state != PGCreated {
		t.Errorf("state %s, want CREATED", state)
	}
}

func TestPackSpillsOverWhenOneNodeIsTooSmall(t *testing.T) {
	h := newHarness(t)
	fs := cpuNodes(h, 3, 3)
	one := h.createGroup("PACK", cpu(1), cpu(1))
	if got := holders(one, fs...); len(got) != 1 {
		t.Errorf("PACK of 2 small bundles on %v, want one node", got)
	}
	two := h.createGroup("PACK", cpu(2), cpu(2))
	if got := holders(two, fs...); len(got) != 2 {
		t.Errorf("PACK of 2x2 CPU on 3-CPU nodes on %v, want two nodes", got)
	}
	if state, _ := h.groupEntry(two); state != PGCreated {
		t.Errorf("state %s, want CREATED", state)
	}
}

func TestInfeasibleGroupWaitsForANode(t *testing.T) {
	h := newHarness(t)
	fs := cpuNodes(h, 2, 2)
	pg := h.createGroup("STRICT_SPREAD", cpu(1), cpu(1), cpu(1))
	if state, nodes := h.groupEntry(pg); state != PGPending || len(nodes) != 0 {
		t.Fatalf("state %s nodes %v, want PENDING without nodes", state, nodes)
	}
	if got := holders(pg, fs...); len(got) != 0 {
		t.Fatalf("pending group holds %v", got)
	}
	if len(h.warns()) != 1 {
		t.Errorf("warnings %v, want one", h.warns())
	}
	if ok, err := h.c.waitGroup(context.Background(), pg, 0); ok || err != nil {
		t.Errorf("wait(0) = %v, %v; want false", ok, err)
	}
	// Work in the pending group waits at the head.
	spec := h.task("f", cpu(1), 0, taskspec.Scheduling{})
	spec.PlacementGroup, spec.BundleIndex = pg, 2
	_ = h.c.Submit(spec)
	if n := h.pendingLen(); n != 1 {
		t.Fatalf("%d parked, want the task", n)
	}

	f3 := h.add(2, cpu(2), nil)
	h.c.retryGroups()
	h.c.retryPending()
	if state, nodes := h.groupEntry(pg); state != PGCreated || len(nodes) != 3 {
		t.Fatalf("after a node joined: state %s nodes %v, want CREATED on 3 nodes", state, nodes)
	}
	if ok, err := h.c.waitGroup(context.Background(), pg, 0); !ok || err != nil {
		t.Errorf("wait(0) after creation = %v, %v; want true", ok, err)
	}
	_, nodes := h.groupEntry(pg)
	holder := map[string]*fakeMember{}
	for _, f := range append(fs, f3) {
		holder[f.id.Hex()] = f
	}
	if got := holder[nodes["2"].(string)].submitted(); !slices.Equal(got, []ids.TaskID{spec.TaskID}) {
		t.Errorf("bundle 2's node got %v, want the parked task", got)
	}
	if n := h.pendingLen(); n != 0 {
		t.Errorf("%d still parked", n)
	}
}

func TestRefusedReservationRollsBack(t *testing.T) {
	h := newHarness(t)
	fs := cpuNodes(h, 3, 2)
	fs[1].reserveErr = raylet.ErrBundlesUnavailable
	pg := h.createGroup("STRICT_SPREAD", cpu(1), cpu(1), cpu(1))
	if state, nodes := h.groupEntry(pg); state != PGPending || len(nodes) != 0 {
		t.Fatalf("state %s nodes %v, want PENDING without nodes", state, nodes)
	}
	if got := holders(pg, fs...); len(got) != 0 {
		t.Fatalf("after a refusal nodes still hold %v", got)
	}
	if got := fs[0].recorded("reserve", "release"); len(got) != 2 || got[0].Kind != "reserve" || got[1].Kind != "release" {
		t.Errorf("first node ops %+v, want reserve then release", got)
	}
	for _, f := range fs {
		if got := f.Available()["CPU"]; got != 2 {
			t.Errorf("node %s available CPU %v after rollback, want 2", short(f.id), got)
		}
	}

	fs[1].mu.Lock()
	fs[1].reserveErr = nil
	fs[1].mu.Unlock()
	h.c.retryGroups()
	if state, _ := h.groupEntry(pg); state != PGCreated {
		t.Fatalf("state %s after the node accepts, want CREATED", state)
	}
	if got := holders(pg, fs...); len(got) != 3 {
		t.Errorf("holders %v, want all three", got)
	}
}

func TestDeadNodesBundlesArePlacedAgain(t *testing.T) {
	h := newHarness(t)
	fs := cpuNodes(h, 3, 2)
	pg := h.createGroup("STRICT_SPREAD", cpu(1), cpu(1))
	_, nodes := h.groupEntry(pg)
	var dead, other *fakeMember
	for _, f := range fs {
		switch f.id.Hex() {
		case nodes["0"]:
			dead = f
		case nodes["1"]:
		default:
			other = f
		}
	}
	spec := h.task("f", cpu(1), 1, taskspec.Scheduling{})
	spec.PlacementGroup, spec.BundleIndex = pg, 0
	_ = h.c.Submit(spec)
	if got := dead.submitted(); len(got) != 1 {
		t.Fatalf("bundle 0's node got %v, want the task", got)
	}

	h.c.NodeDead(dead.id, "test", Lost{Tasks: []*taskspec.TaskSpec{spec}})
	if state, nodes := h.groupEntry(pg); state != PGRescheduling || nodes["0"] != nil || nodes["1"] == nil {
		t.Fatalf("after the death: state %s nodes %v, want RESCHEDULING with bundle 1 only", state, nodes)
	}
	if n := h.pendingLen(); n != 1 {
		t.Fatalf("%d parked, want the retried task", n)
	}
	h.c.retryGroups()
	h.c.retryPending()
	if state, nodes := h.groupEntry(pg); state != PGCreated || nodes["0"] != other.id.Hex() {
		t.Fatalf("state %s nodes %v, want CREATED with bundle 0 on %s", state, nodes, short(other.id))
	}
	if got := other.holding(pg); got != "0" {
		t.Errorf("new node holds %q, want bundle 0", got)
	}
	if got := other.submitted(); !slices.Equal(got, []ids.TaskID{spec.TaskID}) {
		t.Errorf("new node got %v, want the retried task", got)
	}
}

func TestRemoveReleasesEveryNode(t *testing.T) {
	h := newHarness(t)
	fs := cpuNodes(h, 3, 2)
	pg := h.createGroup("SPREAD", cpu(1), cpu(1), cpu(1))
	if got := holders(pg, fs...); len(got) != 3 {
		t.Fatalf("SPREAD holders %v, want three nodes", got)
	}
	act := h.actor("A", cpu(1), 3, 0, taskspec.Scheduling{})
	act.PlacementGroup, act.BundleIndex = pg, 0
	_ = h.c.CreateActor(act)
	if err := h.c.RemovePlacementGroup(pg); err != nil {
		t.Fatalf("remove: %v", err)
	}
	for _, f := range fs {
		if got := f.recorded("release"); len(got) != 1 || got[0].PG != pg {
			t.Errorf("node %s releases %+v, want one of the group", short(f.id), got)
		}
		if got := f.Available()["CPU"]; got != 2 {
			t.Errorf("node %s available CPU %v, want 2", short(f.id), got)
		}
	}
	if state, nodes := h.groupEntry(pg); state != PGRemoved || len(nodes) != 0 {
		t.Errorf("state %s nodes %v, want REMOVED", state, nodes)
	}
	var kills []op
	for _, f := range fs {
		kills = append(kills, f.recorded("kill")...)
	}
	if len(kills) != 1 || kills[0].Actor != act.ActorID || !kills[0].NoRestart {
		t.Errorf("kills %+v, want the group's actor killed for good", kills)
	}
	if ok, _ := h.c.waitGroup(context.Background(), pg, -1); ok {
		t.Errorf("wait on a removed group reports ready")
	}
	spec := h.task("late", cpu(1), 0, taskspec.Scheduling{})
	spec.PlacementGroup = pg
	_ = h.c.Submit(spec)
	h.wantSealed("ray.exceptions.TaskPlacementGroupRemoved", spec.ReturnIDs()...)
	if err := h.c.RemovePlacementGroup("nope"); !errors.Is(err, ErrUnknownGroup) {
		t.Errorf("remove unknown: %v, want ErrUnknownGroup", err)
	}
}

func TestAnyBundleGoesToANodeOfTheGroup(t *testing.T) {
	h := newHarness(t)
	fs := cpuNodes(h, 3, 4)
	pg := h.createGroup("STRICT_SPREAD", cpu(1), map[string]float64{"CPU": 2})
	_, nodes := h.groupEntry(pg)
	var big *fakeMember
	for _, f := range fs {
		if f.id.Hex() == nodes["1"] {
			big = f
		}
	}
	spec := h.task("f", cpu(2), 0, taskspec.Scheduling{})
	spec.PlacementGroup = pg // bundle index -1
	_ = h.c.Submit(spec)
	if got := big.submitted(); !slices.Equal(got, []ids.TaskID{spec.TaskID}) {
		t.Errorf("node of the 2-CPU bundle got %v, want the task", got)
	}
	act := h.actor("A", cpu(1), 0, 0, taskspec.Scheduling{})
	act.PlacementGroup, act.BundleIndex = pg, 1
	_ = h.c.CreateActor(act)
	if got := big.recorded("create"); len(got) != 1 {
		t.Errorf("bundle 1's node got %d actors, want 1", len(got))
	}
	tooBig := h.task("g", cpu(3), 0, taskspec.Scheduling{})
	tooBig.PlacementGroup = pg
	_ = h.c.Submit(tooBig)
	h.wantSealed("ray.exceptions.TaskUnschedulableError", tooBig.ReturnIDs()...)
}

func TestPlacementGroupOps(t *testing.T) {
	h := newHarness(t)
	h.add(0, cpu(2), nil)
	ctx := context.Background()
	res, err := h.c.PlacementGroupOp(ctx, job1, taskspec.PGRequest{Op: "pg_create", Name: "g", Strategy: "PACK", Bundles: []map[string]float64{cpu(1)}})
	if err != nil {
		t.Fatalf("pg_create: %v", err)
	}
	id := res.(map[string]any)["id"].(string)
	if len(id) != 36 {
		t.Errorf("id %q, want 18 bytes of hex", id)
	}
	if _, err := h.c.PlacementGroupOp(ctx, job1, taskspec.PGRequest{Op: "pg_create", Name: "g", Bundles: []map[string]float64{cpu(1)}}); !errors.Is(err, ErrGroupName) {
		t.Errorf("duplicate name: %v, want ErrGroupName", err)
	}
	if got, _ := h.c.PlacementGroupOp(ctx, job1, taskspec.PGRequest{Op: "pg_get", Name: "g"}); got.(map[string]any)["id"] != id {
		t.Errorf("pg_get = %v", got)
	}
	if ok, err := h.c.PlacementGroupOp(ctx, job1, taskspec.PGRequest{Op: "pg_wait", ID: id, Timeout: -1}); ok != true || err != nil {
		t.Errorf("pg_wait = %v, %v", ok, err)
	}
	if _, err := h.c.PlacementGroupOp(ctx, job1, taskspec.PGRequest{Op: "pg_create", Strategy: "BOGUS", Bundles: []map[string]float64{cpu(1)}}); err == nil {
		t.Errorf("bad strategy accepted")
	}
	if _, err := h.c.PlacementGroupOp(ctx, job1, taskspec.PGRequest{Op: "pg_remove", ID: id}); err != nil {
		t.Errorf("pg_remove: %v", err)
	}
	if got, _ := h.c.PlacementGroupOp(ctx, job1, taskspec.PGRequest{Op: "pg_get", Name: "g"}); got != nil {
		t.Errorf("pg_get after removal = %v, want nil", got)
	}
}

// TestReconnectingNodeKeepsOrLosesItsBundles: a node that reconnects is
// asked to reserve its bundles again (a no-op when it kept them); one that
// refuses (it restarted and its resources went to other work) has them
// placed elsewhere.
func TestReconnectingNodeKeepsOrLosesItsBundles(t *testing.T) {
	h := newHarness(t)
	fs := cpuNodes(h, 2, 2)
	pg := h.createGroup("STRICT_PACK", cpu(1), cpu(1))
	_, nodes := h.groupEntry(pg)
	home, other := fs[0], fs[1]
	if nodes["0"] != home.id.Hex() {
		home, other = other, home
	}
	home.waitOp(t, "reserve")
	h.c.Add(home, gcs.NodeInfo{Total: cpu(2)})
	if o := home.waitOp(t, "reserve"); o.PG != pg || o.Bundles != "0,1" {
		t.Fatalf("reconnect reserved %+v, want bundles 0,1 of the group", o)
	}
	if state, nodes := h.groupEntry(pg); state != PGCreated || nodes["0"] != home.id.Hex() {
		t.Fatalf("state %s nodes %v after a reconnect, want unchanged", state, nodes)
	}

	home.mu.Lock()
	home.reserveErr = raylet.ErrBundlesUnavailable
	home.mu.Unlock()
	h.c.Add(home, gcs.NodeInfo{Total: cpu(2)})
	home.waitOp(t, "release")
	h.c.placing.Lock() // the reassertion holds it until it is done
	h.c.placing.Unlock()
	home.setAvailable(cpu(0)) // what it reports: its CPUs went to other work
	h.c.retryGroups()
	if state, nodes := h.groupEntry(pg); state != PGCreated || nodes["0"] != other.id.Hex() || nodes["1"] != other.id.Hex() {
		t.Fatalf("state %s nodes %v, want CREATED on %s", state, nodes, short(other.id))
	}
}

// TestNodeBackFromTheDeadReleasesStaleBundles: bundles a dead node held
// were placed elsewhere, so when it comes back it is told to drop them.
func TestNodeBackFromTheDeadReleasesStaleBundles(t *testing.T) {
	h := newHarness(t)
	fs := cpuNodes(h, 2, 2)
	pg := h.createGroup("STRICT_PACK", cpu(1), cpu(1))
	_, nodes := h.groupEntry(pg)
	home := fs[0]
	if nodes["0"] != home.id.Hex() {
		home = fs[1]
	}
	h.c.NodeDead(home.id, "test", Lost{})
	h.c.retryGroups()
	h.c.Add(home, gcs.NodeInfo{Total: cpu(2)})
	if o := home.waitOp(t, "release"); o.PG != pg {
		t.Fatalf("release %+v, want the group's", o)
	}
}

// TestFinishedJobsGroupsAreRemoved: when a job ends its groups go, except
// detached ones and other jobs'.
func TestFinishedJobsGroupsAreRemoved(t *testing.T) {
	h := newHarness(t)
	cpuNodes(h, 1, 8)
	mine := h.createGroup("PACK", cpu(1))
	kept, err := h.c.CreatePlacementGroup(job1, "", "PACK", true, []map[string]float64{cpu(1)})
	if err != nil {
		t.Fatal(err)
	}
	theirs, err := h.c.CreatePlacementGroup(ids.JobFromInt(2), "", "PACK", false, []map[string]float64{cpu(1)})
	if err != nil {
		t.Fatal(err)
	}
	h.c.RemoveJobPlacementGroups(job1)
	for id, want := range map[string]string{mine: PGRemoved, kept: PGCreated, theirs: PGCreated} {
		if state, _ := h.groupEntry(id); state != want {
			t.Errorf("group %s: state %s, want %s", id[:8], state, want)
		}
	}
}

package gcsserver

import (
	"bytes"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/gray-cluster/gray/gcs"
	"github.com/gray-cluster/gray/proto/ray/commonpb"
	"github.com/gray-cluster/gray/proto/ray/raypb"
)

// TestTablesSurviveRestart: a GCS started on the bbolt store a previous one
// wrote loads its node, job and actor tables as they were: a detached named
// actor is ALIVE at the same address, found by name with its creation spec,
// and bound to its raylet again (killing it reaches that raylet); the
// node's death then ends it through the usual path.
func TestTablesSurviveRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), gcs.StoreFile)
	open := func() (gcs.Store, *gcs.NativeTables) { return openBoltTables(t, path) }
	f := newFake(t)

	st1, tables1 := open()
	e1 := newEnv(t, func(c *Config) { c.Tables = tables1 })
	e1.addNode(f, map[string]float64{"CPU": 2})
	job := &raypb.JobTableData{JobId: testJob, DriverAddress: f.owner, DriverPid: 42}
	if _, err := e1.job.AddJob(e1.cctx(), &raypb.AddJobRequest{Data: job}); err != nil {
		t.Fatal(err)
	}
	spec := actorSpec(f, "kept", 0)
	spec.ActorCreationTaskSpec.IsDetached = true
	id := actorID(spec)
	if st := e1.register(spec); st.GetCode() != 0 {
		t.Fatalf("register = %v", st)
	}
	if r := recv(t, e1.create(spec)); r.GetStatus().GetCode() != 0 {
		t.Fatalf("CreateActor = %v", r)
	}
	nodes, jobs, actors := e1.srv.Nodes(), e1.srv.Jobs(), e1.srv.Actors()
	e1.close()
	if err := st1.Close(); err != nil {
		t.Fatal(err)
	}

	st2, tables2 := open()
	defer st2.Close()
	e2 := newEnv(t, func(c *Config) { c.Tables = tables2 })
	equalMsgs(t, "nodes", nodes, e2.srv.Nodes())
	equalMsgs(t, "jobs", jobs, e2.srv.Jobs())
	equalMsgs(t, "actors", actors, e2.srv.Actors())
	if d := e2.actorInfo(id); d.GetState() != raypb.ActorTableData_ALIVE || d.GetAddress().GetPort() != f.port {
		t.Fatalf("actor after the restart = %v", d)
	}
	named, err := e2.act.GetNamedActorInfo(e2.cctx(), &raypb.GetNamedActorInfoRequest{Name: "kept", RayNamespace: "ns"})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(named.GetActorTableData().GetActorId(), id) || !bytes.Equal(named.GetTaskSpec().GetActorCreationTaskSpec().GetActorId(), id) {
		t.Fatalf("GetNamedActorInfo after the restart = %v", named)
	}

	// The node dies: the actor (max_restarts 0) is DEAD with NODE_DIED, and
	// that too is stored.
	if _, err := e2.node.UnregisterNode(e2.cctx(), &raypb.UnregisterNodeRequest{NodeId: f.nodeID,
		NodeDeathInfo: &commonpb.NodeDeathInfo{Reason: commonpb.NodeDeathInfo_UNEXPECTED_TERMINATION, ReasonMessage: "test"}}); err != nil {
		t.Fatal(err)
	}
	d := e2.actorInfo(id)
	if d.GetState() != raypb.ActorTableData_DEAD || d.GetDeathCause().GetActorDiedErrorContext().GetReason() != commonpb.ActorDiedErrorContext_NODE_DIED {
		t.Fatalf("actor after its node died = %v", d)
	}
	if j := e2.srv.Jobs()[0]; !j.GetIsDead() {
		t.Fatalf("the job whose driver's node died = %v", j)
	}
	var stored *raypb.ActorTableData
	err = tables2.Load(e2.cctx(), gcs.NativeActorsTable, func(key []byte, parts [][]byte) error {
		stored = &raypb.ActorTableData{}
		return proto.Unmarshal(parts[0], stored)
	})
	if err != nil || stored.GetState() != raypb.ActorTableData_DEAD {
		t.Fatalf("stored actor = %v, %v", stored, err)
	}
}

// TestRestartEndsWhatLostItsNode: an ALIVE actor whose node is not in the
// loaded table, and a running job whose driver's node is not, are ended
// when the GCS starts; the previous head node is DEAD at once.
func TestRestartEndsWhatLostItsNode(t *testing.T) {
	st := gcs.NewMemStore()
	tables := gcs.NewNativeTables(st)
	f := newFake(t)
	e1 := newEnv(t, func(c *Config) { c.Tables = tables })
	e1.addNode(f, map[string]float64{"CPU": 2})
	headID := randBytes(28)
	if _, err := e1.node.RegisterNode(e1.cctx(), &raypb.RegisterNodeRequest{NodeInfo: testNode(headID, "127.0.0.1", 1, true, nil)}); err != nil {
		t.Fatal(err)
	}
	if _, err := e1.job.AddJob(e1.cctx(), &raypb.AddJobRequest{Data: &raypb.JobTableData{JobId: testJob, DriverAddress: f.owner}}); err != nil {
		t.Fatal(err)
	}
	spec := actorSpec(f, "", 0)
	spec.ActorCreationTaskSpec.IsDetached = true
	e1.register(spec)
	if r := recv(t, e1.create(spec)); r.GetStatus().GetCode() != 0 {
		t.Fatalf("CreateActor = %v", r)
	}
	e1.close()
	if err := tables.Delete(e1.cctx(), gcs.NativeNodesTable, f.nodeID); err != nil {
		t.Fatal(err)
	}

	e2 := newEnv(t, func(c *Config) { c.Tables = tables })
	if d := e2.actorInfo(actorID(spec)); d.GetState() != raypb.ActorTableData_DEAD {
		t.Fatalf("actor of an unknown node = %v", d)
	}
	if j := e2.srv.Jobs()[0]; !j.GetIsDead() {
		t.Fatalf("job of an unknown driver node = %v", j)
	}
	for _, n := range e2.srv.Nodes() {
		if bytes.Equal(n.GetNodeId(), headID) && n.GetState() != raypb.GcsNodeInfo_DEAD {
			t.Fatalf("the previous head node after the restart = %v", n)
		}
	}
}

func equalMsgs[M proto.Message](t *testing.T, what string, want, got []M) {
	t.Helper()
	if len(want) != len(got) {
		t.Fatalf("%s: %d after the restart, want %d", what, len(got), len(want))
	}
	for i := range want {
		if !proto.Equal(want[i], got[i]) {
			t.Fatalf("%s[%d] after the restart:\n%v\nwant\n%v", what, i, got[i], want[i])
		}
	}
}

// TestPlacementGroupsSurviveRestart: a detached group created before the
// restart is CREATED after it with its bundles on the same node (their
// reservations stay there, nothing is reserved again), found by name; when
// that node dies it is placed again.
func TestPlacementGroupsSurviveRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), gcs.StoreFile)
	open := func() (gcs.Store, *gcs.NativeTables) { return openBoltTables(t, path) }
	f, f2 := newFake(t), newFake(t)
	f2.owner = f.owner
	st1, tables1 := open()
	e1 := newEnv(t, func(c *Config) { c.Tables = tables1 })
	e1.addNode(f, map[string]float64{"CPU": 2})
	_, _ = e1.job.AddJob(e1.cctx(), &raypb.AddJobRequest{Data: &raypb.JobTableData{JobId: testJob, DriverAddress: f.owner,
		Config: &commonpb.JobConfig{RayNamespace: "ns"}}})
	spec := pgSpec(commonpb.PlacementStrategy_PACK, "kept-pg", map[string]float64{"CPU": 1})
	spec.IsDetached = true
	if r, _ := e1.pg.CreatePlacementGroup(e1.cctx(), &raypb.CreatePlacementGroupRequest{PlacementGroupSpec: spec}); r.GetStatus().GetCode() != 0 {
		t.Fatalf("create = %v", r)
	}
	e1.waitPG(spec.GetPlacementGroupId())
	before := e1.srv.PlacementGroups()
	e1.close()
	if err := st1.Close(); err != nil {
		t.Fatal(err)
	}
	var committed int
	f.snapshot(func() { committed = len(f.committed) })

	st2, tables2 := open()
	defer st2.Close()
	e2 := newEnv(t, func(c *Config) { c.Tables = tables2 })
	equalMsgs(t, "placement groups", before, e2.srv.PlacementGroups())
	named, _ := e2.pg.GetNamedPlacementGroup(e2.cctx(), &raypb.GetNamedPlacementGroupRequest{Name: "kept-pg", RayNamespace: "ns"})
	d := named.GetPlacementGroupTableData()
	if d.GetState() != raypb.PlacementGroupTableData_CREATED || !bytes.Equal(d.GetBundles()[0].GetNodeId(), f.nodeID) {
		t.Fatalf("group after the restart = %v", d)
	}
	if r := e2.waitPG(spec.GetPlacementGroupId()); r.GetStatus().GetCode() != 0 {
		t.Fatalf("wait after the restart = %v", r)
	}
	f.snapshot(func() {
		if len(f.committed) != committed {
			t.Errorf("bundles reserved again after the restart: %d commits, had %d", len(f.committed), committed)
		}
	})
	// Its node dies: the bundle goes to the other node.
	e2.addNode(f2, map[string]float64{"CPU": 2})
	if _, err := e2.node.UnregisterNode(e2.cctx(), &raypb.UnregisterNodeRequest{NodeId: f.nodeID,
		NodeDeathInfo: &commonpb.NodeDeathInfo{Reason: commonpb.NodeDeathInfo_UNEXPECTED_TERMINATION, ReasonMessage: "test"}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the group placed again on the other node", func() bool {
		g, _ := e2.pg.GetPlacementGroup(e2.cctx(), &raypb.GetPlacementGroupRequest{PlacementGroupId: spec.GetPlacementGroupId()})
		gd := g.GetPlacementGroupTableData()
		return gd.GetState() == raypb.PlacementGroupTableData_CREATED && bytes.Equal(gd.GetBundles()[0].GetNodeId(), f2.nodeID)
	})
}

// openBoltTables opens the bbolt store at path and the native tables on it.
func openBoltTables(t *testing.T, path string) (gcs.Store, *gcs.NativeTables) {
	t.Helper()
	st, err := gcs.OpenBoltStore(path)
	if err != nil {
		t.Fatal(err)
	}
	return st, gcs.NewNativeTables(st)
}

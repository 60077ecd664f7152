package gcsserver

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/gray-cluster/gray/proto/ray/commonpb"
	"github.com/gray-cluster/gray/proto/ray/raypb"
)

func pgSpec(strategy commonpb.PlacementStrategy, name string, bundles ...map[string]float64) *commonpb.PlacementGroupSpec {
	s := &commonpb.PlacementGroupSpec{PlacementGroupId: append(randBytes(14), testJob...), Name: name, Strategy: strategy, CreatorJobId: testJob}
	for _, b := range bundles {
		s.Bundles = append(s.Bundles, &commonpb.Bundle{UnitResources: b})
	}
	return s
}

func (e *env) waitPG(id []byte) *raypb.WaitPlacementGroupUntilReadyReply {
	e.t.Helper()
	r, err := e.pg.WaitPlacementGroupUntilReady(e.cctx(), &raypb.WaitPlacementGroupUntilReadyRequest{PlacementGroupId: id})
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

func TestPlacementGroupStrictSpreadAndActors(t *testing.T) {
	e := newEnv(t, nil)
	f1, f2 := newFake(t), newFake(t)
	f2.owner = f1.owner
	e.addNode(f1, map[string]float64{"CPU": 2})
	e.addNode(f2, map[string]float64{"CPU": 2})
	_, _ = e.job.AddJob(e.cctx(), &raypb.AddJobRequest{Data: &raypb.JobTableData{JobId: testJob, Config: &commonpb.JobConfig{RayNamespace: "ns"}}})
	spec := pgSpec(commonpb.PlacementStrategy_STRICT_SPREAD, "pg1", map[string]float64{"CPU": 1}, map[string]float64{"CPU": 1})
	if r, _ := e.pg.CreatePlacementGroup(e.cctx(), &raypb.CreatePlacementGroupRequest{PlacementGroupSpec: spec}); r.GetStatus().GetCode() != 0 {
		t.Fatalf("create = %v", r)
	}
	if r := e.waitPG(spec.GetPlacementGroupId()); r.GetStatus().GetCode() != 0 {
		t.Fatalf("wait = %v", r)
	}
	g, _ := e.pg.GetPlacementGroup(e.cctx(), &raypb.GetPlacementGroupRequest{PlacementGroupId: spec.GetPlacementGroupId()})
	d := g.GetPlacementGroupTableData()
	if d.GetState() != raypb.PlacementGroupTableData_CREATED || bytes.Equal(d.GetBundles()[0].GetNodeId(), d.GetBundles()[1].GetNodeId()) || d.GetRayNamespace() != "ns" {
		t.Fatalf("group = %v", d)
	}
	for _, f := range []*fake{f1, f2} {
		f.snapshot(func() {
			if len(f.prepared) != 1 || len(f.committed) != 1 || !bytes.Equal(f.committed[0][0].GetNodeId(), f.nodeID) ||
				!bytes.Equal(f.committed[0][0].GetBundleId().GetPlacementGroupId(), spec.GetPlacementGroupId()) {
				t.Errorf("node %x: prepared %v committed %v", f.nodeID[:4], f.prepared, f.committed)
			}
		})
	}
	named, _ := e.pg.GetNamedPlacementGroup(e.cctx(), &raypb.GetNamedPlacementGroupRequest{Name: "pg1", RayNamespace: "ns"})
	if !bytes.Equal(named.GetPlacementGroupTableData().GetPlacementGroupId(), spec.GetPlacementGroupId()) {
		t.Fatalf("named = %v", named)
	}

	// An actor in bundle 1 is leased from the node holding that bundle.
	as := actorSpec(f1, "", 0)
	as.SchedulingStrategy = &commonpb.SchedulingStrategy{SchedulingStrategy: &commonpb.SchedulingStrategy_PlacementGroupSchedulingStrategy{
		PlacementGroupSchedulingStrategy: &commonpb.PlacementGroupSchedulingStrategy{PlacementGroupId: spec.GetPlacementGroupId(), PlacementGroupBundleIndex: 1}}}
	as.RequiredResources = map[string]float64{"CPU_group_1_x": 1}
	e.register(as)
	r := recv(t, e.create(as))
	if !bytes.Equal(r.GetActorAddress().GetNodeId(), d.GetBundles()[1].GetNodeId()) {
		t.Fatalf("actor on %x, bundle 1 on %x", r.GetActorAddress().GetNodeId(), d.GetBundles()[1].GetNodeId())
	}

	_, _ = e.pg.RemovePlacementGroup(e.cctx(), &raypb.RemovePlacementGroupRequest{PlacementGroupId: spec.GetPlacementGroupId()})
	e.waitState(actorID(as), raypb.ActorTableData_DEAD)
	waitFor(t, "bundles returned on both nodes", func() bool {
		n := 0
		for _, f := range []*fake{f1, f2} {
			f.snapshot(func() { n += len(f.removed) })
		}
		return n == 2
	})
	all, _ := e.pg.GetAllPlacementGroup(e.cctx(), &raypb.GetAllPlacementGroupRequest{})
	if len(all.GetPlacementGroupTableData()) != 1 || all.GetPlacementGroupTableData()[0].GetState() != raypb.PlacementGroupTableData_REMOVED {
		t.Fatalf("all = %v", all)
	}
}

func TestPlacementGroupPendingUntilItFits(t *testing.T) {
	e := newEnv(t, nil)
	f1, f2 := newFake(t), newFake(t)
	e.addNode(f1, map[string]float64{"CPU": 1})
	spec := pgSpec(commonpb.PlacementStrategy_STRICT_PACK, "", map[string]float64{"CPU": 1}, map[string]float64{"CPU": 1})
	_, _ = e.pg.CreatePlacementGroup(e.cctx(), &raypb.CreatePlacementGroupRequest{PlacementGroupSpec: spec})
	ctx, cancel := context.WithTimeout(e.ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := e.pg.WaitPlacementGroupUntilReady(ctx, &raypb.WaitPlacementGroupUntilReadyRequest{PlacementGroupId: spec.GetPlacementGroupId()}); err == nil {
		t.Fatal("a group that does not fit became ready")
	}
	usage, _ := e.res.GetAllResourceUsage(e.cctx(), &raypb.GetAllResourceUsageRequest{})
	if len(usage.GetResourceUsageData().GetPlacementGroupLoad().GetPlacementGroupData()) != 1 {
		t.Fatalf("pending load = %v", usage.GetResourceUsageData().GetPlacementGroupLoad())
	}
	e.addNode(f2, map[string]float64{"CPU": 2})
	if r := e.waitPG(spec.GetPlacementGroupId()); r.GetStatus().GetCode() != 0 {
		t.Fatalf("wait = %v", r)
	}
	f2.snapshot(func() {
		if len(f2.committed) != 1 || len(f2.committed[0]) != 2 {
			t.Errorf("STRICT_PACK commit on the big node = %v", f2.committed)
		}
	})

	// A refused prepare is retried; removal before it is ready fails waiters.
	f1.snapshot(func() { f1.prepareOK = false })
	f2.snapshot(func() { f2.prepareOK = false })
	spec2 := pgSpec(commonpb.PlacementStrategy_PACK, "", map[string]float64{"CPU": 1})
	_, _ = e.pg.CreatePlacementGroup(e.cctx(), &raypb.CreatePlacementGroupRequest{PlacementGroupSpec: spec2})
	done := make(chan *raypb.WaitPlacementGroupUntilReadyReply, 1)
	go func() {
		r, _ := e.pg.WaitPlacementGroupUntilReady(e.cctx(), &raypb.WaitPlacementGroupUntilReadyRequest{PlacementGroupId: spec2.GetPlacementGroupId()})
		done <- r
	}()
	_, _ = e.pg.RemovePlacementGroup(e.cctx(), &raypb.RemovePlacementGroupRequest{PlacementGroupId: spec2.GetPlacementGroupId()})
	if r := recv(t, done); r.GetStatus().GetCode() != codeNotFound {
		t.Fatalf("wait on removed group = %v", r)
	}
}

func TestResourcePollsAndAutoscalerState(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.ResourcePollPeriod = 20 * time.Millisecond })
	f := newFake(t)
	e.addNode(f, map[string]float64{"CPU": 1})
	waitFor(t, "the polled available resources", func() bool {
		r, _ := e.res.GetAllAvailableResources(e.cctx(), &raypb.GetAllAvailableResourcesRequest{})
		return len(r.GetResourcesList()) == 1 && r.GetResourcesList()[0].GetResourcesAvailable()["CPU"] == 0.5
	})
	u, _ := e.res.GetAllResourceUsage(e.cctx(), &raypb.GetAllResourceUsageRequest{})
	if d := u.GetResourceUsageData().GetResourceLoadByShape().GetResourceDemands(); len(d) != 1 || d[0].GetNumReadyRequestsQueued() != 3 {
		t.Fatalf("load = %v", u)
	}
	e.kv.Put(context.Background(), []byte("session"), []byte("session_name"), []byte("session_x"), true)
	st, _ := e.auto.GetClusterResourceState(e.cctx(), nil)
	cs := st.GetClusterResourceState()
	if len(cs.GetNodeStates()) != 1 || cs.GetNodeStates()[0].GetAvailableResources()["CPU"] != 0.5 || cs.GetClusterSessionName() != "session_x" ||
		len(cs.GetPendingResourceRequests()) != 1 || cs.GetPendingResourceRequests()[0].GetCount() != 3 {
		t.Fatalf("cluster state = %v", cs)
	}
	st2, _ := e.auto.GetClusterResourceState(e.cctx(), nil)
	if st2.GetClusterResourceState().GetClusterResourceStateVersion() <= cs.GetClusterResourceStateVersion() {
		t.Fatal("state version did not grow")
	}
}

func TestTaskEvents(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.TaskEventLimit = 2 })
	ev := func(task byte, attempt int32, name string) *raypb.TaskEvents {
		return &raypb.TaskEvents{TaskId: []byte{task}, AttemptNumber: attempt, JobId: testJob,
			TaskInfo: &commonpb.TaskInfoEntry{Name: name}, StateUpdates: &raypb.TaskStateUpdate{StateTsNs: map[int32]int64{1: int64(task)}}}
	}
	add := func(es ...*raypb.TaskEvents) {
		if _, err := e.task.AddTaskEventData(e.cctx(), &raypb.AddTaskEventDataRequest{Data: &raypb.TaskEventData{EventsByTask: es}}); err != nil {
			t.Fatal(err)
		}
	}
	add(ev(1, 0, "f"), ev(2, 0, "g"))
	upd := &raypb.TaskEvents{TaskId: []byte{1}, StateUpdates: &raypb.TaskStateUpdate{StateTsNs: map[int32]int64{8: 99}}}
	add(upd)
	r, _ := e.task.GetTaskEvents(e.cctx(), &raypb.GetTaskEventsRequest{})
	if len(r.GetEventsByTask()) != 2 || len(r.GetEventsByTask()[0].GetStateUpdates().GetStateTsNs()) != 2 {
		t.Fatalf("merged events = %v", r.GetEventsByTask())
	}
	add(ev(3, 0, "h"))
	f := &raypb.GetTaskEventsRequest_Filters{TaskNameFilters: []*raypb.GetTaskEventsRequest_Filters_TaskNameFilter{{TaskName: "f"}}}
	r, _ = e.task.GetTaskEvents(e.cctx(), &raypb.GetTaskEventsRequest{Filters: f})
	if len(r.GetEventsByTask()) != 0 || r.GetNumStatusTaskEventsDropped() != 1 {
		t.Fatalf("after eviction = %v", r)
	}
	f.TaskNameFilters[0].Predicate = raypb.FilterPredicate_NOT_EQUAL
	r, _ = e.task.GetTaskEvents(e.cctx(), &raypb.GetTaskEventsRequest{Filters: f})
	if len(r.GetEventsByTask()) != 2 {
		t.Fatalf("not-equal filter = %v", r)
	}
	// Task 2's latest state is PENDING_ARGS_AVAIL (1), task 3's too.
	sf := &raypb.GetTaskEventsRequest_Filters{StateFilters: []*raypb.GetTaskEventsRequest_Filters_StateFilter{{State: "pending_args_avail"}}}
	r, _ = e.task.GetTaskEvents(e.cctx(), &raypb.GetTaskEventsRequest{Filters: sf})
	if len(r.GetEventsByTask()) != 2 {
		t.Fatalf("state filter = %v", r)
	}
	sf.StateFilters[0].State = "FINISHED"
	if r, _ = e.task.GetTaskEvents(e.cctx(), &raypb.GetTaskEventsRequest{Filters: sf}); len(r.GetEventsByTask()) != 0 {
		t.Fatalf("FINISHED filter = %v", r)
	}
}

package gcsserver

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/gray-cluster/gray/proto/ray/commonpb"
	"github.com/gray-cluster/gray/proto/ray/raypb"
)

var testJob = []byte{1, 0, 0, 0}

func actorSpec(f *fake, name string, maxRestarts int64) *commonpb.TaskSpec {
	id := append(randBytes(12), testJob...)
	return &commonpb.TaskSpec{
		Type:     commonpb.TaskType_ACTOR_CREATION_TASK,
		Name:     "Counter.__init__",
		Language: commonpb.Language_PYTHON,
		FunctionDescriptor: &commonpb.FunctionDescriptor{FunctionDescriptor: &commonpb.FunctionDescriptor_PythonFunctionDescriptor{
			PythonFunctionDescriptor: &commonpb.PythonFunctionDescriptor{ModuleName: "__main__", ClassName: "Counter", FunctionName: "__init__"}}},
		JobId:             testJob,
		TaskId:            append(randBytes(8), id...),
		CallerAddress:     f.owner,
		NumReturns:        1,
		RequiredResources: map[string]float64{"CPU": 1},
		ActorCreationTaskSpec: &commonpb.ActorCreationTaskSpec{
			ActorId: id, MaxActorRestarts: maxRestarts, Name: name, RayNamespace: "ns",
		},
		SchedulingStrategy: &commonpb.SchedulingStrategy{SchedulingStrategy: &commonpb.SchedulingStrategy_DefaultSchedulingStrategy{DefaultSchedulingStrategy: &commonpb.DefaultSchedulingStrategy{}}},
		Depth:              1,
	}
}

func (e *env) addNode(f *fake, res map[string]float64) {
	e.t.Helper()
	if _, err := e.node.RegisterNode(e.cctx(), &raypb.RegisterNodeRequest{NodeInfo: f.nodeInfo(res)}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) register(spec *commonpb.TaskSpec) *raypb.GcsStatus {
	e.t.Helper()
	r, err := e.act.RegisterActor(e.cctx(), &raypb.RegisterActorRequest{TaskSpec: spec})
	if err != nil {
		e.t.Fatal(err)
	}
	return r.GetStatus()
}

// create runs CreateActor in the background.
func (e *env) create(spec *commonpb.TaskSpec) <-chan *raypb.CreateActorReply {
	out := make(chan *raypb.CreateActorReply, 1)
	go func() {
		r, err := e.act.CreateActor(e.cctx(), &raypb.CreateActorRequest{TaskSpec: spec})
		if err != nil {
			r = &raypb.CreateActorReply{Status: &raypb.GcsStatus{Code: -1, Message: err.Error()}}
		}
		out <- r
	}()
	return out
}

func recv[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatal("no reply before the deadline")
	}
	var zero T
	return zero
}

func (e *env) actorInfo(id []byte) *raypb.ActorTableData {
	e.t.Helper()
	r, err := e.act.GetActorInfo(e.cctx(), &raypb.GetActorInfoRequest{ActorId: id})
	if err != nil {
		e.t.Fatal(err)
	}
	return r.GetActorTableData()
}

func (e *env) waitState(id []byte, st raypb.ActorTableData_ActorState) *raypb.ActorTableData {
	e.t.Helper()
	var d *raypb.ActorTableData
	waitFor(e.t, "actor state "+st.String(), func() bool {
		d = e.actorInfo(id)
		return d.GetState() == st
	})
	return d
}

func actorID(spec *commonpb.TaskSpec) []byte { return spec.GetActorCreationTaskSpec().GetActorId() }

func TestActorCreateAliveNamed(t *testing.T) {
	e := newEnv(t, nil)
	f := newFake(t)
	e.addNode(f, map[string]float64{"CPU": 2})
	spec := actorSpec(f, "ctr", 0)
	id := actorID(spec)
	sub := e.subscribe(raypb.ChannelType_GCS_ACTOR_CHANNEL, id)

	if st := e.register(spec); st.GetCode() != 0 {
		t.Fatalf("register = %v", st)
	}
	if d := e.actorInfo(id); d.GetState() != raypb.ActorTableData_DEPENDENCIES_UNREADY || d.GetClassName() != "Counter" || !bytes.Equal(d.GetOwnerAddress().GetWorkerId(), f.owner.GetWorkerId()) {
		t.Fatalf("registered actor = %v", d)
	}
	waitFor(t, "the owner to be asked WaitForActorRefDeleted", func() bool {
		var ok bool
		f.snapshot(func() { ok = f.waiting[string(id)] })
		return ok
	})
	dup := actorSpec(f, "ctr", 0)
	if st := e.register(dup); st.GetCode() != codeAlreadyExists {
		t.Fatalf("duplicate name = %v", st)
	}
	if st := e.register(spec); st.GetCode() != 0 {
		t.Fatalf("re-register (retry) = %v", st)
	}

	r := recv(t, e.create(spec))
	if r.GetStatus().GetCode() != 0 || r.GetActorAddress().GetPort() != f.port || len(r.GetActorAddress().GetWorkerId()) != 28 {
		t.Fatalf("CreateActor = %v", r)
	}
	var lease *raypb.RequestWorkerLeaseRequest
	var push *raypb.PushTaskRequest
	f.snapshot(func() { lease, push = f.leases[0], f.pushes[0] })
	ls := lease.GetLeaseSpec()
	if ls.GetType() != commonpb.TaskType_ACTOR_CREATION_TASK || !bytes.Equal(ls.GetActorId(), id) || len(ls.GetLeaseId()) != 32 ||
		ls.GetRequiredResources()["CPU"] != 1 || !bytes.Equal(ls.GetCallerAddress().GetWorkerId(), f.owner.GetWorkerId()) ||
		ls.GetFunctionDescriptor().GetPythonFunctionDescriptor().GetClassName() != "Counter" {
		t.Fatalf("lease spec = %v", ls)
	}
	if !bytes.Equal(push.GetIntendedWorkerId(), r.GetActorAddress().GetWorkerId()) || !bytes.Equal(push.GetTaskSpec().GetActorCreationTaskSpec().GetActorId(), id) ||
		push.GetResourceMapping()[0].GetName() != "CPU" {
		t.Fatalf("push = %v", push)
	}
	d := e.actorInfo(id)
	if d.GetState() != raypb.ActorTableData_ALIVE || d.GetPid() != 4242 || !bytes.Equal(d.GetNodeId(), f.nodeID) || d.GetReprName() != "Counter()" {
		t.Fatalf("alive actor = %v", d)
	}
	m := sub.next(func(m *raypb.PubMessage) bool { return m.GetActorMessage().GetState() == raypb.ActorTableData_ALIVE })
	if m.GetActorMessage().GetAddress().GetPort() != f.port {
		t.Fatalf("alive message = %v", m)
	}
	// CreateActor of an ALIVE actor answers at once.
	if r2 := recv(t, e.create(spec)); !bytes.Equal(r2.GetActorAddress().GetWorkerId(), r.GetActorAddress().GetWorkerId()) {
		t.Fatalf("second CreateActor = %v", r2)
	}

	named, _ := e.act.GetNamedActorInfo(e.cctx(), &raypb.GetNamedActorInfoRequest{Name: "ctr", RayNamespace: "ns"})
	if !bytes.Equal(named.GetActorTableData().GetActorId(), id) || named.GetTaskSpec() == nil {
		t.Fatalf("named = %v", named)
	}
	miss, _ := e.act.GetNamedActorInfo(e.cctx(), &raypb.GetNamedActorInfoRequest{Name: "ctr", RayNamespace: "other"})
	if miss.GetStatus().GetCode() != codeNotFound || miss.GetStatus().GetMessage() != "Actor with name 'ctr' was not found." {
		t.Fatalf("named miss = %v", miss.GetStatus())
	}
	list, _ := e.act.ListNamedActors(e.cctx(), &raypb.ListNamedActorsRequest{AllNamespaces: true})
	if len(list.GetNamedActorsList()) != 1 || list.GetNamedActorsList()[0].GetName() != "ctr" {
		t.Fatalf("list named = %v", list)
	}
	alive := raypb.ActorTableData_ALIVE
	all, _ := e.act.GetAllActorInfo(e.cctx(), &raypb.GetAllActorInfoRequest{Filters: &raypb.GetAllActorInfoRequest_Filters{State: &alive}})
	if len(all.GetActorTableData()) != 1 || all.GetTotal() != 1 {
		t.Fatalf("all alive actors = %v", all)
	}
}

func TestActorKillViaGcs(t *testing.T) {
	e := newEnv(t, nil)
	f := newFake(t)
	e.addNode(f, map[string]float64{"CPU": 2})
	spec := actorSpec(f, "k", 3)
	id := actorID(spec)
	e.register(spec)
	recv(t, e.create(spec))
	sub := e.subscribe(raypb.ChannelType_GCS_ACTOR_CHANNEL, nil)
	r, err := e.act.KillActorViaGcs(e.cctx(), &raypb.KillActorViaGcsRequest{ActorId: id, ForceKill: true, NoRestart: true})
	if err != nil || r.GetStatus().GetCode() != 0 {
		t.Fatalf("kill = %v %v", r, err)
	}
	m := sub.next(func(m *raypb.PubMessage) bool { return m.GetActorMessage().GetState() == raypb.ActorTableData_DEAD })
	ctx := m.GetActorMessage().GetDeathCause().GetActorDiedErrorContext()
	if ctx.GetReason() != commonpb.ActorDiedErrorContext_RAY_KILL || ctx.GetName() != "k" || ctx.GetPid() != 4242 {
		t.Fatalf("death cause = %v", m.GetActorMessage().GetDeathCause())
	}
	waitFor(t, "KillLocalActor at the raylet", func() bool {
		n := 0
		f.snapshot(func() { n = len(f.kills) })
		return n == 1
	})
	f.snapshot(func() {
		k := f.kills[0]
		if !bytes.Equal(k.GetIntendedActorId(), id) || !k.GetForceKill() || k.GetDeathCause().GetActorDiedErrorContext().GetReason() != commonpb.ActorDiedErrorContext_RAY_KILL {
			t.Errorf("KillLocalActor = %v", k)
		}
	})
	// The raylet then reports the worker; a destroyed actor does not restart.
	_, _ = e.wrk.ReportWorkerFailure(e.cctx(), &raypb.ReportWorkerFailureRequest{WorkerFailure: &raypb.WorkerTableData{WorkerAddress: e.actorAddr(id)}})
	if d := e.actorInfo(id); d.GetState() != raypb.ActorTableData_DEAD || d.GetNumRestarts() != 0 {
		t.Fatalf("after kill = %v", d)
	}
	miss, _ := e.act.GetNamedActorInfo(e.cctx(), &raypb.GetNamedActorInfoRequest{Name: "k", RayNamespace: "ns"})
	if miss.GetStatus().GetCode() != codeNotFound {
		t.Fatalf("name still taken: %v", miss)
	}
	gone, _ := e.act.KillActorViaGcs(e.cctx(), &raypb.KillActorViaGcsRequest{ActorId: randBytes(16), NoRestart: true})
	if gone.GetStatus().GetCode() != codeNotFound {
		t.Fatalf("kill of unknown actor = %v", gone)
	}
}

// actorAddr is the worker address an actor was last placed on (from the
// fake's grants, since DEAD actors keep their last address).
func (e *env) actorAddr(id []byte) *commonpb.Address {
	e.srv.mu.Lock()
	defer e.srv.mu.Unlock()
	return e.srv.actors[string(id)].data.GetAddress()
}

func TestActorOutOfScope(t *testing.T) {
	e := newEnv(t, nil)
	f := newFake(t)
	e.addNode(f, map[string]float64{"CPU": 2})
	spec := actorSpec(f, "", 0)
	id := actorID(spec)
	e.register(spec)
	recv(t, e.create(spec))
	f.releaseRef(id)
	d := e.waitState(id, raypb.ActorTableData_DEAD)
	if d.GetDeathCause().GetActorDiedErrorContext().GetReason() != commonpb.ActorDiedErrorContext_REF_DELETED {
		t.Fatalf("death cause = %v", d.GetDeathCause())
	}
	waitFor(t, "the worker to be killed", func() bool {
		n := 0
		f.snapshot(func() { n = len(f.kills) })
		return n == 1
	})

	// ReportActorOutOfScope ends an actor too.
	spec2 := actorSpec(f, "", 0)
	e.register(spec2)
	recv(t, e.create(spec2))
	_, _ = e.act.ReportActorOutOfScope(e.cctx(), &raypb.ReportActorOutOfScopeRequest{ActorId: actorID(spec2)})
	d = e.waitState(actorID(spec2), raypb.ActorTableData_DEAD)
	if d.GetDeathCause().GetActorDiedErrorContext().GetReason() != commonpb.ActorDiedErrorContext_OUT_OF_SCOPE {
		t.Fatalf("death cause 2 = %v", d.GetDeathCause())
	}
}

func TestActorRestartsOnWorkerFailure(t *testing.T) {
	e := newEnv(t, nil)
	f := newFake(t)
	e.addNode(f, map[string]float64{"CPU": 2})
	spec := actorSpec(f, "", 1)
	id := actorID(spec)
	e.register(spec)
	first := recv(t, e.create(spec))
	sub := e.subscribe(raypb.ChannelType_GCS_ACTOR_CHANNEL, id)
	exit := commonpb.WorkerExitType_SYSTEM_ERROR
	detail := "killed by OOM killer"
	fail := func(w *commonpb.Address) {
		_, err := e.wrk.ReportWorkerFailure(e.cctx(), &raypb.ReportWorkerFailureRequest{WorkerFailure: &raypb.WorkerTableData{WorkerAddress: w, ExitType: &exit, ExitDetail: &detail}})
		if err != nil {
			t.Fatal(err)
		}
	}
	fail(first.GetActorAddress())
	m := sub.next(func(m *raypb.PubMessage) bool {
		return m.GetActorMessage().GetState() == raypb.ActorTableData_RESTARTING
	})
	if m.GetActorMessage().GetNumRestarts() != 1 {
		t.Fatalf("restarting message = %v", m)
	}
	m = sub.next(func(m *raypb.PubMessage) bool { return m.GetActorMessage().GetState() == raypb.ActorTableData_ALIVE })
	second := m.GetActorMessage().GetAddress()
	if bytes.Equal(second.GetWorkerId(), first.GetActorAddress().GetWorkerId()) {
		t.Fatal("restarted on the dead worker")
	}
	f.snapshot(func() {
		if len(f.pushes) != 2 || f.pushes[1].GetTaskSpec().GetAttemptNumber() != 1 {
			t.Errorf("pushes = %d, attempt %d", len(f.pushes), f.pushes[len(f.pushes)-1].GetTaskSpec().GetAttemptNumber())
		}
	})
	fail(second)
	d := e.waitState(id, raypb.ActorTableData_DEAD)
	dc := d.GetDeathCause().GetActorDiedErrorContext()
	if dc.GetReason() != commonpb.ActorDiedErrorContext_WORKER_DIED || !bytes.Contains([]byte(dc.GetErrorMessage()), []byte(detail)) {
		t.Fatalf("final death = %v", d.GetDeathCause())
	}
}

func TestActorCreationTaskError(t *testing.T) {
	e := newEnv(t, nil)
	f := newFake(t)
	f.pushReply = func(*raypb.PushTaskRequest) (*raypb.PushTaskReply, error) {
		return &raypb.PushTaskReply{IsApplicationError: true, TaskExecutionError: "ZeroDivisionError: division by zero"}, nil
	}
	e.addNode(f, map[string]float64{"CPU": 2})
	spec := actorSpec(f, "", 2)
	id := actorID(spec)
	e.register(spec)
	r := recv(t, e.create(spec))
	if r.GetStatus().GetCode() != codeCreationTaskError || r.GetStatus().GetMessage() != "ZeroDivisionError: division by zero" {
		t.Fatalf("CreateActor = %v", r)
	}
	// The worker exits with the creation exception: no restart.
	exit := commonpb.WorkerExitType_USER_ERROR
	_, _ = e.wrk.ReportWorkerFailure(e.cctx(), &raypb.ReportWorkerFailureRequest{WorkerFailure: &raypb.WorkerTableData{
		WorkerAddress: r.GetActorAddress(), ExitType: &exit,
		CreationTaskException: &commonpb.RayException{FormattedExceptionString: "Traceback: ZeroDivisionError"},
	}})
	d := e.waitState(id, raypb.ActorTableData_DEAD)
	if d.GetDeathCause().GetCreationTaskFailureContext().GetFormattedExceptionString() != "Traceback: ZeroDivisionError" || d.GetNumRestarts() != 0 {
		t.Fatalf("death = %v restarts %d", d.GetDeathCause(), d.GetNumRestarts())
	}
}

func TestActorPendingKilledAndNodeDeath(t *testing.T) {
	e := newEnv(t, nil)
	f := newFake(t)
	f.leaseGate = make(chan struct{})
	e.addNode(f, map[string]float64{"CPU": 2})
	spec := actorSpec(f, "", 0)
	id := actorID(spec)
	e.register(spec)
	pending := e.create(spec)
	waitFor(t, "the lease request", func() bool {
		n := 0
		f.snapshot(func() { n = len(f.leases) })
		return n == 1
	})
	_, _ = e.act.KillActorViaGcs(e.cctx(), &raypb.KillActorViaGcsRequest{ActorId: id, NoRestart: true})
	r := recv(t, pending)
	if r.GetStatus().GetCode() != codeSchedulingCancelled || r.GetDeathCause().GetActorDiedErrorContext().GetReason() != commonpb.ActorDiedErrorContext_RAY_KILL ||
		!r.GetDeathCause().GetActorDiedErrorContext().GetNeverStarted() {
		t.Fatalf("cancelled CreateActor = %v", r)
	}
	waitFor(t, "CancelWorkerLease", func() bool {
		n := 0
		f.snapshot(func() { n = len(f.cancels) })
		return n == 1
	})

	// An ALIVE actor without restarts dies with its node; one owned by a
	// driver on a dead node dies too.
	close(f.leaseGate)
	f.snapshot(func() { f.leaseGate = nil })
	spec2 := actorSpec(f, "", 0)
	e.register(spec2)
	recv(t, e.create(spec2))
	_, _ = e.node.UnregisterNode(e.cctx(), &raypb.UnregisterNodeRequest{NodeId: f.nodeID, NodeDeathInfo: &commonpb.NodeDeathInfo{Reason: commonpb.NodeDeathInfo_UNEXPECTED_TERMINATION, ReasonMessage: "power cut"}})
	d := e.waitState(actorID(spec2), raypb.ActorTableData_DEAD)
	reason := d.GetDeathCause().GetActorDiedErrorContext().GetReason()
	if reason != commonpb.ActorDiedErrorContext_OWNER_DIED && reason != commonpb.ActorDiedErrorContext_NODE_DIED {
		t.Fatalf("death after node loss = %v", d.GetDeathCause())
	}
}

func TestActorNodeDeathRestartsElsewhere(t *testing.T) {
	e := newEnv(t, nil)
	owner := newFake(t) // the driver's node stays up
	f1, f2 := newFake(t), newFake(t)
	f1.owner, f2.owner = owner.owner, owner.owner
	e.addNode(owner, map[string]float64{"memory": 1})
	e.addNode(f1, map[string]float64{"CPU": 1})
	spec := actorSpec(owner, "", -1)
	id := actorID(spec)
	e.register(spec)
	r := recv(t, e.create(spec))
	if r.GetActorAddress().GetPort() != f1.port {
		t.Fatalf("placed on port %d, want %d", r.GetActorAddress().GetPort(), f1.port)
	}
	e.addNode(f2, map[string]float64{"CPU": 1})
	_, _ = e.node.UnregisterNode(e.cctx(), &raypb.UnregisterNodeRequest{NodeId: f1.nodeID})
	waitFor(t, "the actor ALIVE on the second node", func() bool {
		d := e.actorInfo(id)
		return d.GetState() == raypb.ActorTableData_ALIVE && d.GetAddress().GetPort() == f2.port
	})
	if d := e.actorInfo(id); d.GetNumRestarts() != 1 {
		t.Fatalf("restarts = %d", d.GetNumRestarts())
	}
}

func TestJobFinishKillsActorsButNotDetached(t *testing.T) {
	e := newEnv(t, nil)
	f := newFake(t)
	e.addNode(f, map[string]float64{"CPU": 4})
	_, _ = e.job.AddJob(e.cctx(), &raypb.AddJobRequest{Data: &raypb.JobTableData{JobId: testJob}})
	owned := actorSpec(f, "", 0)
	detached := actorSpec(f, "svc", 0)
	detached.ActorCreationTaskSpec.IsDetached = true
	for _, s := range []*commonpb.TaskSpec{owned, detached} {
		e.register(s)
		recv(t, e.create(s))
	}
	_, _ = e.job.MarkJobFinished(e.cctx(), &raypb.MarkJobFinishedRequest{JobId: testJob})
	e.waitState(actorID(owned), raypb.ActorTableData_DEAD)
	if d := e.actorInfo(actorID(detached)); d.GetState() != raypb.ActorTableData_ALIVE {
		t.Fatalf("detached actor = %v", d.GetState())
	}
	f.snapshot(func() {
		if f.waiting[string(actorID(detached))] {
			t.Error("the owner was polled for a detached actor")
		}
	})
}

func TestCreateActorUnknownAndCloseEndsHeldCalls(t *testing.T) {
	e := newEnv(t, nil)
	f := newFake(t)
	spec := actorSpec(f, "", 0)
	if r := recv(t, e.create(spec)); r.GetStatus().GetCode() != codeInvalid {
		t.Fatalf("CreateActor of an unregistered actor = %v", r)
	}
	// No node fits: the call is held until the server closes.
	e.register(spec)
	held := e.create(spec)
	waitFor(t, "PENDING_CREATION", func() bool { return e.actorInfo(actorID(spec)).GetState() == raypb.ActorTableData_PENDING_CREATION })
	e.srv.Close()
	if r := recv(t, held); r.GetStatus().GetCode() != -1 {
		t.Fatalf("held CreateActor after Close = %v", r)
	}
	_ = context.Background()
}

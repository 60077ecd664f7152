package gcsserver

import (
	"bytes"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gray-cluster/gray/proto/ray/commonpb"
	"github.com/gray-cluster/gray/proto/ray/raypb"
)

func TestActorSpillbackAndNodeAffinity(t *testing.T) {
	e := newEnv(t, nil)
	f1, f2 := newFake(t), newFake(t)
	f2.owner = f1.owner
	e.addNode(f1, map[string]float64{"CPU": 1})
	e.addNode(f2, map[string]float64{"CPU": 1})
	f1.leaseReply = func(*raypb.RequestWorkerLeaseRequest) *raypb.RequestWorkerLeaseReply {
		return &raypb.RequestWorkerLeaseReply{RetryAtRayletAddress: &commonpb.Address{NodeId: f2.nodeID, IpAddress: "127.0.0.1", Port: f2.port}}
	}
	spec := actorSpec(f1, "", 0) // the owner's node (f1) is asked first
	e.register(spec)
	r := recv(t, e.create(spec))
	if r.GetActorAddress().GetPort() != f2.port {
		t.Fatalf("actor on port %d, want the spillback node %d", r.GetActorAddress().GetPort(), f2.port)
	}
	f2.snapshot(func() {
		if len(f2.leases) != 1 || !f2.leases[0].GetGrantOrReject() {
			t.Errorf("spillback lease = %v", f2.leases)
		}
	})

	// Hard node affinity goes straight to the named node.
	f1.leaseReply = nil
	aff := actorSpec(f1, "", 0)
	aff.SchedulingStrategy = &commonpb.SchedulingStrategy{SchedulingStrategy: &commonpb.SchedulingStrategy_NodeAffinitySchedulingStrategy{
		NodeAffinitySchedulingStrategy: &commonpb.NodeAffinitySchedulingStrategy{NodeId: f2.nodeID}}}
	e.register(aff)
	if r := recv(t, e.create(aff)); r.GetActorAddress().GetPort() != f2.port {
		t.Fatalf("affinity actor on port %d, want %d", r.GetActorAddress().GetPort(), f2.port)
	}
	// Hard affinity to a node that died: unschedulable.
	_, _ = e.node.UnregisterNode(e.cctx(), &raypb.UnregisterNodeRequest{NodeId: f2.nodeID})
	gone := actorSpec(f1, "", 0)
	gone.SchedulingStrategy = aff.SchedulingStrategy
	e.register(gone)
	r = recv(t, e.create(gone))
	if r.GetStatus().GetCode() != codeSchedulingCancelled || r.GetDeathCause().GetActorUnschedulableContext() == nil {
		t.Fatalf("affinity to a dead node = %v", r)
	}
}

func TestActorLeaseRefusedAndPushFailing(t *testing.T) {
	e := newEnv(t, nil)
	f := newFake(t)
	e.addNode(f, map[string]float64{"CPU": 1})
	f.leaseReply = func(*raypb.RequestWorkerLeaseRequest) *raypb.RequestWorkerLeaseReply {
		return &raypb.RequestWorkerLeaseReply{Canceled: true, FailureType: raypb.RequestWorkerLeaseReply_SCHEDULING_CANCELLED_RUNTIME_ENV_SETUP_FAILED, SchedulingFailureMessage: "pip failed"}
	}
	spec := actorSpec(f, "", 3)
	e.register(spec)
	r := recv(t, e.create(spec))
	if msg := r.GetDeathCause().GetRuntimeEnvFailedContext().GetErrorMessage(); r.GetStatus().GetCode() != codeSchedulingCancelled || !bytes.Contains([]byte(msg), []byte("pip failed")) {
		t.Fatalf("runtime env failure = %v", r)
	}

	// PushTask never gets through: after the retries the actor's worker
	// counts as dead (no restarts left: DEAD).
	f.snapshot(func() {
		f.leaseReply = nil
		f.pushReply = func(*raypb.PushTaskRequest) (*raypb.PushTaskReply, error) {
			return nil, status.Error(codes.Unavailable, "worker unreachable")
		}
	})
	spec2 := actorSpec(f, "", 0)
	e.register(spec2)
	r = recv(t, e.create(spec2))
	if r.GetDeathCause().GetActorDiedErrorContext().GetReason() != commonpb.ActorDiedErrorContext_WORKER_DIED {
		t.Fatalf("push failure = %v", r)
	}
	f.snapshot(func() {
		if len(f.pushes) != maxPushTries {
			t.Errorf("pushes = %d, want %d", len(f.pushes), maxPushTries)
		}
	})
}

func TestActorLabelSelectorAndFallback(t *testing.T) {
	e := newEnv(t, nil)
	f1, f2 := newFake(t), newFake(t)
	f2.owner = f1.owner
	for _, x := range []struct {
		f    *fake
		zone string
	}{{f1, "us-east"}, {f2, "eu-west"}} {
		info := x.f.nodeInfo(map[string]float64{"CPU": 1})
		info.Labels = map[string]string{"zone": x.zone}
		if _, err := e.node.RegisterNode(e.cctx(), &raypb.RegisterNodeRequest{NodeInfo: info}); err != nil {
			t.Fatal(err)
		}
	}
	in := func(vals ...string) *commonpb.LabelSelector {
		return &commonpb.LabelSelector{LabelConstraints: []*commonpb.LabelSelectorConstraint{{LabelKey: "zone", Operator: commonpb.LabelSelectorOperator_LABEL_OPERATOR_IN, LabelValues: vals}}}
	}
	spec := actorSpec(f1, "", 0)
	spec.LabelSelector = in("eu-west")
	e.register(spec)
	if r := recv(t, e.create(spec)); r.GetActorAddress().GetPort() != f2.port {
		t.Fatalf("label-selected actor on %d, want %d", r.GetActorAddress().GetPort(), f2.port)
	}
	fb := actorSpec(f1, "", 0)
	fb.LabelSelector = in("ap-south")
	fb.FallbackStrategy = &commonpb.FallbackStrategy{Options: []*commonpb.FallbackOption{{LabelSelector: &commonpb.LabelSelector{LabelConstraints: []*commonpb.LabelSelectorConstraint{
		{LabelKey: "zone", Operator: commonpb.LabelSelectorOperator_LABEL_OPERATOR_NOT_IN, LabelValues: []string{"us-east"}}}}}}}
	e.register(fb)
	if r := recv(t, e.create(fb)); r.GetActorAddress().GetPort() != f2.port {
		t.Fatalf("fallback actor on %d, want %d", r.GetActorAddress().GetPort(), f2.port)
	}
}

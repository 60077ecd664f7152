package gcsserver

import (
	"context"
	"net"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/gray-cluster/gray/proto/ray/commonpb"
	"github.com/gray-cluster/gray/proto/ray/raypb"
)

// fake is a raylet (NodeManagerService) and a core worker
// (CoreWorkerService) on one port: every granted lease names a new worker
// id at this same address, and the driver (owner) lives here too.
type fake struct {
	t      *testing.T
	port   int32
	nodeID []byte
	owner  *commonpb.Address // a driver served by this fake

	mu         sync.Mutex
	leases     []*raypb.RequestWorkerLeaseRequest
	pushes     []*raypb.PushTaskRequest
	kills      []*raypb.KillLocalActorRequest
	cancels    [][]byte
	prepared   [][]*commonpb.Bundle
	committed  [][]*commonpb.Bundle
	removed    [][]*commonpb.Bundle
	workers    [][]byte
	leaseGate  chan struct{} // non-nil: leases wait for it to close
	pushReply  func(*raypb.PushTaskRequest) (*raypb.PushTaskReply, error)
	leaseReply func(*raypb.RequestWorkerLeaseRequest) *raypb.RequestWorkerLeaseReply // nil: grant
	prepareOK  bool
	refDeleted map[string]chan struct{} // actor id -> close to report out of scope
	waiting    map[string]bool          // actor ids with a WaitForActorRefDeleted held
	onKill     func(*raypb.KillLocalActorRequest)
}

type fakeRaylet struct {
	raypb.UnimplementedNodeManagerServiceServer
	f *fake
}

type fakeWorker struct {
	raypb.UnimplementedCoreWorkerServiceServer
	f *fake
}

func newFake(t *testing.T) *fake {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fake{
		t: t, port: int32(lis.Addr().(*net.TCPAddr).Port), nodeID: randBytes(28), prepareOK: true,
		refDeleted: map[string]chan struct{}{}, waiting: map[string]bool{},
	}
	f.owner = &commonpb.Address{NodeId: f.nodeID, IpAddress: "127.0.0.1", Port: f.port, WorkerId: randBytes(28)}
	g := grpc.NewServer()
	raypb.RegisterNodeManagerServiceServer(g, &fakeRaylet{f: f})
	raypb.RegisterCoreWorkerServiceServer(g, &fakeWorker{f: f})
	done := make(chan struct{})
	go func() { defer close(done); _ = g.Serve(lis) }()
	t.Cleanup(func() {
		f.mu.Lock()
		for _, ch := range f.refDeleted {
			select {
			case <-ch:
			default:
				close(ch)
			}
		}
		if f.leaseGate != nil {
			select {
			case <-f.leaseGate:
			default:
				close(f.leaseGate)
			}
		}
		f.mu.Unlock()
		g.Stop()
		<-done
	})
	return f
}

// nodeInfo is this fake's GcsNodeInfo.
func (f *fake) nodeInfo(res map[string]float64) *raypb.GcsNodeInfo {
	return testNode(f.nodeID, "127.0.0.1", f.port, false, res)
}

func (f *fake) snapshot(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn()
}

func (r *fakeRaylet) RequestWorkerLease(ctx context.Context, req *raypb.RequestWorkerLeaseRequest) (*raypb.RequestWorkerLeaseReply, error) {
	f := r.f
	f.mu.Lock()
	f.leases = append(f.leases, proto.Clone(req).(*raypb.RequestWorkerLeaseRequest))
	gate := f.leaseGate
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.leaseReply != nil {
		if r := f.leaseReply(req); r != nil {
			return r, nil
		}
	}
	wid := randBytes(28)
	f.workers = append(f.workers, wid)
	return &raypb.RequestWorkerLeaseReply{
		WorkerAddress:   &commonpb.Address{NodeId: f.nodeID, IpAddress: "127.0.0.1", Port: f.port, WorkerId: wid},
		ResourceMapping: []*commonpb.ResourceMapEntry{{Name: "CPU", ResourceIds: []*commonpb.ResourceId{{Index: 0, Quantity: 1}}}},
		WorkerPid:       4242,
	}, nil
}

func (r *fakeRaylet) CancelWorkerLease(_ context.Context, req *raypb.CancelWorkerLeaseRequest) (*raypb.CancelWorkerLeaseReply, error) {
	r.f.snapshot(func() { r.f.cancels = append(r.f.cancels, req.GetLeaseId()) })
	return &raypb.CancelWorkerLeaseReply{}, nil
}

func (r *fakeRaylet) KillLocalActor(_ context.Context, req *raypb.KillLocalActorRequest) (*raypb.KillLocalActorReply, error) {
	var hook func(*raypb.KillLocalActorRequest)
	r.f.snapshot(func() {
		r.f.kills = append(r.f.kills, proto.Clone(req).(*raypb.KillLocalActorRequest))
		hook = r.f.onKill
	})
	if hook != nil {
		hook(req)
	}
	return &raypb.KillLocalActorReply{}, nil
}

func (r *fakeRaylet) PrepareBundleResources(_ context.Context, req *raypb.PrepareBundleResourcesRequest) (*raypb.PrepareBundleResourcesReply, error) {
	ok := false
	r.f.snapshot(func() {
		ok = r.f.prepareOK
		if ok {
			r.f.prepared = append(r.f.prepared, req.GetBundleSpecs())
		}
	})
	return &raypb.PrepareBundleResourcesReply{Success: ok}, nil
}

func (r *fakeRaylet) CommitBundleResources(_ context.Context, req *raypb.CommitBundleResourcesRequest) (*raypb.CommitBundleResourcesReply, error) {
	r.f.snapshot(func() { r.f.committed = append(r.f.committed, req.GetBundleSpecs()) })
	return &raypb.CommitBundleResourcesReply{}, nil
}

func (r *fakeRaylet) RemovePlacementGroupBundles(_ context.Context, req *raypb.RemovePlacementGroupBundlesRequest) (*raypb.RemovePlacementGroupBundlesReply, error) {
	r.f.snapshot(func() { r.f.removed = append(r.f.removed, req.GetBundleSpecs()) })
	return &raypb.RemovePlacementGroupBundlesReply{}, nil
}

func (r *fakeRaylet) GetResourceLoad(context.Context, *raypb.GetResourceLoadRequest) (*raypb.GetResourceLoadReply, error) {
	return &raypb.GetResourceLoadReply{Resources: &raypb.ResourcesData{
		NodeId: r.f.nodeID, ResourcesAvailable: map[string]float64{"CPU": 0.5}, ResourcesTotal: map[string]float64{"CPU": 1},
		ResourceLoadByShape: &raypb.ResourceLoad{ResourceDemands: []*raypb.ResourceDemand{{Shape: map[string]float64{"CPU": 1}, NumReadyRequestsQueued: 3}}},
	}}, nil
}

func (w *fakeWorker) PushTask(_ context.Context, req *raypb.PushTaskRequest) (*raypb.PushTaskReply, error) {
	var fn func(*raypb.PushTaskRequest) (*raypb.PushTaskReply, error)
	w.f.snapshot(func() {
		w.f.pushes = append(w.f.pushes, proto.Clone(req).(*raypb.PushTaskRequest))
		fn = w.f.pushReply
	})
	if fn != nil {
		return fn(req)
	}
	repr := "Counter()"
	return &raypb.PushTaskReply{ActorReprName: &repr}, nil
}

func (w *fakeWorker) WaitForActorRefDeleted(ctx context.Context, req *raypb.WaitForActorRefDeletedRequest) (*raypb.WaitForActorRefDeletedReply, error) {
	f := w.f
	f.mu.Lock()
	if string(req.GetIntendedWorkerId()) != string(f.owner.GetWorkerId()) {
		f.mu.Unlock()
		return nil, status.Error(codes.InvalidArgument, "not the owner")
	}
	ch := f.refDeleted[string(req.GetActorId())]
	if ch == nil {
		ch = make(chan struct{})
		f.refDeleted[string(req.GetActorId())] = ch
	}
	f.waiting[string(req.GetActorId())] = true
	f.mu.Unlock()
	select {
	case <-ch:
		return &raypb.WaitForActorRefDeletedReply{}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// releaseRef makes the owner report the actor out of scope.
func (f *fake) releaseRef(actorID []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if ch := f.refDeleted[string(actorID)]; ch != nil {
		close(ch)
	}
}

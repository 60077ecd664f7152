package gcsserver

import (
	"context"
	"maps"

	"google.golang.org/protobuf/proto"

	"github.com/gray-cluster/gray/proto/ray/autoscalerpb"
)

type autoscalerService struct {
	autoscalerpb.UnimplementedAutoscalerStateServiceServer
	s *Server

	// guarded by s.mu
	version int64
	state   *autoscalerpb.AutoscalingState
}

// clusterStateLocked builds the autoscaler's view: every node with its
// total/available resources, pending demands from the raylet polls, pending
// placement groups as gang requests and the requested constraint.
func (x *autoscalerService) clusterStateLocked() *autoscalerpb.ClusterResourceState {
	s := x.s
	x.version++
	out := &autoscalerpb.ClusterResourceState{
		ClusterResourceStateVersion:    x.version,
		LastSeenAutoscalerStateVersion: x.state.GetAutoscalerStateVersion(),
	}
	if v, ok, _ := s.cfg.KV.Get(s.ctx, []byte("session"), []byte("session_name")); ok {
		out.ClusterSessionName = string(v)
	}
	for _, id := range s.nodeOrder {
		n := s.nodes[id]
		st := &autoscalerpb.NodeState{
			NodeId:             n.info.GetNodeId(),
			InstanceId:         n.info.GetInstanceId(),
			RayNodeTypeName:    n.info.GetNodeTypeName(),
			TotalResources:     maps.Clone(n.info.GetResourcesTotal()),
			AvailableResources: maps.Clone(n.available),
			NodeStateVersion:   x.version,
			NodeIpAddress:      n.info.GetNodeManagerAddress(),
			InstanceTypeName:   n.info.GetInstanceTypeName(),
			Labels:             maps.Clone(n.info.GetLabels()),
		}
		switch {
		case !n.alive():
			st.Status = autoscalerpb.NodeStatus_DEAD
		case n.draining:
			st.Status = autoscalerpb.NodeStatus_DRAINING
		case n.usage != nil && n.usage.GetIdleDurationMs() > 0:
			st.Status = autoscalerpb.NodeStatus_IDLE
			st.IdleDurationMs = n.usage.GetIdleDurationMs()
		default:
			st.Status = autoscalerpb.NodeStatus_RUNNING
		}
		out.NodeStates = append(out.NodeStates, st)
	}
	for _, d := range s.aggregateLoadLocked().GetResourceDemands() {
		count := int64(d.GetNumReadyRequestsQueued() + d.GetNumInfeasibleRequestsQueued())
		if count == 0 {
			count = max(d.GetBacklogSize(), 0)
		}
		if count == 0 {
			continue
		}
		out.PendingResourceRequests = append(out.PendingResourceRequests, &autoscalerpb.ResourceRequestByCount{
			Request: &autoscalerpb.ResourceRequest{ResourcesBundle: maps.Clone(d.GetShape())},
			Count:   count,
		})
	}
	for _, pg := range s.pendingPGLoadLocked().GetPlacementGroupData() {
		g := &autoscalerpb.GangResourceRequest{Details: hexID(pg.GetPlacementGroupId()) + ":" + pg.GetStrategy().String() + "|" + pg.GetState().String()}
		for _, b := range pg.GetBundles() {
			g.Requests = append(g.Requests, &autoscalerpb.ResourceRequest{ResourcesBundle: maps.Clone(b.GetUnitResources())})
		}
		out.PendingGangResourceRequests = append(out.PendingGangResourceRequests, g)
	}
	if s.constraint != nil {
		out.ClusterResourceConstraints = []*autoscalerpb.ClusterResourceConstraint{proto.Clone(s.constraint).(*autoscalerpb.ClusterResourceConstraint)}
	}
	return out
}

func (x *autoscalerService) GetClusterResourceState(context.Context, *autoscalerpb.GetClusterResourceStateRequest) (*autoscalerpb.GetClusterResourceStateReply, error) {
	x.s.mu.Lock()
	defer x.s.mu.Unlock()
	return &autoscalerpb.GetClusterResourceStateReply{ClusterResourceState: x.clusterStateLocked()}, nil
}

func (x *autoscalerService) GetClusterStatus(context.Context, *autoscalerpb.GetClusterStatusRequest) (*autoscalerpb.GetClusterStatusReply, error) {
	x.s.mu.Lock()
	defer x.s.mu.Unlock()
	out := &autoscalerpb.GetClusterStatusReply{ClusterResourceState: x.clusterStateLocked()}
	if x.state != nil {
		out.AutoscalingState = proto.Clone(x.state).(*autoscalerpb.AutoscalingState)
	}
	return out, nil
}

func (x *autoscalerService) ReportAutoscalingState(_ context.Context, req *autoscalerpb.ReportAutoscalingStateRequest) (*autoscalerpb.ReportAutoscalingStateReply, error) {
	x.s.mu.Lock()
	defer x.s.mu.Unlock()
	if st := req.GetAutoscalingState(); st != nil {
		x.state = proto.Clone(st).(*autoscalerpb.AutoscalingState)
	}
	return &autoscalerpb.ReportAutoscalingStateReply{}, nil
}

func (x *autoscalerService) ReportClusterConfig(context.Context, *autoscalerpb.ReportClusterConfigRequest) (*autoscalerpb.ReportClusterConfigReply, error) {
	return &autoscalerpb.ReportClusterConfigReply{}, nil
}

func (x *autoscalerService) RequestClusterResourceConstraint(_ context.Context, req *autoscalerpb.RequestClusterResourceConstraintRequest) (*autoscalerpb.RequestClusterResourceConstraintReply, error) {
	x.s.mu.Lock()
	defer x.s.mu.Unlock()
	if c := req.GetClusterResourceConstraint(); c != nil {
		x.s.constraint = proto.Clone(c).(*autoscalerpb.ClusterResourceConstraint)
	}
	return &autoscalerpb.RequestClusterResourceConstraintReply{}, nil
}

// DrainNode accepts a drain of a known ALIVE node and marks it draining.
func (x *autoscalerService) DrainNode(_ context.Context, req *autoscalerpb.DrainNodeRequest) (*autoscalerpb.DrainNodeReply, error) {
	x.s.mu.Lock()
	defer x.s.mu.Unlock()
	n := x.s.aliveNodeLocked(req.GetNodeId())
	if n == nil {
		// Ray accepts draining a node that is already gone.
		return &autoscalerpb.DrainNodeReply{IsAccepted: true}, nil
	}
	n.draining = true
	n.drainTill = req.GetDeadlineTimestampMs()
	return &autoscalerpb.DrainNodeReply{IsAccepted: true}, nil
}

// Demand is a resource shape waiting in the native cluster and how many
// requests of it wait (queued tasks and actors, as the raylets report).
type Demand struct {
	Shape map[string]float64
	Count int64
}

// Demands lists the pending demands `ray status` shows, from the last
// raylet polls.
func (s *Server) Demands() []Demand {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Demand
	for _, d := range s.aggregateLoadLocked().GetResourceDemands() {
		count := int64(d.GetNumReadyRequestsQueued() + d.GetNumInfeasibleRequestsQueued())
		if count == 0 {
			count = max(d.GetBacklogSize(), 0)
		}
		if count > 0 {
			out = append(out, Demand{Shape: maps.Clone(d.GetShape()), Count: count})
		}
	}
	return out
}

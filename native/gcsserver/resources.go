package gcsserver

import (
	"context"
	"fmt"
	"maps"
	"sort"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/gray-cluster/gray/proto/ray/raypb"
)

// resourcePollLoop polls every ALIVE raylet's GetResourceLoad each period,
// keeps its available resources and load, and marks a raylet DEAD once it
// has not answered for NodeDeadAfter.
func (s *Server) resourcePollLoop() {
	t := newTicker(s.cfg.ResourcePollPeriod)
	defer t.Stop()
	inflight := map[string]bool{}
	done := make(chan string, 64)
	for {
		select {
		case <-s.ctx.Done():
			return
		case id := <-done:
			delete(inflight, id)
			continue
		case <-t.C:
		}
		type target struct{ id, addr string }
		var targets []target
		s.mu.Lock()
		for _, id := range s.nodeOrder {
			if n := s.nodes[id]; n.alive() && !inflight[id] {
				targets = append(targets, target{id, n.address()})
			}
		}
		s.mu.Unlock()
		for _, tg := range targets {
			inflight[tg.id] = true
			s.goLoop(func() {
				s.pollNode(tg.id, tg.addr)
				select {
				case done <- tg.id:
				case <-s.ctx.Done():
				}
			})
		}
	}
}

func (s *Server) pollNode(id, addr string) {
	ctx, cancel := context.WithTimeout(s.ctx, max(s.cfg.ResourcePollPeriod, minPollTimeout))
	defer cancel()
	var reply *raypb.GetResourceLoadReply
	cl, err := s.conns.raylet(addr)
	if err == nil {
		reply, err = cl.GetResourceLoad(s.conns.outCtx(ctx), &raypb.GetResourceLoadRequest{})
	}
	if s.ctx.Err() != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.nodes[id]
	if n == nil || !n.alive() {
		return
	}
	now := s.now()
	if err == nil && reply.GetResources() != nil && len(reply.GetResources().GetNodeId()) > 0 && string(reply.GetResources().GetNodeId()) != id {
		// Another raylet on a dead node's address (a restarted head's).
		err = fmt.Errorf("the raylet at %s is node %s", addr, hexID(reply.GetResources().GetNodeId()))
	}
	if err != nil && status.Code(err) != codes.Unimplemented {
		if now.Sub(n.lastOK) > s.cfg.NodeDeadAfter {
			s.log.Warn("raylet unreachable", "node_id", hexID([]byte(id)), "address", addr, "err", err)
			s.markNodeDeadLocked([]byte(id), nil)
		}
		return
	}
	n.lastOK = now
	if r := reply.GetResources(); r != nil {
		n.usage = proto.Clone(r).(*raypb.ResourcesData)
		n.available = maps.Clone(r.GetResourcesAvailable())
		if n.available == nil {
			n.available = map[string]float64{}
		}
		if r.GetIsDraining() {
			n.draining = true
			n.drainTill = r.GetDrainingDeadlineTimestampMs()
		}
	}
}

// usageOfLocked is the node's ResourcesData (the last poll, or one made
// from the node record when none arrived yet).
func usageOfLocked(n *nodeEntry) *raypb.ResourcesData {
	if n.usage != nil {
		return proto.Clone(n.usage).(*raypb.ResourcesData)
	}
	return &raypb.ResourcesData{
		NodeId:             n.info.GetNodeId(),
		ResourcesAvailable: maps.Clone(n.available),
		ResourcesTotal:     maps.Clone(n.info.GetResourcesTotal()),
		NodeManagerAddress: n.info.GetNodeManagerAddress(),
		Labels:             maps.Clone(n.info.GetLabels()),
		IsDraining:         n.draining,
	}
}

// aggregateLoadLocked merges every alive node's demands by shape.
func (s *Server) aggregateLoadLocked() *raypb.ResourceLoad {
	type agg struct {
		d   *raypb.ResourceDemand
		key string
	}
	byKey := map[string]*raypb.ResourceDemand{}
	var order []string
	for _, id := range s.nodeOrder {
		n := s.nodes[id]
		if !n.alive() || n.usage == nil {
			continue
		}
		for _, d := range n.usage.GetResourceLoadByShape().GetResourceDemands() {
			k := shapeKey(d.GetShape())
			cur := byKey[k]
			if cur == nil {
				cur = &raypb.ResourceDemand{Shape: maps.Clone(d.GetShape())}
				byKey[k] = cur
				order = append(order, k)
			}
			cur.NumReadyRequestsQueued += d.GetNumReadyRequestsQueued()
			cur.NumInfeasibleRequestsQueued += d.GetNumInfeasibleRequestsQueued()
			cur.BacklogSize += d.GetBacklogSize()
		}
	}
	out := &raypb.ResourceLoad{}
	for _, k := range order {
		out.ResourceDemands = append(out.ResourceDemands, byKey[k])
	}
	return out
}

func shapeKey(m map[string]float64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	b := make([]byte, 0, 64)
	for _, k := range keys {
		b = append(b, k...)
		b = append(b, '=')
		b = append(b, []byte(formatFloat(m[k]))...)
		b = append(b, ';')
	}
	return string(b)
}

type resourceService struct {
	raypb.UnimplementedNodeResourceInfoGcsServiceServer
	s *Server
}

func (x *resourceService) GetAllTotalResources(context.Context, *raypb.GetAllTotalResourcesRequest) (*raypb.GetAllTotalResourcesReply, error) {
	s := x.s
	s.mu.Lock()
	defer s.mu.Unlock()
	out := &raypb.GetAllTotalResourcesReply{Status: okStatus()}
	for _, id := range s.nodeOrder {
		if n := s.nodes[id]; n.alive() {
			out.ResourcesList = append(out.ResourcesList, &raypb.TotalResources{NodeId: n.info.GetNodeId(), ResourcesTotal: maps.Clone(n.info.GetResourcesTotal())})
		}
	}
	return out, nil
}

func (x *resourceService) GetAllAvailableResources(context.Context, *raypb.GetAllAvailableResourcesRequest) (*raypb.GetAllAvailableResourcesReply, error) {
	s := x.s
	s.mu.Lock()
	defer s.mu.Unlock()
	out := &raypb.GetAllAvailableResourcesReply{Status: okStatus()}
	for _, id := range s.nodeOrder {
		if n := s.nodes[id]; n.alive() {
			out.ResourcesList = append(out.ResourcesList, &raypb.AvailableResources{NodeId: n.info.GetNodeId(), ResourcesAvailable: maps.Clone(n.available)})
		}
	}
	return out, nil
}

func (x *resourceService) GetAllResourceUsage(context.Context, *raypb.GetAllResourceUsageRequest) (*raypb.GetAllResourceUsageReply, error) {
	s := x.s
	s.mu.Lock()
	defer s.mu.Unlock()
	data := &raypb.ResourceUsageBatchData{ResourceLoadByShape: s.aggregateLoadLocked(), PlacementGroupLoad: s.pendingPGLoadLocked()}
	for _, id := range s.nodeOrder {
		if n := s.nodes[id]; n.alive() {
			data.Batch = append(data.Batch, usageOfLocked(n))
		}
	}
	return &raypb.GetAllResourceUsageReply{Status: okStatus(), ResourceUsageData: data}, nil
}

func (x *resourceService) GetDrainingNodes(context.Context, *raypb.GetDrainingNodesRequest) (*raypb.GetDrainingNodesReply, error) {
	s := x.s
	s.mu.Lock()
	defer s.mu.Unlock()
	out := &raypb.GetDrainingNodesReply{Status: okStatus()}
	for _, id := range s.nodeOrder {
		if n := s.nodes[id]; n.alive() && n.draining {
			out.DrainingNodes = append(out.DrainingNodes, &raypb.DrainingNode{NodeId: n.info.GetNodeId(), DrainingDeadlineTimestampMs: n.drainTill})
		}
	}
	return out, nil
}

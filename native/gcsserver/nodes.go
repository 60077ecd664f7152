package gcsserver

import (
	"context"
	"fmt"
	"maps"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/gray-cluster/gray/proto/ray/commonpb"
	"github.com/gray-cluster/gray/proto/ray/raypb"
)

// nodeEntry is one raylet in the node table.
type nodeEntry struct {
	info      *raypb.GcsNodeInfo
	available map[string]float64   // from the last GetResourceLoad poll
	usage     *raypb.ResourcesData // the last poll's whole answer
	lastOK    time.Time            // registration or last answered poll
	draining  bool
	drainTill int64 // deadline (ms since epoch), 0 = none
}

func (n *nodeEntry) alive() bool { return n.info.GetState() == raypb.GcsNodeInfo_ALIVE }

// address is the raylet's NodeManagerService address.
func (n *nodeEntry) address() string {
	return hostPort(n.info.GetNodeManagerAddress(), n.info.GetNodeManagerPort())
}

// Nodes returns a snapshot of the node table in registration order.
func (s *Server) Nodes() []*raypb.GcsNodeInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*raypb.GcsNodeInfo, 0, len(s.nodeOrder))
	for _, id := range s.nodeOrder {
		out = append(out, proto.Clone(s.nodes[id].info).(*raypb.GcsNodeInfo))
	}
	return out
}

// nodesChangedLocked wakes everything waiting for a node to appear or die.
func (s *Server) nodesChangedLocked() {
	close(s.nodesGen)
	s.nodesGen = make(chan struct{})
}

func livenessOf(info *raypb.GcsNodeInfo) *raypb.GcsNodeAddressAndLiveness {
	return &raypb.GcsNodeAddressAndLiveness{
		NodeId:             info.GetNodeId(),
		NodeManagerAddress: info.GetNodeManagerAddress(),
		NodeManagerPort:    info.GetNodeManagerPort(),
		ObjectManagerPort:  info.GetObjectManagerPort(),
		State:              info.GetState(),
		DeathInfo:          info.GetDeathInfo(),
	}
}

// publishNodeLocked announces a node's state on channels 4 and 9.
func (s *Server) publishNodeLocked(info *raypb.GcsNodeInfo) {
	s.storeNodeLocked(info)
	c := proto.Clone(info).(*raypb.GcsNodeInfo)
	s.publish(&raypb.PubMessage{
		ChannelType:  raypb.ChannelType_GCS_NODE_INFO_CHANNEL,
		KeyId:        c.GetNodeId(),
		InnerMessage: &raypb.PubMessage_NodeInfoMessage{NodeInfoMessage: c},
	})
	s.publish(&raypb.PubMessage{
		ChannelType:  raypb.ChannelType_GCS_NODE_ADDRESS_AND_LIVENESS_CHANNEL,
		KeyId:        c.GetNodeId(),
		InnerMessage: &raypb.PubMessage_NodeAddressAndLivenessMessage{NodeAddressAndLivenessMessage: livenessOf(c)},
	})
}

// registerNode stores info ALIVE and publishes it.
func (s *Server) registerNode(info *raypb.GcsNodeInfo) error {
	if len(info.GetNodeId()) == 0 {
		return fmt.Errorf("%w: node_info without node_id", errBadRequest)
	}
	info = proto.Clone(info).(*raypb.GcsNodeInfo)
	info.State = raypb.GcsNodeInfo_ALIVE
	if info.StartTimeMs == 0 {
		info.StartTimeMs = uint64(s.now().UnixMilli())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	id := string(info.GetNodeId())
	if _, ok := s.nodes[id]; !ok {
		s.nodeOrder = append(s.nodeOrder, id)
	}
	s.nodes[id] = &nodeEntry{info: info, available: maps.Clone(info.GetResourcesTotal()), lastOK: s.now()}
	s.log.Info("node registered", "node_id", hexID(info.GetNodeId()), "address", hostPort(info.GetNodeManagerAddress(), info.GetNodeManagerPort()), "resources", info.GetResourcesTotal())
	s.publishNodeLocked(info)
	s.nodesChangedLocked()
	return nil
}

// markNodeDeadLocked records a node's death, publishes it and fails what
// ran on it. It is a no-op for unknown or already dead nodes.
func (s *Server) markNodeDeadLocked(id []byte, death *commonpb.NodeDeathInfo) {
	n := s.nodes[string(id)]
	if n == nil || !n.alive() {
		return
	}
	n.info.State = raypb.GcsNodeInfo_DEAD
	n.info.EndTimeMs = uint64(s.now().UnixMilli())
	if death == nil {
		death = &commonpb.NodeDeathInfo{Reason: commonpb.NodeDeathInfo_UNEXPECTED_TERMINATION, ReasonMessage: "the raylet stopped answering the GCS"}
	}
	n.info.DeathInfo = death
	n.available = map[string]float64{}
	s.log.Warn("node dead", "node_id", hexID(id), "reason", death.GetReason().String(), "message", death.GetReasonMessage())
	s.publishNodeLocked(n.info)
	s.nodesChangedLocked()
	s.conns.drop(n.address())
	s.onNodeDeadLocked(id, n)
	s.nodeWorkersDeadLocked(id, death)
	// A job whose driver ran there is over.
	for _, jid := range s.jobOrder {
		if j := s.jobs[jid]; !j.GetIsDead() && string(j.GetDriverAddress().GetNodeId()) == string(id) {
			s.finishJobLocked(j.GetJobId())
		}
	}
	s.pruneNodesLocked()
}

// aliveNodeLocked returns the entry of an ALIVE node, or nil.
func (s *Server) aliveNodeLocked(id []byte) *nodeEntry {
	if n := s.nodes[string(id)]; n != nil && n.alive() {
		return n
	}
	return nil
}

type nodeService struct {
	raypb.UnimplementedNodeInfoGcsServiceServer
	s *Server
}

func (x *nodeService) GetClusterId(context.Context, *raypb.GetClusterIdRequest) (*raypb.GetClusterIdReply, error) {
	return &raypb.GetClusterIdReply{Status: okStatus(), ClusterId: x.s.ClusterID()}, nil
}

func (x *nodeService) RegisterNode(_ context.Context, req *raypb.RegisterNodeRequest) (*raypb.RegisterNodeReply, error) {
	if err := x.s.registerNode(req.GetNodeInfo()); err != nil {
		return &raypb.RegisterNodeReply{Status: errStatus(codeInvalid, "%v", err)}, nil
	}
	return &raypb.RegisterNodeReply{Status: okStatus()}, nil
}

func (x *nodeService) UnregisterNode(_ context.Context, req *raypb.UnregisterNodeRequest) (*raypb.UnregisterNodeReply, error) {
	death := req.GetNodeDeathInfo()
	if death == nil {
		death = &commonpb.NodeDeathInfo{Reason: commonpb.NodeDeathInfo_EXPECTED_TERMINATION, ReasonMessage: "the raylet unregistered"}
	}
	x.s.mu.Lock()
	x.s.markNodeDeadLocked(req.GetNodeId(), death)
	x.s.mu.Unlock()
	return &raypb.UnregisterNodeReply{Status: okStatus()}, nil
}

func (x *nodeService) DrainNode(_ context.Context, req *raypb.DrainNodeRequest) (*raypb.DrainNodeReply, error) {
	out := &raypb.DrainNodeReply{Status: okStatus()}
	x.s.mu.Lock()
	defer x.s.mu.Unlock()
	for _, d := range req.GetDrainNodeData() {
		if n := x.s.nodes[string(d.GetNodeId())]; n != nil {
			n.draining = true
		}
		out.DrainNodeStatus = append(out.DrainNodeStatus, &raypb.DrainNodeStatus{NodeId: d.GetNodeId()})
	}
	return out, nil
}

func selectorMatches(sel *raypb.GetAllNodeInfoRequest_NodeSelector, n *raypb.GcsNodeInfo) bool {
	switch v := sel.GetNodeSelector().(type) {
	case *raypb.GetAllNodeInfoRequest_NodeSelector_NodeId:
		return string(v.NodeId) == string(n.GetNodeId())
	case *raypb.GetAllNodeInfoRequest_NodeSelector_NodeName:
		return v.NodeName == n.GetNodeName()
	case *raypb.GetAllNodeInfoRequest_NodeSelector_NodeIpAddress:
		return v.NodeIpAddress == n.GetNodeManagerAddress()
	case *raypb.GetAllNodeInfoRequest_NodeSelector_IsHeadNode:
		return v.IsHeadNode == n.GetIsHeadNode()
	}
	return false
}

func (x *nodeService) GetAllNodeInfo(_ context.Context, req *raypb.GetAllNodeInfoRequest) (*raypb.GetAllNodeInfoReply, error) {
	s := x.s
	s.mu.Lock()
	defer s.mu.Unlock()
	out := &raypb.GetAllNodeInfoReply{Status: okStatus(), Total: int64(len(s.nodeOrder))}
	for _, id := range s.nodeOrder {
		info := s.nodes[id].info
		if req.StateFilter != nil && info.GetState() != req.GetStateFilter() {
			out.NumFiltered++
			continue
		}
		if sels := req.GetNodeSelectors(); len(sels) > 0 {
			hit := false
			for _, sel := range sels {
				if selectorMatches(sel, info) {
					hit = true
					break
				}
			}
			if !hit {
				out.NumFiltered++
				continue
			}
		}
		if req.Limit != nil && req.GetLimit() > 0 && int64(len(out.NodeInfoList)) >= req.GetLimit() {
			break
		}
		out.NodeInfoList = append(out.NodeInfoList, proto.Clone(info).(*raypb.GcsNodeInfo))
	}
	return out, nil
}

func (x *nodeService) GetAllNodeAddressAndLiveness(_ context.Context, req *raypb.GetAllNodeAddressAndLivenessRequest) (*raypb.GetAllNodeAddressAndLivenessReply, error) {
	s := x.s
	want := map[string]bool{}
	for _, id := range req.GetNodeIds() {
		want[string(id)] = true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := &raypb.GetAllNodeAddressAndLivenessReply{Status: okStatus()}
	for _, id := range s.nodeOrder {
		info := s.nodes[id].info
		if len(want) > 0 && !want[id] {
			continue
		}
		if req.StateFilter != nil && info.GetState() != req.GetStateFilter() {
			continue
		}
		if req.Limit != nil && req.GetLimit() > 0 && int64(len(out.NodeInfoList)) >= req.GetLimit() {
			break
		}
		out.NodeInfoList = append(out.NodeInfoList, proto.Clone(livenessOf(info)).(*raypb.GcsNodeAddressAndLiveness))
	}
	return out, nil
}

func (x *nodeService) CheckAlive(_ context.Context, req *raypb.CheckAliveRequest) (*raypb.CheckAliveReply, error) {
	s := x.s
	leader := true
	out := &raypb.CheckAliveReply{Status: okStatus(), RayVersion: RayVersion, IsLeader: &leader}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range req.GetNodeIds() {
		out.RayletAlive = append(out.RayletAlive, s.aliveNodeLocked(id) != nil)
	}
	return out, nil
}

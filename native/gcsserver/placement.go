package gcsserver

import (
	"context"
	"maps"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/gray-cluster/gray/proto/ray/commonpb"
	"github.com/gray-cluster/gray/proto/ray/raypb"
)

// placementGroup is one entry of the placement group table (guarded by s.mu).
type placementGroup struct {
	data    *raypb.PlacementGroupTableData
	attempt uint64
	cancel  context.CancelFunc
	ready   chan struct{} // closed once CREATED or REMOVED
}

func (p *placementGroup) closeReady() {
	select {
	case <-p.ready:
	default:
		close(p.ready)
	}
}

// PlacementGroups returns a snapshot of the placement group table.
func (s *Server) PlacementGroups() []*raypb.PlacementGroupTableData {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*raypb.PlacementGroupTableData, 0, len(s.pgOrder))
	for _, id := range s.pgOrder {
		out = append(out, proto.Clone(s.pgs[id].data).(*raypb.PlacementGroupTableData))
	}
	return out
}

func (s *Server) pendingPGLoadLocked() *raypb.PlacementGroupLoad {
	out := &raypb.PlacementGroupLoad{}
	for _, id := range s.pgOrder {
		d := s.pgs[id].data
		if st := d.GetState(); st == raypb.PlacementGroupTableData_PENDING || st == raypb.PlacementGroupTableData_RESCHEDULING {
			out.PlacementGroupData = append(out.PlacementGroupData, proto.Clone(d).(*raypb.PlacementGroupTableData))
		}
	}
	return out
}

// pickBundleNodeLocked resolves an actor's placement group strategy to the
// node holding its bundle (nil, nil: not placed yet).
func (s *Server) pickBundleNodeLocked(st *commonpb.PlacementGroupSchedulingStrategy) (*nodeEntry, *commonpb.ActorDeathCause) {
	pg := s.pgs[string(st.GetPlacementGroupId())]
	if pg == nil {
		return nil, nil
	}
	if pg.data.GetState() == raypb.PlacementGroupTableData_REMOVED {
		return nil, unschedulableCause("Could not create the actor because its associated placement group was removed.")
	}
	if pg.data.GetState() != raypb.PlacementGroupTableData_CREATED {
		return nil, nil
	}
	bundles := pg.data.GetBundles()
	idx := st.GetPlacementGroupBundleIndex()
	if idx >= int64(len(bundles)) {
		return nil, unschedulableCause("The placement group bundle index is out of range.")
	}
	if idx >= 0 {
		return s.aliveNodeLocked(bundles[idx].GetNodeId()), nil
	}
	for _, b := range bundles {
		if n := s.aliveNodeLocked(b.GetNodeId()); n != nil {
			return n, nil
		}
	}
	return nil, nil
}

// placeBundlesLocked assigns every unplaced bundle of pg to an ALIVE node
// by its strategy; it returns bundle index -> node id, or nil when the
// bundles do not fit now.
func (s *Server) placeBundlesLocked(d *raypb.PlacementGroupTableData) map[int][]byte {
	avail := map[string]map[string]float64{}
	var order []string
	for _, id := range s.nodeOrder {
		if n := s.nodes[id]; n.alive() && !n.draining {
			avail[id] = maps.Clone(n.available)
			order = append(order, id)
		}
	}
	used := map[string]bool{} // nodes holding this group's placed bundles
	for _, b := range d.GetBundles() {
		if len(b.GetNodeId()) > 0 {
			used[string(b.GetNodeId())] = true
		}
	}
	out := map[int][]byte{}
	take := func(i int, id string) {
		for k, v := range d.GetBundles()[i].GetUnitResources() {
			avail[id][k] -= v
		}
		out[i] = []byte(id)
		used[id] = true
	}
	var todo []int
	for i, b := range d.GetBundles() {
		if len(b.GetNodeId()) == 0 {
			todo = append(todo, i)
		}
	}
	strategy := d.GetStrategy()
	if strategy == commonpb.PlacementStrategy_STRICT_PACK || strategy == commonpb.PlacementStrategy_PACK {
		// Everything on one node (the one already used, if any).
		for _, id := range order {
			if strategy == commonpb.PlacementStrategy_STRICT_PACK && len(used) > 0 && !used[id] {
				continue
			}
			trial := maps.Clone(avail[id])
			ok := true
			for _, i := range todo {
				if !fits(trial, d.GetBundles()[i].GetUnitResources()) {
					ok = false
					break
				}
				for k, v := range d.GetBundles()[i].GetUnitResources() {
					trial[k] -= v
				}
			}
			if ok {
				for _, i := range todo {
					take(i, id)
				}
				return out
			}
		}
		if strategy == commonpb.PlacementStrategy_STRICT_PACK {
			return nil
		}
	}
	for _, i := range todo {
		need := d.GetBundles()[i].GetUnitResources()
		placed := false
		// SPREAD and STRICT_SPREAD prefer (STRICT_SPREAD requires) a node
		// without another bundle of the group.
		for pass := 0; pass < 2 && !placed; pass++ {
			if pass == 1 && strategy == commonpb.PlacementStrategy_STRICT_SPREAD {
				break
			}
			for _, id := range order {
				spreadish := strategy == commonpb.PlacementStrategy_SPREAD || strategy == commonpb.PlacementStrategy_STRICT_SPREAD
				if pass == 0 && spreadish && used[id] {
					continue
				}
				if fits(avail[id], need) {
					take(i, id)
					placed = true
					break
				}
			}
		}
		if !placed {
			return nil
		}
	}
	return out
}

// schedulePGLocked starts (or restarts) placing a group's unplaced bundles.
func (s *Server) schedulePGLocked(pg *placementGroup) {
	if pg.cancel != nil {
		pg.cancel()
	}
	pg.attempt++
	attempt := pg.attempt
	ctx, cancel := context.WithCancel(s.ctx)
	pg.cancel = cancel
	s.goLoop(func() {
		defer cancel()
		s.runPG(ctx, pg, attempt)
	})
}

func bundleWithNode(b *commonpb.Bundle, node []byte) *commonpb.Bundle {
	c := proto.Clone(b).(*commonpb.Bundle)
	c.NodeId = node
	return c
}

// runPG reserves the bundles: PrepareBundleResources on every chosen node,
// then CommitBundleResources; a failed prepare releases what was prepared
// and tries again.
func (s *Server) runPG(ctx context.Context, pg *placementGroup, attempt uint64) {
	for ctx.Err() == nil {
		s.mu.Lock()
		if pg.attempt != attempt || pg.data.GetState() == raypb.PlacementGroupTableData_REMOVED {
			s.mu.Unlock()
			return
		}
		plan := s.placeBundlesLocked(pg.data)
		if plan == nil {
			changed := s.nodesGen
			s.mu.Unlock()
			if !s.waitChange(ctx, changed, infeasibleRetry) {
				return
			}
			continue
		}
		byNode := map[string][]*commonpb.Bundle{}
		addrs := map[string]string{}
		for i, node := range plan {
			byNode[string(node)] = append(byNode[string(node)], bundleWithNode(pg.data.GetBundles()[i], node))
			addrs[string(node)] = s.nodes[string(node)].address()
		}
		s.mu.Unlock()

		if s.reserve(ctx, byNode, addrs, pg.data.GetPlacementGroupId()) {
			s.mu.Lock()
			if pg.attempt != attempt || pg.data.GetState() == raypb.PlacementGroupTableData_REMOVED {
				// Removed (or rescheduled) while reserving: give them back.
				for node, bundles := range byNode {
					s.releaseBundles(addrs[node], pg.data.GetPlacementGroupId(), bundles)
				}
			} else {
				for i, node := range plan {
					pg.data.Bundles[i].NodeId = node
				}
				pg.data.State = raypb.PlacementGroupTableData_CREATED
				pg.data.PlacementGroupFinalBundlePlacementTimestampMs = s.now().UnixMilli()
				if pg.data.Stats == nil {
					pg.data.Stats = &raypb.PlacementGroupStats{}
				}
				pg.data.Stats.SchedulingState = raypb.PlacementGroupStats_FINISHED
				pg.cancel = nil
				pg.closeReady()
				s.storePGLocked(pg)
				s.log.Info("placement group created", "pg_id", hexID(pg.data.GetPlacementGroupId()), "bundles", len(plan))
				s.nodesChangedLocked() // actors waiting on the group
			}
			s.mu.Unlock()
			return
		}
		if !s.sleep(ctx, s.cfg.RetryDelay) {
			return
		}
	}
}

// reserve prepares then commits bundles on their nodes.
func (s *Server) reserve(ctx context.Context, byNode map[string][]*commonpb.Bundle, addrs map[string]string, pgID []byte) bool {
	var prepared []string
	ok := true
	for node, bundles := range byNode {
		cl, err := s.conns.raylet(addrs[node])
		var r *raypb.PrepareBundleResourcesReply
		if err == nil {
			r, err = cl.PrepareBundleResources(s.conns.outCtx(ctx), &raypb.PrepareBundleResourcesRequest{BundleSpecs: bundles})
		}
		if err != nil || !r.GetSuccess() {
			s.log.Info("bundle prepare refused", "pg_id", hexID(pgID), "node_id", hexID([]byte(node)), "err", err)
			ok = false
			break
		}
		prepared = append(prepared, node)
	}
	if ok {
		for node, bundles := range byNode {
			cl, err := s.conns.raylet(addrs[node])
			if err == nil {
				_, err = cl.CommitBundleResources(s.conns.outCtx(ctx), &raypb.CommitBundleResourcesRequest{BundleSpecs: bundles})
			}
			if err != nil {
				s.log.Warn("bundle commit failed", "pg_id", hexID(pgID), "node_id", hexID([]byte(node)), "err", err)
				ok = false
			}
		}
		if ok {
			return true
		}
		prepared = prepared[:0]
		for node := range byNode {
			prepared = append(prepared, node)
		}
	}
	for _, node := range prepared {
		s.releaseBundles(addrs[node], pgID, byNode[node])
	}
	return false
}

// releaseBundles returns a group's bundles on one raylet (async).
func (s *Server) releaseBundles(addr string, pgID []byte, bundles []*commonpb.Bundle) {
	s.goLoop(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cl, err := s.conns.raylet(addr)
		if err == nil {
			_, err = cl.RemovePlacementGroupBundles(s.conns.outCtx(ctx), &raypb.RemovePlacementGroupBundlesRequest{PlacementGroupId: pgID, BundleSpecs: bundles})
		}
		if err != nil {
			s.log.Warn("RemovePlacementGroupBundles failed", "pg_id", hexID(pgID), "raylet", addr, "err", err)
		}
	})
}

// removePGLocked removes a group: its bundles are returned, its actors die.
func (s *Server) removePGLocked(pg *placementGroup) {
	d := pg.data
	if d.GetState() == raypb.PlacementGroupTableData_REMOVED {
		return
	}
	pg.attempt++
	if pg.cancel != nil {
		pg.cancel()
		pg.cancel = nil
	}
	byNode := map[string][]*commonpb.Bundle{}
	for _, b := range d.GetBundles() {
		if len(b.GetNodeId()) > 0 {
			byNode[string(b.GetNodeId())] = append(byNode[string(b.GetNodeId())], proto.Clone(b).(*commonpb.Bundle))
		}
	}
	for node, bundles := range byNode {
		if n := s.aliveNodeLocked([]byte(node)); n != nil {
			s.releaseBundles(n.address(), d.GetPlacementGroupId(), bundles)
		}
	}
	d.State = raypb.PlacementGroupTableData_REMOVED
	if d.Stats == nil {
		d.Stats = &raypb.PlacementGroupStats{}
	}
	d.Stats.SchedulingState = raypb.PlacementGroupStats_REMOVED
	pg.closeReady()
	s.storePGLocked(pg)
	s.log.Info("placement group removed", "pg_id", hexID(d.GetPlacementGroupId()))
	for _, id := range s.actorOrder {
		a := s.actors[id]
		if a != nil && !a.gone && string(a.data.GetPlacementGroupId()) == string(d.GetPlacementGroupId()) {
			s.destroyActorLocked(a, unschedulableCause("The actor's placement group was removed."), true)
		}
	}
}

// onNodeDeadPGLocked re-places the bundles a dead node held.
func (s *Server) onNodeDeadPGLocked(nodeID []byte) {
	for _, id := range s.pgOrder {
		pg := s.pgs[id]
		if pg.data.GetState() == raypb.PlacementGroupTableData_REMOVED {
			continue
		}
		lost := false
		for _, b := range pg.data.GetBundles() {
			if string(b.GetNodeId()) == string(nodeID) {
				b.NodeId = nil
				lost = true
			}
		}
		if lost {
			pg.data.State = raypb.PlacementGroupTableData_RESCHEDULING
			s.storePGLocked(pg)
			s.schedulePGLocked(pg)
		}
	}
}

// onJobFinishedPGLocked removes the non-detached groups a job created.
func (s *Server) onJobFinishedPGLocked(jobID []byte) {
	for _, id := range s.pgOrder {
		pg := s.pgs[id]
		if !pg.data.GetIsDetached() && string(pg.data.GetCreatorJobId()) == string(jobID) {
			s.removePGLocked(pg)
		}
	}
}

// onActorDestroyedLocked removes the non-detached groups an actor created.
func (s *Server) onActorDestroyedLocked(a *actor) {
	for _, id := range s.pgOrder {
		pg := s.pgs[id]
		if !pg.data.GetIsDetached() && len(pg.data.GetCreatorActorId()) > 0 && string(pg.data.GetCreatorActorId()) == string(a.id) {
			s.removePGLocked(pg)
		}
	}
}

type pgService struct {
	raypb.UnimplementedPlacementGroupInfoGcsServiceServer
	s *Server
}

func (x *pgService) CreatePlacementGroup(_ context.Context, req *raypb.CreatePlacementGroupRequest) (*raypb.CreatePlacementGroupReply, error) {
	s := x.s
	spec := req.GetPlacementGroupSpec()
	if len(spec.GetPlacementGroupId()) == 0 || len(spec.GetBundles()) == 0 {
		return &raypb.CreatePlacementGroupReply{Status: errStatus(codeInvalid, "CreatePlacementGroup needs an id and at least one bundle")}, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	id := string(spec.GetPlacementGroupId())
	if _, ok := s.pgs[id]; ok {
		return &raypb.CreatePlacementGroupReply{Status: okStatus()}, nil // a retry
	}
	ns := s.jobs[string(spec.GetCreatorJobId())].GetConfig().GetRayNamespace()
	if name := spec.GetName(); name != "" {
		for _, other := range s.pgs {
			if od := other.data; od.GetName() == name && od.GetRayNamespace() == ns && od.GetState() != raypb.PlacementGroupTableData_REMOVED {
				return &raypb.CreatePlacementGroupReply{Status: errStatus(codeAlreadyExists, "Failed to create placement group '%s' because name '%s' already exists.", hexID(spec.GetPlacementGroupId()), name)}, nil
			}
		}
	}
	now := s.now()
	d := &raypb.PlacementGroupTableData{
		PlacementGroupId:                  spec.GetPlacementGroupId(),
		Name:                              spec.GetName(),
		Strategy:                          spec.GetStrategy(),
		State:                             raypb.PlacementGroupTableData_PENDING,
		CreatorJobId:                      spec.GetCreatorJobId(),
		CreatorActorId:                    spec.GetCreatorActorId(),
		CreatorJobDead:                    spec.GetCreatorJobDead(),
		CreatorActorDead:                  spec.GetCreatorActorDead(),
		IsDetached:                        spec.GetIsDetached(),
		RayNamespace:                      ns,
		SoftTargetNodeId:                  spec.GetSoftTargetNodeId(),
		PlacementGroupCreationTimestampMs: now.UnixMilli(),
		TopologyStrategy:                  spec.GetTopologyStrategy(),
		Stats:                             &raypb.PlacementGroupStats{CreationRequestReceivedNs: now.UnixNano(), SchedulingState: raypb.PlacementGroupStats_QUEUED},
	}
	for i, b := range spec.GetBundles() {
		c := proto.Clone(b).(*commonpb.Bundle)
		c.NodeId = nil
		if c.BundleId == nil {
			c.BundleId = &commonpb.Bundle_BundleIdentifier{}
		}
		c.BundleId.PlacementGroupId = spec.GetPlacementGroupId()
		c.BundleId.BundleIndex = int32(i)
		d.Bundles = append(d.Bundles, c)
	}
	pg := &placementGroup{data: proto.Clone(d).(*raypb.PlacementGroupTableData), ready: make(chan struct{})}
	s.pgs[id] = pg
	s.pgOrder = append(s.pgOrder, id)
	s.storePGLocked(pg)
	s.log.Info("placement group registered", "pg_id", hexID(spec.GetPlacementGroupId()), "strategy", spec.GetStrategy().String(), "bundles", len(d.Bundles))
	s.schedulePGLocked(pg)
	return &raypb.CreatePlacementGroupReply{Status: okStatus()}, nil
}

func (x *pgService) RemovePlacementGroup(_ context.Context, req *raypb.RemovePlacementGroupRequest) (*raypb.RemovePlacementGroupReply, error) {
	x.s.mu.Lock()
	defer x.s.mu.Unlock()
	if pg := x.s.pgs[string(req.GetPlacementGroupId())]; pg != nil {
		x.s.removePGLocked(pg)
	}
	return &raypb.RemovePlacementGroupReply{Status: okStatus()}, nil
}

func (x *pgService) GetPlacementGroup(_ context.Context, req *raypb.GetPlacementGroupRequest) (*raypb.GetPlacementGroupReply, error) {
	x.s.mu.Lock()
	defer x.s.mu.Unlock()
	out := &raypb.GetPlacementGroupReply{Status: okStatus()}
	if pg := x.s.pgs[string(req.GetPlacementGroupId())]; pg != nil {
		out.PlacementGroupTableData = proto.Clone(pg.data).(*raypb.PlacementGroupTableData)
	}
	return out, nil
}

func (x *pgService) GetNamedPlacementGroup(_ context.Context, req *raypb.GetNamedPlacementGroupRequest) (*raypb.GetNamedPlacementGroupReply, error) {
	x.s.mu.Lock()
	defer x.s.mu.Unlock()
	out := &raypb.GetNamedPlacementGroupReply{Status: okStatus()}
	for _, id := range x.s.pgOrder {
		d := x.s.pgs[id].data
		if d.GetName() == req.GetName() && d.GetRayNamespace() == req.GetRayNamespace() && d.GetState() != raypb.PlacementGroupTableData_REMOVED {
			out.PlacementGroupTableData = proto.Clone(d).(*raypb.PlacementGroupTableData)
		}
	}
	return out, nil
}

func (x *pgService) GetAllPlacementGroup(_ context.Context, req *raypb.GetAllPlacementGroupRequest) (*raypb.GetAllPlacementGroupReply, error) {
	x.s.mu.Lock()
	defer x.s.mu.Unlock()
	out := &raypb.GetAllPlacementGroupReply{Status: okStatus(), Total: int64(len(x.s.pgOrder))}
	for _, id := range x.s.pgOrder {
		if req.Limit != nil && req.GetLimit() > 0 && int64(len(out.PlacementGroupTableData)) >= req.GetLimit() {
			break
		}
		out.PlacementGroupTableData = append(out.PlacementGroupTableData, proto.Clone(x.s.pgs[id].data).(*raypb.PlacementGroupTableData))
	}
	return out, nil
}

// WaitPlacementGroupUntilReady is held until the group is CREATED (or
// removed, or the caller gives up).
func (x *pgService) WaitPlacementGroupUntilReady(ctx context.Context, req *raypb.WaitPlacementGroupUntilReadyRequest) (*raypb.WaitPlacementGroupUntilReadyReply, error) {
	s := x.s
	id := req.GetPlacementGroupId()
	s.mu.Lock()
	pg := s.pgs[string(id)]
	s.mu.Unlock()
	if pg == nil {
		return &raypb.WaitPlacementGroupUntilReadyReply{Status: errStatus(codeNotFound, "Placement group %s does not exist.", hexID(id))}, nil
	}
	select {
	case <-pg.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-s.ctx.Done():
		return nil, ErrClosed
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if pg.data.GetState() == raypb.PlacementGroupTableData_REMOVED {
		return &raypb.WaitPlacementGroupUntilReadyReply{Status: errStatus(codeNotFound, "Placement group %s is removed before it is ready.", hexID(id))}, nil
	}
	return &raypb.WaitPlacementGroupUntilReadyReply{Status: okStatus()}, nil
}

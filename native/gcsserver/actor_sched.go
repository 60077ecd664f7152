package gcsserver

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/gray-cluster/gray/proto/ray/commonpb"
	"github.com/gray-cluster/gray/proto/ray/raypb"
	"github.com/gray-cluster/gray/resledger"
)

// Limits of one actor scheduling attempt.
const (
	maxPushTries    = 10
	infeasibleRetry = time.Second // re-check placement while nothing fits
)

// scheduleLocked starts a scheduling attempt for a (PENDING_CREATION or
// RESTARTING): pick a node, lease a worker there, push the creation task.
func (s *Server) scheduleLocked(a *actor) {
	if a.cancel != nil {
		a.cancel()
	}
	a.attempt++
	attempt := a.attempt
	ctx, cancel := context.WithCancel(s.ctx)
	a.cancel = cancel
	spec := proto.Clone(a.spec).(*commonpb.TaskSpec)
	s.goLoop(func() {
		defer cancel()
		s.runSchedule(ctx, a, attempt, spec)
	})
}

// current reports whether attempt is still a's live scheduling attempt.
func (a *actor) current(attempt uint64) bool { return !a.gone && a.attempt == attempt }

// newLeaseID is Ray's LeaseID shape: a 4-byte counter and 28 random bytes.
func (s *Server) newLeaseIDLocked() []byte {
	s.leaseSeq++
	id := make([]byte, 32)
	binary.LittleEndian.PutUint32(id, s.leaseSeq)
	_, _ = rand.Read(id[4:])
	return id
}

// leaseSpecOf is the LeaseSpec a raylet needs to grant a worker for the
// creation task.
func leaseSpecOf(spec *commonpb.TaskSpec, leaseID []byte) *commonpb.LeaseSpec {
	acs := spec.GetActorCreationTaskSpec()
	ls := &commonpb.LeaseSpec{
		LeaseId:                    leaseID,
		JobId:                      spec.GetJobId(),
		CallerAddress:              spec.GetCallerAddress(),
		Type:                       commonpb.TaskType_ACTOR_CREATION_TASK,
		ActorId:                    acs.GetActorId(),
		IsDetachedActor:            acs.GetIsDetached(),
		RootDetachedActorId:        spec.GetRootDetachedActorId(),
		MaxActorRestarts:           acs.GetMaxActorRestarts(),
		RequiredResources:          spec.GetRequiredResources(),
		RequiredPlacementResources: spec.GetRequiredPlacementResources(),
		SchedulingStrategy:         spec.GetSchedulingStrategy(),
		LabelSelector:              spec.GetLabelSelector(),
		Depth:                      spec.GetDepth(),
		RuntimeEnvInfo:             spec.GetRuntimeEnvInfo(),
		ParentTaskId:               spec.GetParentTaskId(),
		Language:                   spec.GetLanguage(),
		FunctionDescriptor:         spec.GetFunctionDescriptor(),
		DynamicWorkerOptions:       acs.GetDynamicWorkerOptions(),
		AttemptNumber:              uint64(max(spec.GetAttemptNumber(), 0)),
		TaskName:                   spec.GetName(),
		FallbackStrategy:           spec.GetFallbackStrategy(),
	}
	for _, arg := range spec.GetArgs() {
		if ref := arg.GetObjectRef(); ref != nil && len(ref.GetObjectId()) > 0 && !arg.GetIsInlined() {
			ls.Dependencies = append(ls.Dependencies, ref)
		}
	}
	return proto.Clone(ls).(*commonpb.LeaseSpec)
}

// demandOf is what a node must have to host the actor.
func demandOf(spec *commonpb.TaskSpec) map[string]float64 {
	if r := spec.GetRequiredPlacementResources(); len(r) > 0 {
		return r
	}
	return spec.GetRequiredResources()
}

func fits(have, need map[string]float64) bool {
	for k, v := range need {
		if v > 0 && resledger.HaveOf(have, k)+1e-9 < v {
			return false
		}
	}
	return true
}

// pickNodeLocked chooses the node to lease from, or returns nil with a
// reason to wait (nothing fits yet) or a death cause (can never run).
func (s *Server) pickNodeLocked(spec *commonpb.TaskSpec) (n *nodeEntry, fatal *commonpb.ActorDeathCause) {
	strat := spec.GetSchedulingStrategy()
	if pgs := strat.GetPlacementGroupSchedulingStrategy(); pgs != nil && len(pgs.GetPlacementGroupId()) > 0 {
		return s.pickBundleNodeLocked(pgs)
	}
	need := demandOf(spec)
	if na := strat.GetNodeAffinitySchedulingStrategy(); na != nil && len(na.GetNodeId()) > 0 {
		if n := s.aliveNodeLocked(na.GetNodeId()); n != nil && fits(n.info.GetResourcesTotal(), need) {
			return n, nil
		}
		if !na.GetSoft() {
			if na.GetFailOnUnavailable() || s.nodes[string(na.GetNodeId())] != nil {
				return nil, unschedulableCause("The node specified via NodeAffinitySchedulingStrategy doesn't exist any more or is infeasible, and soft=False was specified.")
			}
			return nil, nil // the node may still register
		}
	}
	spread := strat.GetSpreadSchedulingStrategy() != nil
	for _, sel := range selectorsOf(spec) {
		if n := s.pickByResourcesLocked(spec, need, sel, spread); n != nil {
			return n, nil
		}
	}
	return nil, nil
}

// pickByResourcesLocked picks an ALIVE node matching sel whose total
// resources fit need: one with the resources free now first (the owner's
// node preferred, as Ray sends actor leases to the owner's raylet), else one
// that will have them.
func (s *Server) pickByResourcesLocked(spec *commonpb.TaskSpec, need map[string]float64, sel *commonpb.LabelSelector, spread bool) *nodeEntry {
	owner := string(spec.GetCallerAddress().GetNodeId())
	var firstAvail, firstTotal *nodeEntry
	offset := 0
	if spread {
		offset = s.spreadNext
		s.spreadNext++
	}
	for i := range s.nodeOrder {
		id := s.nodeOrder[(i+offset)%len(s.nodeOrder)]
		n := s.nodes[id]
		if !n.alive() || n.draining || !fits(n.info.GetResourcesTotal(), need) || !labelsMatch(n.info.GetLabels(), sel) {
			continue
		}
		if fits(n.available, need) {
			if !spread && id == owner {
				return n
			}
			if firstAvail == nil {
				firstAvail = n
			}
		}
		if firstTotal == nil || (!spread && id == owner) {
			firstTotal = n
		}
	}
	if firstAvail != nil {
		return firstAvail
	}
	return firstTotal
}

// waitChange blocks until the node table or placement groups change, d
// passes or ctx ends; it reports false when ctx ended.
func (s *Server) waitChange(ctx context.Context, changed <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-changed:
	case <-t.C:
	case <-ctx.Done():
		return false
	}
	return true
}

func (s *Server) sleep(ctx context.Context, d time.Duration) bool {
	return s.waitChange(ctx, nil, d)
}

// runSchedule is one scheduling attempt of actor a.
func (s *Server) runSchedule(ctx context.Context, a *actor, attempt uint64, spec *commonpb.TaskSpec) {
	var target *nodeEntry
	grantOrReject := false
	for ctx.Err() == nil {
		s.mu.Lock()
		if !a.current(attempt) {
			s.mu.Unlock()
			return
		}
		if target == nil || !target.alive() {
			var fatal *commonpb.ActorDeathCause
			target, fatal = s.pickNodeLocked(spec)
			grantOrReject = false
			if fatal != nil {
				s.destroyActorLocked(a, fatal, false)
				s.mu.Unlock()
				return
			}
		}
		if target == nil {
			changed := s.nodesGen
			s.mu.Unlock()
			if !s.waitChange(ctx, changed, infeasibleRetry) {
				return
			}
			continue
		}
		leaseID := s.newLeaseIDLocked()
		a.leaseNode = target.info.GetNodeId()
		node, raylet := target, target.address()
		s.mu.Unlock()

		reply, err := s.requestLease(ctx, raylet, &raypb.RequestWorkerLeaseRequest{LeaseSpec: leaseSpecOf(spec, leaseID), GrantOrReject: grantOrReject})
		if ctx.Err() != nil {
			if w := reply.GetWorkerAddress(); err == nil && len(w.GetWorkerId()) > 0 {
				s.killLeased(raylet, a.id, w) // granted just as the attempt ended
			} else {
				s.cancelLease(raylet, leaseID)
			}
			return
		}
		switch {
		case err != nil:
			s.log.Warn("actor lease request failed", "actor_id", hexID(a.id), "raylet", raylet, "err", err)
			target = nil
			if !s.sleep(ctx, s.cfg.RetryDelay) {
				return
			}
			continue
		case reply.GetCanceled():
			if !s.leaseCanceled(ctx, a, attempt, reply) {
				return
			}
			target = nil
			continue
		case reply.GetRejected():
			target = nil
			if !s.sleep(ctx, s.cfg.RetryDelay) {
				return
			}
			continue
		case len(reply.GetWorkerAddress().GetWorkerId()) == 0:
			// Spillback: try the node the raylet named, which may only
			// grant or reject.
			s.mu.Lock()
			target = s.aliveNodeLocked(reply.GetRetryAtRayletAddress().GetNodeId())
			s.mu.Unlock()
			grantOrReject = target != nil
			continue
		}
		s.leaseGranted(ctx, a, attempt, spec, node, raylet, reply)
		return
	}
}

func (s *Server) requestLease(ctx context.Context, raylet string, req *raypb.RequestWorkerLeaseRequest) (*raypb.RequestWorkerLeaseReply, error) {
	cl, err := s.conns.raylet(raylet)
	if err != nil {
		return nil, err
	}
	return cl.RequestWorkerLease(s.conns.outCtx(ctx), req)
}

// cancelLease withdraws a lease request the scheduling no longer needs.
func (s *Server) cancelLease(raylet string, leaseID []byte) {
	s.goLoop(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if cl, err := s.conns.raylet(raylet); err == nil {
			_, _ = cl.CancelWorkerLease(s.conns.outCtx(ctx), &raypb.CancelWorkerLeaseRequest{LeaseId: leaseID})
		}
	})
}

// leaseCanceled handles a raylet's refusal; it reports whether to retry.
func (s *Server) leaseCanceled(ctx context.Context, a *actor, attempt uint64, reply *raypb.RequestWorkerLeaseReply) bool {
	msg := reply.GetSchedulingFailureMessage()
	var cause *commonpb.ActorDeathCause
	switch reply.GetFailureType() {
	case raypb.RequestWorkerLeaseReply_SCHEDULING_CANCELLED_INTENDED:
		return false
	case raypb.RequestWorkerLeaseReply_SCHEDULING_CANCELLED_PLACEMENT_GROUP_REMOVED:
		cause = unschedulableCause("Could not create the actor because its associated placement group was removed.\n" + msg)
	case raypb.RequestWorkerLeaseReply_SCHEDULING_CANCELLED_RUNTIME_ENV_SETUP_FAILED:
		cause = &commonpb.ActorDeathCause{Context: &commonpb.ActorDeathCause_RuntimeEnvFailedContext{RuntimeEnvFailedContext: &commonpb.RuntimeEnvFailedContext{
			ErrorMessage: "Could not create the actor because its associated runtime env failed to be created.\n" + msg}}}
	case raypb.RequestWorkerLeaseReply_SCHEDULING_CANCELLED_UNSCHEDULABLE:
		cause = unschedulableCause(msg)
	case raypb.RequestWorkerLeaseReply_SCHEDULING_CANCELLED_WORKER_STARTUP_FAILED:
		cause = unschedulableCause("Could not create the actor because worker startup repeatedly failed.\n" + msg)
	default: // SCHEDULING_FAILED: wait for the cluster to change
		s.mu.Lock()
		changed := s.nodesGen
		s.mu.Unlock()
		return s.waitChange(ctx, changed, infeasibleRetry)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if a.current(attempt) {
		s.destroyActorLocked(a, cause, false)
	}
	return false
}

// leaseGranted records the leased worker and pushes the creation task.
func (s *Server) leaseGranted(ctx context.Context, a *actor, attempt uint64, spec *commonpb.TaskSpec, node *nodeEntry, raylet string, lease *raypb.RequestWorkerLeaseReply) {
	w := proto.Clone(lease.GetWorkerAddress()).(*commonpb.Address)
	if len(w.GetNodeId()) == 0 {
		w.NodeId = node.info.GetNodeId()
	}
	s.mu.Lock()
	if !a.current(attempt) {
		s.mu.Unlock()
		s.killLeased(raylet, a.id, w)
		return
	}
	a.leaseNode = nil
	a.worker, a.raylet = w, raylet
	a.data.Address = proto.Clone(w).(*commonpb.Address)
	a.data.Pid = lease.GetWorkerPid()
	a.data.ResourceMapping = lease.GetResourceMapping()
	spec.LeaseGrantTimestampMs = s.now().UnixMilli()
	s.mu.Unlock()

	req := &raypb.PushTaskRequest{IntendedWorkerId: w.GetWorkerId(), TaskSpec: spec, ResourceMapping: lease.GetResourceMapping()}
	for try := 1; ; try++ {
		var reply *raypb.PushTaskReply
		cl, err := s.conns.worker(addrOf(w))
		if err == nil {
			reply, err = cl.PushTask(s.conns.outCtx(ctx), req)
		}
		if ctx.Err() != nil {
			return // destroyed or rescheduled; whoever did it killed the worker
		}
		if err == nil {
			s.mu.Lock()
			s.actorCreatedLocked(a, attempt, reply)
			s.mu.Unlock()
			return
		}
		s.log.Warn("actor creation PushTask failed", "actor_id", hexID(a.id), "worker", addrOf(w), "try", try, "err", err)
		if try >= maxPushTries {
			s.mu.Lock()
			if a.current(attempt) {
				s.restartOrDieLocked(a, true, workerDiedCause(a, commonpb.WorkerExitType_SYSTEM_ERROR, "the GCS could not push the actor creation task: "+err.Error()))
			}
			s.mu.Unlock()
			return
		}
		if !s.sleep(ctx, s.cfg.RetryDelay) {
			return
		}
	}
}

// killLeased releases a worker leased for an attempt that was abandoned.
func (s *Server) killLeased(raylet string, actorID []byte, w *commonpb.Address) {
	s.goLoop(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if cl, err := s.conns.raylet(raylet); err == nil {
			_, _ = cl.KillLocalActor(s.conns.outCtx(ctx), &raypb.KillLocalActorRequest{IntendedActorId: actorID, WorkerId: w.GetWorkerId(), ForceKill: true})
		}
	})
}

// actorCreatedLocked: the creation task returned. An application error
// still makes the actor ALIVE (its worker exits and reports the exception);
// the creators learn of it through CreationTaskError.
func (s *Server) actorCreatedLocked(a *actor, attempt uint64, reply *raypb.PushTaskReply) {
	if !a.current(attempt) || a.state() == raypb.ActorTableData_DEAD {
		return
	}
	a.cancel = nil
	now := s.now()
	if a.state() != raypb.ActorTableData_RESTARTING {
		a.data.StartTime = uint64(now.UnixMilli())
	}
	a.data.Timestamp = float64(now.UnixMilli())
	a.data.State = raypb.ActorTableData_ALIVE
	a.data.NodeId = a.worker.GetNodeId()
	a.data.ReprName = reply.GetActorReprName()
	a.data.Preempted = false
	a.data.DeathCause = nil
	st := okStatus()
	if reply.GetIsApplicationError() {
		st = errStatus(codeCreationTaskError, "%s", reply.GetTaskExecutionError())
		s.log.Info("actor creation task raised", "actor_id", hexID(a.id), "error", reply.GetTaskExecutionError())
	} else {
		s.log.Info("actor alive", "actor_id", hexID(a.id), "worker", addrOf(a.worker), "pid", a.data.GetPid())
	}
	s.publishActorLocked(a)
	s.replyCreatorsLocked(a, &raypb.CreateActorReply{Status: st, ActorAddress: proto.Clone(a.worker).(*commonpb.Address), BorrowedRefs: reply.GetBorrowedRefs()})
}

package gcsserver

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/gray-cluster/gray/proto/ray/commonpb"
	"github.com/gray-cluster/gray/proto/ray/raypb"
)

// ownerRetryWindow is how long transient WaitForActorRefDeleted failures
// are retried before the owner is taken for dead.
const ownerRetryWindow = 5 * time.Second

// diedContext fills the identity part of an ActorDiedErrorContext.
func diedContext(a *actor, reason commonpb.ActorDiedErrorContext_Reason, msg string) *commonpb.ActorDeathCause {
	st := a.state()
	return &commonpb.ActorDeathCause{Context: &commonpb.ActorDeathCause_ActorDiedErrorContext{ActorDiedErrorContext: &commonpb.ActorDiedErrorContext{
		ErrorMessage:   msg,
		OwnerId:        a.data.GetOwnerAddress().GetWorkerId(),
		OwnerIpAddress: a.data.GetOwnerAddress().GetIpAddress(),
		NodeIpAddress:  a.data.GetAddress().GetIpAddress(),
		Pid:            a.data.GetPid(),
		Name:           a.data.GetName(),
		RayNamespace:   a.data.GetRayNamespace(),
		ClassName:      a.data.GetClassName(),
		ActorId:        a.id,
		NeverStarted:   st == raypb.ActorTableData_DEPENDENCIES_UNREADY || st == raypb.ActorTableData_PENDING_CREATION,
		Reason:         reason,
	}}}
}

func killedCause(a *actor) *commonpb.ActorDeathCause {
	return diedContext(a, commonpb.ActorDiedErrorContext_RAY_KILL, "The actor is dead because it was killed by `ray.kill`.")
}

func outOfScopeCause(a *actor) *commonpb.ActorDeathCause {
	return diedContext(a, commonpb.ActorDiedErrorContext_OUT_OF_SCOPE, "The actor is dead because all references to the actor were removed.")
}

func refDeletedCause(a *actor) *commonpb.ActorDeathCause {
	return diedContext(a, commonpb.ActorDiedErrorContext_REF_DELETED, "The actor is dead because all references to the actor were removed including lineage ref count.")
}

func ownerDiedCause(a *actor, detail string) *commonpb.ActorDeathCause {
	o := a.data.GetOwnerAddress()
	return diedContext(a, commonpb.ActorDiedErrorContext_OWNER_DIED, fmt.Sprintf(
		"The actor is dead because its owner has died. Owner Id: %s Owner Ip address: %s Owner worker exit type: SYSTEM_ERROR Worker exit detail: %s",
		hexID(o.GetWorkerId()), o.GetIpAddress(), detail))
}

func workerDiedCause(a *actor, exit commonpb.WorkerExitType, detail string) *commonpb.ActorDeathCause {
	if exit == commonpb.WorkerExitType_NODE_OUT_OF_MEMORY {
		return &commonpb.ActorDeathCause{Context: &commonpb.ActorDeathCause_OomContext{OomContext: &commonpb.OomContext{ErrorMessage: detail}}}
	}
	return diedContext(a, commonpb.ActorDiedErrorContext_WORKER_DIED, fmt.Sprintf(
		"The actor is dead because its worker process has died. Worker exit type: %s Worker exit detail: %s", exit.String(), detail))
}

func nodeDiedCause(a *actor, n *nodeEntry) *commonpb.ActorDeathCause {
	c := diedContext(a, commonpb.ActorDiedErrorContext_NODE_DIED, fmt.Sprintf(
		"The actor died because its node has died. Node Id: %s\n\tthe actor's node was terminated: %s",
		hexID(n.info.GetNodeId()), n.info.GetDeathInfo().GetReasonMessage()))
	c.GetActorDiedErrorContext().NodeDeathInfo = proto.Clone(n.info.GetDeathInfo()).(*commonpb.NodeDeathInfo)
	return c
}

func unschedulableCause(msg string) *commonpb.ActorDeathCause {
	return &commonpb.ActorDeathCause{Context: &commonpb.ActorDeathCause_ActorUnschedulableContext{ActorUnschedulableContext: &commonpb.ActorUnschedulableContext{ErrorMessage: msg}}}
}

// stopSchedulingLocked cancels an in-flight scheduling attempt.
func (s *Server) stopSchedulingLocked(a *actor) {
	a.attempt++
	if a.cancel != nil {
		a.cancel()
		a.cancel = nil
	}
	a.leaseNode = nil
}

// killWorkerLocked asks the actor's raylet to kill its worker (async).
func (s *Server) killWorkerLocked(a *actor, cause *commonpb.ActorDeathCause, force bool) {
	if a.worker == nil || a.raylet == "" {
		return
	}
	req := &raypb.KillLocalActorRequest{IntendedActorId: a.id, WorkerId: a.worker.GetWorkerId(), ForceKill: force, DeathCause: cause}
	addr := a.raylet
	s.goLoop(func() {
		ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
		defer cancel()
		cl, err := s.conns.raylet(addr)
		if err == nil {
			_, err = cl.KillLocalActor(s.conns.outCtx(ctx), req)
		}
		if err != nil && s.ctx.Err() == nil {
			// The stock raylet answers Aborted once the worker is gone.
			s.log.Info("KillLocalActor failed", "actor_id", hexID(req.GetIntendedActorId()), "raylet", addr, "err", err)
		}
	})
}

// destroyActorLocked ends an actor for good: its worker is killed, it is
// DEAD with cause, its name is released and held CreateActor calls get
// SchedulingCancelled.
func (s *Server) destroyActorLocked(a *actor, cause *commonpb.ActorDeathCause, force bool) {
	if a.gone {
		return
	}
	a.gone = true
	s.stopSchedulingLocked(a)
	if a.stopOwnerWatch != nil {
		a.stopOwnerWatch()
		a.stopOwnerWatch = nil
	}
	if a.state() != raypb.ActorTableData_DEAD {
		s.killWorkerLocked(a, cause, force)
		a.data.State = raypb.ActorTableData_DEAD
		a.data.EndTime = uint64(s.now().UnixMilli())
		a.data.DeathCause = cause
	} else if old := a.data.GetDeathCause().GetActorDiedErrorContext(); old != nil && old.GetReason() == commonpb.ActorDiedErrorContext_OUT_OF_SCOPE &&
		cause.GetActorDiedErrorContext().GetReason() == commonpb.ActorDiedErrorContext_REF_DELETED {
		a.data.DeathCause = cause
	}
	a.worker, a.raylet = nil, ""
	a.data.Timestamp = float64(s.now().UnixMilli())
	if name := a.data.GetName(); name != "" {
		k := nameKey{a.data.GetRayNamespace(), name}
		if s.named[k] == string(a.id) {
			delete(s.named, k)
		}
	}
	s.log.Info("actor destroyed", "actor_id", hexID(a.id), "cause", deathText(a.data.GetDeathCause()))
	s.publishActorLocked(a)
	s.replyCreatorsLocked(a, &raypb.CreateActorReply{Status: errStatus(codeSchedulingCancelled, "Actor creation cancelled."), DeathCause: a.data.GetDeathCause()})
	s.onActorDestroyedLocked(a)
	if a.detached() {
		s.dropJobFunctionsLocked(a.data.GetJobId())
	}
	s.pruneActorsLocked()
}

func deathText(c *commonpb.ActorDeathCause) string {
	switch v := c.GetContext().(type) {
	case *commonpb.ActorDeathCause_ActorDiedErrorContext:
		return v.ActorDiedErrorContext.GetErrorMessage()
	case *commonpb.ActorDeathCause_CreationTaskFailureContext:
		return "creation task failed: " + v.CreationTaskFailureContext.GetFormattedExceptionString()
	case *commonpb.ActorDeathCause_ActorUnschedulableContext:
		return v.ActorUnschedulableContext.GetErrorMessage()
	case *commonpb.ActorDeathCause_RuntimeEnvFailedContext:
		return v.RuntimeEnvFailedContext.GetErrorMessage()
	case *commonpb.ActorDeathCause_OomContext:
		return v.OomContext.GetErrorMessage()
	}
	return ""
}

// restartOrDieLocked handles the loss of an actor's worker: RESTARTING and
// rescheduled while restarts remain (max_restarts -1 = forever), else DEAD.
func (s *Server) restartOrDieLocked(a *actor, reschedule bool, cause *commonpb.ActorDeathCause) {
	if a.gone {
		return
	}
	s.stopSchedulingLocked(a)
	a.worker, a.raylet = nil, ""
	maxR, n := a.data.GetMaxRestarts(), a.data.GetNumRestarts()
	effective := n - int64(a.data.GetNumRestartsDueToNodePreemption())
	if reschedule && (maxR == -1 || effective < maxR) {
		a.data.NumRestarts = n + 1
		a.spec.AttemptNumber = int32(n + 1)
		a.data.State = raypb.ActorTableData_RESTARTING
		a.data.Address = &commonpb.Address{}
		a.data.ResourceMapping = nil
		a.data.Timestamp = float64(s.now().UnixMilli())
		s.log.Info("actor restarting", "actor_id", hexID(a.id), "num_restarts", n+1, "max_restarts", maxR, "cause", deathText(cause))
		s.publishActorLocked(a)
		s.scheduleLocked(a)
		return
	}
	a.data.State = raypb.ActorTableData_DEAD
	a.data.DeathCause = cause
	a.data.EndTime = uint64(s.now().UnixMilli())
	a.data.Timestamp = float64(a.data.EndTime)
	s.log.Info("actor dead", "actor_id", hexID(a.id), "cause", deathText(cause))
	if a.detached() {
		s.destroyActorLocked(a, cause, false)
		return
	}
	s.publishActorLocked(a)
	s.replyCreatorsLocked(a, &raypb.CreateActorReply{Status: errStatus(codeSchedulingCancelled, "Actor creation cancelled."), DeathCause: cause})
}

// killForRestartLocked is ray.kill(no_restart=False): the worker is killed
// and the actor restarts if it may.
func (s *Server) killForRestartLocked(a *actor, force bool) {
	if a.state() == raypb.ActorTableData_DEAD {
		return
	}
	if a.worker != nil {
		// The raylet reports the worker's death, which restarts the actor.
		s.killWorkerLocked(a, killedCause(a), force)
		return
	}
	// Not placed yet: start over.
	s.stopSchedulingLocked(a)
	s.scheduleLocked(a)
}

// onWorkerDeadLocked: actors owned by the worker die, the actor it hosted
// restarts or dies.
func (s *Server) onWorkerDeadLocked(f *raypb.WorkerTableData) {
	wid := f.GetWorkerAddress().GetWorkerId()
	exit := f.GetExitType()
	for _, id := range s.actorOrder {
		a := s.actors[id]
		if a == nil || a.gone {
			continue
		}
		if !a.detached() && string(a.data.GetOwnerAddress().GetWorkerId()) == string(wid) {
			s.destroyActorLocked(a, ownerDiedCause(a, "Owner's worker process has crashed."), false)
			continue
		}
		if a.worker == nil || string(a.worker.GetWorkerId()) != string(wid) {
			continue
		}
		var cause *commonpb.ActorDeathCause
		if ex := f.GetCreationTaskException(); ex != nil {
			cause = &commonpb.ActorDeathCause{Context: &commonpb.ActorDeathCause_CreationTaskFailureContext{CreationTaskFailureContext: proto.Clone(ex).(*commonpb.RayException)}}
		} else {
			cause = workerDiedCause(a, exit, f.GetExitDetail())
		}
		reschedule := exit != commonpb.WorkerExitType_INTENDED_USER_EXIT && exit != commonpb.WorkerExitType_USER_ERROR
		s.restartOrDieLocked(a, reschedule, cause)
	}
}

// onNodeDeadLocked: actors owned by workers on the node die; actors on it
// (or being leased there) restart or die.
func (s *Server) onNodeDeadLocked(nodeID []byte, n *nodeEntry) {
	for _, id := range s.actorOrder {
		a := s.actors[id]
		if a == nil || a.gone {
			continue
		}
		if !a.detached() && string(a.data.GetOwnerAddress().GetNodeId()) == string(nodeID) {
			s.destroyActorLocked(a, ownerDiedCause(a, "Owner's node has crashed."), false)
			continue
		}
		switch {
		case a.worker != nil && string(a.worker.GetNodeId()) == string(nodeID):
			s.restartOrDieLocked(a, true, nodeDiedCause(a, n))
		case a.leaseNode != nil && string(a.leaseNode) == string(nodeID):
			s.stopSchedulingLocked(a)
			s.scheduleLocked(a)
		}
	}
	s.onNodeDeadPGLocked(nodeID)
}

// onJobFinishedLocked destroys the job's non-detached actors.
func (s *Server) onJobFinishedLocked(jobID []byte) {
	for _, id := range s.actorOrder {
		a := s.actors[id]
		if a != nil && !a.gone && !a.detached() && string(a.data.GetJobId()) == string(jobID) {
			s.destroyActorLocked(a, ownerDiedCause(a, "The actor's job has finished."), false)
		}
	}
	s.onJobFinishedPGLocked(jobID)
}

// watchOwnerLocked long-polls the owner's WaitForActorRefDeleted: when it
// returns the actor is out of scope; when the owner is unreachable it died.
func (s *Server) watchOwnerLocked(a *actor) {
	owner := a.data.GetOwnerAddress()
	addr := addrOf(owner)
	if owner.GetPort() == 0 {
		return
	}
	ctx, cancel := context.WithCancel(s.ctx)
	a.stopOwnerWatch = cancel
	req := &raypb.WaitForActorRefDeletedRequest{IntendedWorkerId: owner.GetWorkerId(), ActorId: a.id}
	s.goLoop(func() {
		defer cancel()
		var firstErr time.Time
		for {
			cl, err := s.conns.worker(addr)
			if err == nil {
				_, err = cl.WaitForActorRefDeleted(s.conns.outCtx(ctx), req)
			}
			if ctx.Err() != nil {
				return
			}
			if err == nil {
				s.mu.Lock()
				s.destroyActorLocked(a, refDeletedCause(a), false)
				s.mu.Unlock()
				return
			}
			switch status.Code(err) {
			case codes.Unimplemented:
				s.log.Warn("owner does not serve WaitForActorRefDeleted; the actor lives until killed or its job ends", "actor_id", hexID(a.id), "owner", addr)
				return
			case codes.Unavailable, codes.DeadlineExceeded:
				if firstErr.IsZero() {
					firstErr = time.Now()
				}
				if time.Since(firstErr) < ownerRetryWindow {
					select {
					case <-time.After(s.cfg.RetryDelay):
						continue
					case <-ctx.Done():
						return
					}
				}
			}
			s.log.Info("actor owner unreachable; destroying its actor", "actor_id", hexID(a.id), "owner", addr, "err", err)
			s.mu.Lock()
			s.destroyActorLocked(a, ownerDiedCause(a, "Owner's worker process has crashed."), false)
			s.mu.Unlock()
			return
		}
	})
}

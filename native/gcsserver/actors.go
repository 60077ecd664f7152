package gcsserver

import (
	"context"

	"google.golang.org/protobuf/proto"

	"github.com/gray-cluster/gray/proto/ray/commonpb"
	"github.com/gray-cluster/gray/proto/ray/raypb"
)

// nameKey identifies a named actor.
type nameKey struct{ namespace, name string }

// actor is one entry of the actor table. Every field is guarded by s.mu.
type actor struct {
	id   []byte
	data *raypb.ActorTableData
	spec *commonpb.TaskSpec // the creation task (attempt_number follows restarts)

	// creators are the held CreateActor calls.
	creators []chan *raypb.CreateActorReply

	// Scheduling: attempt counts schedule() calls; a scheduling goroutine
	// whose attempt is no longer current drops its result.
	attempt   uint64
	cancel    context.CancelFunc // ends the in-flight scheduling attempt
	leaseNode []byte             // node asked for a lease (not yet granted)
	worker    *commonpb.Address  // the leased worker (creating or alive)
	raylet    string             // that worker's raylet address

	stopOwnerWatch context.CancelFunc
	gone           bool // destroyed: out of the name index and owner tracking
}

func (a *actor) state() raypb.ActorTableData_ActorState { return a.data.GetState() }

func (a *actor) detached() bool { return a.spec.GetActorCreationTaskSpec().GetIsDetached() }

// Actors returns a snapshot of the actor table in registration order.
func (s *Server) Actors() []*raypb.ActorTableData {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*raypb.ActorTableData, 0, len(s.actorOrder))
	for _, id := range s.actorOrder {
		out = append(out, proto.Clone(s.actors[id].data).(*raypb.ActorTableData))
	}
	return out
}

func (s *Server) publishActorLocked(a *actor) {
	s.storeActorLocked(a)
	s.publish(&raypb.PubMessage{
		ChannelType:  raypb.ChannelType_GCS_ACTOR_CHANNEL,
		KeyId:        a.id,
		InnerMessage: &raypb.PubMessage_ActorMessage{ActorMessage: proto.Clone(a.data).(*raypb.ActorTableData)},
	})
}

// replyCreatorsLocked answers every held CreateActor call.
func (s *Server) replyCreatorsLocked(a *actor, reply *raypb.CreateActorReply) {
	for _, ch := range a.creators {
		ch <- proto.Clone(reply).(*raypb.CreateActorReply)
	}
	a.creators = nil
}

// newActorData builds the table entry of a freshly registered actor.
func (s *Server) newActorData(spec *commonpb.TaskSpec) *raypb.ActorTableData {
	acs := spec.GetActorCreationTaskSpec()
	d := &raypb.ActorTableData{
		ActorId:              acs.GetActorId(),
		ParentId:             spec.GetParentTaskId(),
		JobId:                spec.GetJobId(),
		State:                raypb.ActorTableData_DEPENDENCIES_UNREADY,
		MaxRestarts:          acs.GetMaxActorRestarts(),
		Address:              &commonpb.Address{},
		OwnerAddress:         proto.Clone(spec.GetCallerAddress()).(*commonpb.Address),
		IsDetached:           acs.GetIsDetached(),
		Name:                 acs.GetName(),
		Timestamp:            float64(s.now().UnixMilli()),
		FunctionDescriptor:   spec.GetFunctionDescriptor(),
		RayNamespace:         acs.GetRayNamespace(),
		SerializedRuntimeEnv: spec.GetRuntimeEnvInfo().GetSerializedRuntimeEnv(),
		ClassName:            spec.GetFunctionDescriptor().GetPythonFunctionDescriptor().GetClassName(),
		RequiredResources:    spec.GetRequiredResources(),
		CallSite:             spec.CallSite,
		Labels:               spec.GetLabels(),
		FallbackStrategy:     spec.GetFallbackStrategy(),
	}
	if d.ClassName == "" {
		d.ClassName = spec.GetFunctionDescriptor().GetJavaFunctionDescriptor().GetClassName()
	}
	if pg := spec.GetSchedulingStrategy().GetPlacementGroupSchedulingStrategy(); pg != nil && len(pg.GetPlacementGroupId()) > 0 {
		d.PlacementGroupId = pg.GetPlacementGroupId()
	}
	if ls := spec.GetLabelSelector(); ls != nil {
		d.LabelSelector = map[string]string{}
		for _, c := range ls.GetLabelConstraints() {
			if len(c.GetLabelValues()) > 0 {
				d.LabelSelector[c.GetLabelKey()] = c.GetLabelValues()[0]
			}
		}
	}
	d = proto.Clone(d).(*raypb.ActorTableData)
	return d
}

// registerActor adds an actor (RegisterActor). A second registration of the
// same id is accepted as a retry.
func (s *Server) registerActor(spec *commonpb.TaskSpec) *raypb.GcsStatus {
	acs := spec.GetActorCreationTaskSpec()
	if spec.GetType() != commonpb.TaskType_ACTOR_CREATION_TASK || acs == nil || len(acs.GetActorId()) == 0 {
		return errStatus(codeInvalid, "RegisterActor needs an ACTOR_CREATION_TASK spec with an actor id")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	id := string(acs.GetActorId())
	if _, ok := s.actors[id]; ok {
		return okStatus()
	}
	if name := acs.GetName(); name != "" {
		k := nameKey{acs.GetRayNamespace(), name}
		if _, taken := s.named[k]; taken {
			return errStatus(codeAlreadyExists, "Actor with name '%s' already exists in the namespace %s", name, acs.GetRayNamespace())
		}
		s.named[k] = id
	}
	a := &actor{id: acs.GetActorId(), spec: proto.Clone(spec).(*commonpb.TaskSpec), data: s.newActorData(spec)}
	s.actors[id] = a
	s.actorOrder = append(s.actorOrder, id)
	s.log.Info("actor registered", "actor_id", hexID(a.id), "name", acs.GetName(), "class", a.data.GetClassName(), "detached", a.detached())
	s.publishActorLocked(a)
	if !a.detached() {
		s.watchOwnerLocked(a)
	}
	return okStatus()
}

// createActor starts scheduling (CreateActor) and returns the channel its
// reply arrives on, or an immediate reply.
func (s *Server) createActor(spec *commonpb.TaskSpec) (<-chan *raypb.CreateActorReply, *raypb.CreateActorReply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.actors[string(spec.GetActorCreationTaskSpec().GetActorId())]
	if a == nil || a.gone {
		return nil, &raypb.CreateActorReply{Status: errStatus(codeInvalid, "Actor may be already destroyed.")}
	}
	switch a.state() {
	case raypb.ActorTableData_ALIVE:
		return nil, &raypb.CreateActorReply{Status: okStatus(), ActorAddress: proto.Clone(a.data.GetAddress()).(*commonpb.Address)}
	case raypb.ActorTableData_DEAD:
		return nil, &raypb.CreateActorReply{Status: errStatus(codeSchedulingCancelled, "Actor creation cancelled."), DeathCause: a.data.GetDeathCause()}
	}
	ch := make(chan *raypb.CreateActorReply, 1)
	a.creators = append(a.creators, ch)
	if a.state() == raypb.ActorTableData_DEPENDENCIES_UNREADY {
		// The owner resolved the creation task's dependencies: its spec is
		// the one to run.
		a.spec = proto.Clone(spec).(*commonpb.TaskSpec)
		a.data.State = raypb.ActorTableData_PENDING_CREATION
		s.publishActorLocked(a)
		s.scheduleLocked(a)
	}
	return ch, nil
}

// forgetCreator drops a held CreateActor call whose client went away.
func (s *Server) forgetCreator(id []byte, ch <-chan *raypb.CreateActorReply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.actors[string(id)]
	if a == nil {
		return
	}
	for i, c := range a.creators {
		if c == ch {
			a.creators = append(a.creators[:i], a.creators[i+1:]...)
			return
		}
	}
}

// jobHasLiveActorsLocked reports whether a job has actors not yet DEAD.
func (s *Server) jobHasLiveActorsLocked(jobID []byte) bool {
	for _, a := range s.actors {
		if string(a.data.GetJobId()) == string(jobID) && a.state() != raypb.ActorTableData_DEAD {
			return true
		}
	}
	return false
}

type actorService struct {
	raypb.UnimplementedActorInfoGcsServiceServer
	s *Server
}

func (x *actorService) RegisterActor(_ context.Context, req *raypb.RegisterActorRequest) (*raypb.RegisterActorReply, error) {
	return &raypb.RegisterActorReply{Status: x.s.registerActor(req.GetTaskSpec())}, nil
}

// CreateActor is held until the actor is ALIVE (actor_address) or was
// destroyed first (death_cause, SchedulingCancelled).
func (x *actorService) CreateActor(ctx context.Context, req *raypb.CreateActorRequest) (*raypb.CreateActorReply, error) {
	ch, now := x.s.createActor(req.GetTaskSpec())
	if now != nil {
		return now, nil
	}
	select {
	case r := <-ch:
		return r, nil
	case <-ctx.Done():
		x.s.forgetCreator(req.GetTaskSpec().GetActorCreationTaskSpec().GetActorId(), ch)
		return nil, ctx.Err()
	case <-x.s.ctx.Done():
		return nil, ErrClosed
	}
}

func (x *actorService) GetActorInfo(_ context.Context, req *raypb.GetActorInfoRequest) (*raypb.GetActorInfoReply, error) {
	s := x.s
	s.mu.Lock()
	defer s.mu.Unlock()
	out := &raypb.GetActorInfoReply{Status: okStatus()}
	a := s.actors[string(req.GetActorId())]
	if a == nil && req.GetName() != "" {
		for k, id := range s.named {
			if k.name == req.GetName() {
				a = s.actors[id]
				break
			}
		}
	}
	if a != nil {
		out.ActorTableData = proto.Clone(a.data).(*raypb.ActorTableData)
	}
	return out, nil
}

func (x *actorService) GetNamedActorInfo(_ context.Context, req *raypb.GetNamedActorInfoRequest) (*raypb.GetNamedActorInfoReply, error) {
	s := x.s
	s.mu.Lock()
	defer s.mu.Unlock()
	id, ok := s.named[nameKey{req.GetRayNamespace(), req.GetName()}]
	if !ok || s.actors[id] == nil || s.actors[id].gone {
		return &raypb.GetNamedActorInfoReply{Status: errStatus(codeNotFound, "Actor with name '%s' was not found.", req.GetName())}, nil
	}
	a := s.actors[id]
	return &raypb.GetNamedActorInfoReply{
		Status:         okStatus(),
		ActorTableData: proto.Clone(a.data).(*raypb.ActorTableData),
		TaskSpec:       proto.Clone(a.spec).(*commonpb.TaskSpec),
	}, nil
}

func (x *actorService) ListNamedActors(_ context.Context, req *raypb.ListNamedActorsRequest) (*raypb.ListNamedActorsReply, error) {
	s := x.s
	s.mu.Lock()
	defer s.mu.Unlock()
	out := &raypb.ListNamedActorsReply{Status: okStatus()}
	for _, id := range s.actorOrder {
		a := s.actors[id]
		if a.gone || a.data.GetName() == "" || a.state() == raypb.ActorTableData_DEAD {
			continue
		}
		if !req.GetAllNamespaces() && a.data.GetRayNamespace() != req.GetRayNamespace() {
			continue
		}
		out.NamedActorsList = append(out.NamedActorsList, &commonpb.NamedActorInfo{RayNamespace: a.data.GetRayNamespace(), Name: a.data.GetName()})
	}
	return out, nil
}

func (x *actorService) GetAllActorInfo(_ context.Context, req *raypb.GetAllActorInfoRequest) (*raypb.GetAllActorInfoReply, error) {
	s := x.s
	s.mu.Lock()
	defer s.mu.Unlock()
	f := req.GetFilters()
	out := &raypb.GetAllActorInfoReply{Status: okStatus(), Total: int64(len(s.actorOrder))}
	for _, id := range s.actorOrder {
		d := s.actors[id].data
		if f != nil && ((f.ActorId != nil && string(f.GetActorId()) != string(d.GetActorId())) ||
			(f.JobId != nil && string(f.GetJobId()) != string(d.GetJobId())) ||
			(f.State != nil && f.GetState() != d.GetState())) {
			out.NumFiltered++
			continue
		}
		if !req.GetShowDeadJobs() && s.jobDeadLocked(d.GetJobId()) && d.GetState() == raypb.ActorTableData_DEAD && !d.GetIsDetached() {
			out.NumFiltered++
			continue
		}
		if req.Limit != nil && req.GetLimit() > 0 && int64(len(out.ActorTableData)) >= req.GetLimit() {
			break
		}
		out.ActorTableData = append(out.ActorTableData, proto.Clone(d).(*raypb.ActorTableData))
	}
	return out, nil
}

func (x *actorService) KillActorViaGcs(_ context.Context, req *raypb.KillActorViaGcsRequest) (*raypb.KillActorViaGcsReply, error) {
	s := x.s
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.actors[string(req.GetActorId())]
	if a == nil || a.gone {
		return &raypb.KillActorViaGcsReply{Status: errStatus(codeNotFound, "Could not find actor with ID %s.", hexID(req.GetActorId()))}, nil
	}
	if req.GetNoRestart() {
		s.destroyActorLocked(a, killedCause(a), req.GetForceKill())
	} else {
		s.killForRestartLocked(a, req.GetForceKill())
	}
	return &raypb.KillActorViaGcsReply{Status: okStatus()}, nil
}

func (x *actorService) ReportActorOutOfScope(_ context.Context, req *raypb.ReportActorOutOfScopeRequest) (*raypb.ReportActorOutOfScopeReply, error) {
	s := x.s
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.actors[string(req.GetActorId())]
	if a != nil && !a.gone && a.data.GetNumRestartsDueToLineageReconstruction() <= req.GetNumRestartsDueToLineageReconstruction() {
		s.destroyActorLocked(a, outOfScopeCause(a), false)
	}
	return &raypb.ReportActorOutOfScopeReply{Status: okStatus()}, nil
}

// RestartActorForLineageReconstruction restarts a DEAD (not destroyed)
// actor so that lost objects it produced can be recomputed.
func (x *actorService) RestartActorForLineageReconstruction(_ context.Context, req *raypb.RestartActorForLineageReconstructionRequest) (*raypb.RestartActorForLineageReconstructionReply, error) {
	s := x.s
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.actors[string(req.GetActorId())]
	if a == nil || a.gone {
		return &raypb.RestartActorForLineageReconstructionReply{Status: errStatus(codeInvalid, "Actor is permanently dead.")}, nil
	}
	if req.GetNumRestartsDueToLineageReconstruction() <= a.data.GetNumRestartsDueToLineageReconstruction() || a.state() != raypb.ActorTableData_DEAD {
		return &raypb.RestartActorForLineageReconstructionReply{Status: okStatus()}, nil // stale or already restarted
	}
	a.data.NumRestartsDueToLineageReconstruction++
	a.data.NumRestarts++
	a.spec.AttemptNumber = int32(a.data.GetNumRestarts())
	a.data.State = raypb.ActorTableData_RESTARTING
	a.data.DeathCause = nil
	s.publishActorLocked(a)
	s.scheduleLocked(a)
	return &raypb.RestartActorForLineageReconstructionReply{Status: okStatus()}, nil
}

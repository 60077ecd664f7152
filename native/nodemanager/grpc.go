package nodemanager

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	commonpb "github.com/gray-cluster/gray/proto/ray/commonpb"
	raypb "github.com/gray-cluster/gray/proto/ray/raypb"
)

// nodeManagerService is NodeManagerService for core workers and the GCS.
// Methods it does not override answer UNIMPLEMENTED.
type nodeManagerService struct {
	raypb.UnimplementedNodeManagerServiceServer
	r *Raylet
}

// defaultSystemConfig is the JSON handed to every core worker. Every key
// must exist in the 2.60 RayConfig (an unknown key is fatal there).
// Spilling is done by gray's store itself (no IO workers, hence no
// spilling config); metrics export is off because there is no metrics
// agent to receive it.
func defaultSystemConfig() map[string]any {
	return map[string]any{
		"automatic_object_spilling_enabled": true,
		"object_spilling_config":            "",
		"is_external_storage_type_fs":       true,
		"enable_metrics_collection":         false,
	}
}

// SystemConfigJSON is the GetSystemConfig reply: the defaults with
// Config.SystemConfig applied.
func (r *Raylet) SystemConfigJSON() string { return SystemConfigJSON(r.cfg.SystemConfig) }

// SystemConfigJSON is the RayConfig JSON core workers get from
// GetSystemConfig (and the GCS from GetInternalConfig): the defaults with
// overrides applied (a nil value deletes a key).
func SystemConfigJSON(overrides map[string]any) string {
	m := defaultSystemConfig()
	for k, v := range overrides {
		if v == nil {
			delete(m, k)
			continue
		}
		m[k] = v
	}
	b, _ := json.Marshal(m)
	return string(b)
}

func (s *nodeManagerService) GetSystemConfig(ctx context.Context, _ *raypb.GetSystemConfigRequest) (*raypb.GetSystemConfigReply, error) {
	return &raypb.GetSystemConfigReply{SystemConfig: s.r.SystemConfigJSON()}, nil
}

func (s *nodeManagerService) RequestWorkerLease(ctx context.Context, req *raypb.RequestWorkerLeaseRequest) (*raypb.RequestWorkerLeaseReply, error) {
	r := s.r
	spec := req.GetLeaseSpec()
	if spec == nil {
		return &raypb.RequestWorkerLeaseReply{Rejected: true, FailureType: raypb.RequestWorkerLeaseReply_SCHEDULING_FAILED,
			SchedulingFailureMessage: "gray raylet: RequestWorkerLease without lease_spec"}, nil
	}
	if s := spec.GetRuntimeEnvInfo().GetSerializedRuntimeEnv(); s != "" && s != "{}" {
		r.log.Debug("lease runtime_env", "lease_id", hex.EncodeToString(spec.GetLeaseId()), "runtime_env", s)
	}
	env, err := parseRuntimeEnv(spec)
	if err == nil {
		env, err = r.prepareRuntimeEnv(ctx, env, spec.GetJobId())
	}
	if err != nil {
		r.log.Warn("runtime_env refused", "lease_id", hex.EncodeToString(spec.GetLeaseId()), "err", err)
		return &raypb.RequestWorkerLeaseReply{Canceled: true,
			FailureType:              raypb.RequestWorkerLeaseReply_SCHEDULING_CANCELLED_RUNTIME_ENV_SETUP_FAILED,
			SchedulingFailureMessage: err.Error()}, nil
	}
	l := newLease(spec, req.GetBacklogSize())
	l.env = env
	l.elsewhere = excludesNode(spec, r.cfg.NodeID, r.labels())
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, ErrClosed
	}
	if g, dup := r.leases[l.id]; dup && g.worker != nil {
		// A retried request for a lease already granted: the same grant.
		w := g.worker
		res := leaseResult{worker: w, pid: w.pid, mapping: mapping(g.alloc), addr: w.address(r.cfg.NodeID)}
		r.mu.Unlock()
		return s.leaseReply(res), nil
	}
	// A lease spilled here may only be granted or rejected, as in Ray: one
	// that does not fit now goes back to its sender, which chooses again
	// with a fresher view (queued here, it would wait for whatever holds
	// the resources, possibly for ever, while another node has them free).
	if req.GetGrantOrReject() && (l.elsewhere || !r.res.Fits(l.placement)) {
		r.mu.Unlock()
		return &raypb.RequestWorkerLeaseReply{Rejected: true, ResourcesData: s.resourcesData()}, nil
	}
	l.noSpill = req.GetGrantOrReject()
	if !l.noSpill {
		if to := r.spillLocked(l); to != nil {
			r.mu.Unlock()
			return &raypb.RequestWorkerLeaseReply{RetryAtRayletAddress: to}, nil
		}
	}
	r.queue = append(r.queue, l)
	r.scheduleLocked()
	r.mu.Unlock()

	select {
	case res := <-l.reply:
		return s.leaseReply(res), nil
	case <-ctx.Done():
		r.mu.Lock()
		queued := r.dequeueLocked(l.id) != nil
		r.mu.Unlock()
		if queued {
			l.finish(leaseResult{canceled: true})
			return nil, ctx.Err()
		}
		// Granted meanwhile: nobody will use it, give it back.
		res := <-l.reply
		if res.worker != nil {
			r.returnLease(l.id, false, false, "")
		}
		return nil, ctx.Err()
	}
}

func (s *nodeManagerService) leaseReply(res leaseResult) *raypb.RequestWorkerLeaseReply {
	if res.retryAt != nil {
		return &raypb.RequestWorkerLeaseReply{RetryAtRayletAddress: res.retryAt}
	}
	if res.worker == nil {
		return &raypb.RequestWorkerLeaseReply{Canceled: res.canceled, Rejected: res.rejected,
			FailureType: res.failureType, SchedulingFailureMessage: res.message}
	}
	return &raypb.RequestWorkerLeaseReply{WorkerAddress: res.addr, WorkerPid: uint32(res.pid), ResourceMapping: res.mapping}
}

// returnLease ends a granted lease: resources back, the worker back to
// the pool, or killed (disconnect) / left to exit (exiting).
func (r *Raylet) returnLease(id string, disconnect, exiting bool, detail string) bool {
	r.mu.Lock()
	l, ok := r.leases[id]
	if !ok {
		r.mu.Unlock()
		return false
	}
	w := l.worker
	r.releaseLeaseLocked(l)
	kill, grace := false, false
	if w != nil && w.state == wsLeased {
		switch {
		case disconnect:
			w.exiting = true
			w.setExit(commonpb.WorkerExitType_SYSTEM_ERROR, "the lease holder asked to disconnect the worker: "+detail)
			kill = true
		case exiting:
			w.exiting = true
			grace = w.cmd != nil
		default:
			w.state = wsIdle
			w.idleFrom = time.Now()
		}
	}
	r.scheduleLocked()
	r.mu.Unlock()
	if kill {
		w.kill()
	}
	if grace {
		r.killAfterGrace(w) // it said it is exiting; make sure it does
	}
	return true
}

func (s *nodeManagerService) ReturnWorkerLease(ctx context.Context, req *raypb.ReturnWorkerLeaseRequest) (*raypb.ReturnWorkerLeaseReply, error) {
	id := string(req.GetLeaseId())
	if !s.r.returnLease(id, req.GetDisconnectWorker(), req.GetWorkerExiting(), req.GetDisconnectWorkerErrorDetail()) {
		s.r.log.Debug("ReturnWorkerLease for an unknown lease", "lease", hex.EncodeToString(req.GetLeaseId()), "port", req.GetWorkerPort())
	}
	return &raypb.ReturnWorkerLeaseReply{}, nil
}

func (s *nodeManagerService) CancelWorkerLease(ctx context.Context, req *raypb.CancelWorkerLeaseRequest) (*raypb.CancelWorkerLeaseReply, error) {
	r := s.r
	r.mu.Lock()
	l := r.dequeueLocked(string(req.GetLeaseId()))
	r.mu.Unlock()
	if l == nil {
		return &raypb.CancelWorkerLeaseReply{}, nil
	}
	l.finish(leaseResult{canceled: true, failureType: raypb.RequestWorkerLeaseReply_SCHEDULING_CANCELLED_INTENDED,
		message: "the lease was cancelled by its owner"})
	return &raypb.CancelWorkerLeaseReply{}, nil
}

func (s *nodeManagerService) PinObjectIDs(ctx context.Context, req *raypb.PinObjectIDsRequest) (*raypb.PinObjectIDsReply, error) {
	return &raypb.PinObjectIDsReply{Successes: s.r.pinObjects(req.GetOwnerAddress(), req.GetObjectIds(), req.GetGeneratorId())}, nil
}

func (s *nodeManagerService) FreeLocalObjects(ctx context.Context, req *raypb.FreeLocalObjectsRequest) (*raypb.FreeLocalObjectsReply, error) {
	s.r.freeObjects(req.GetObjectIds())
	return &raypb.FreeLocalObjectsReply{}, nil
}

func (s *nodeManagerService) GetWorkerFailureCause(ctx context.Context, req *raypb.GetWorkerFailureCauseRequest) (*raypb.GetWorkerFailureCauseReply, error) {
	r := s.r
	r.mu.Lock()
	f := r.failures[string(req.GetLeaseId())]
	r.mu.Unlock()
	if f == nil {
		return &raypb.GetWorkerFailureCauseReply{}, nil
	}
	return &raypb.GetWorkerFailureCauseReply{FailureCause: f.info, FailTaskImmediately: f.immediate}, nil
}

func (s *nodeManagerService) IsLocalWorkerDead(ctx context.Context, req *raypb.IsLocalWorkerDeadRequest) (*raypb.IsLocalWorkerDeadReply, error) {
	r := s.r
	id, ok := workerIDFrom(req.GetWorkerId())
	r.mu.Lock()
	_, alive := r.byID[id]
	r.mu.Unlock()
	return &raypb.IsLocalWorkerDeadReply{IsDead: !ok || !alive}, nil
}

func (s *nodeManagerService) ReportWorkerBacklog(ctx context.Context, req *raypb.ReportWorkerBacklogRequest) (*raypb.ReportWorkerBacklogReply, error) {
	return &raypb.ReportWorkerBacklogReply{}, nil
}

func (s *nodeManagerService) PrestartWorkers(ctx context.Context, req *raypb.PrestartWorkersRequest) (*raypb.PrestartWorkersReply, error) {
	r := s.r
	if s := req.GetRuntimeEnvInfo().GetSerializedRuntimeEnv(); s != "" && s != "{}" {
		return &raypb.PrestartWorkersReply{}, nil // runtime_env workers: not supported yet
	}
	n := int(req.GetNumWorkers())
	if limit := r.cfg.MaxStartingWorkers; n > limit {
		n = limit
	}
	r.mu.Lock()
	if !r.closed {
		r.prestartLocked(n, jobHexOf(req.GetJobId()))
	}
	r.mu.Unlock()
	return &raypb.PrestartWorkersReply{}, nil
}

func (s *nodeManagerService) resourcesData() *raypb.ResourcesData {
	r := s.r
	r.mu.Lock()
	defer r.mu.Unlock()
	load, byShape := r.resourceLoadLocked()
	idle := int64(0)
	if len(r.leases) == 0 && len(r.queue) == 0 {
		idle = time.Since(r.lastBusy).Milliseconds()
	}
	return &raypb.ResourcesData{
		NodeId:              r.cfg.NodeID,
		ResourcesAvailable:  r.res.Available(),
		ResourcesTotal:      r.res.Total(),
		ResourceLoad:        load,
		ResourceLoadByShape: byShape,
		NodeManagerAddress:  r.cfg.NodeIP,
		IdleDurationMs:      idle,
		Labels:              r.labels(),
	}
}

func (s *nodeManagerService) GetResourceLoad(ctx context.Context, _ *raypb.GetResourceLoadRequest) (*raypb.GetResourceLoadReply, error) {
	return &raypb.GetResourceLoadReply{Resources: s.resourcesData()}, nil
}

func (s *nodeManagerService) CancelLocalTask(ctx context.Context, req *raypb.CancelLocalTaskRequest) (*raypb.CancelLocalTaskReply, error) {
	r := s.r
	id, ok := workerIDFrom(req.GetExecutorWorkerId())
	r.mu.Lock()
	w := r.byID[id]
	r.mu.Unlock()
	if !ok || w == nil || w.port == 0 {
		return &raypb.CancelLocalTaskReply{}, nil
	}
	cw, err := r.workers.get(w.grpcAddr())
	if err != nil {
		return &raypb.CancelLocalTaskReply{}, nil
	}
	rep, err := cw.CancelTask(ctx, &raypb.CancelTaskRequest{IntendedTaskId: req.GetIntendedTaskId(), ForceKill: req.GetForceKill(),
		Recursive: req.GetRecursive(), CallerWorkerId: req.GetCallerWorkerId()})
	if err != nil {
		r.log.Debug("CancelTask failed", "worker_id", w.id.String(), "err", err)
		return &raypb.CancelLocalTaskReply{}, nil
	}
	return &raypb.CancelLocalTaskReply{RequestedTaskRunning: rep.GetRequestedTaskRunning(), AttemptSucceeded: rep.GetAttemptSucceeded()}, nil
}

func (s *nodeManagerService) KillLocalActor(ctx context.Context, req *raypb.KillLocalActorRequest) (*raypb.KillLocalActorReply, error) {
	r := s.r
	id, ok := workerIDFrom(req.GetWorkerId())
	r.mu.Lock()
	w := r.byID[id]
	r.mu.Unlock()
	if !ok || w == nil {
		return &raypb.KillLocalActorReply{}, nil // already gone
	}
	r.goTracked(func() {
		if cw, err := r.workers.get(w.grpcAddr()); err == nil {
			kctx, cancel := context.WithTimeout(r.ctx, r.cfg.KillGrace)
			_, err := cw.KillActor(kctx, &raypb.KillActorRequest{IntendedActorId: req.GetIntendedActorId(),
				ForceKill: req.GetForceKill(), DeathCause: req.GetDeathCause()})
			cancel()
			if err != nil {
				r.log.Debug("KillActor RPC ended", "worker_id", w.id.String(), "err", err)
			}
		}
		select {
		case <-w.gone:
		case <-time.After(r.cfg.KillGrace):
			r.mu.Lock()
			w.setExit(commonpb.WorkerExitType_INTENDED_SYSTEM_EXIT, "Worker exits because the actor is killed.")
			r.mu.Unlock()
			w.kill()
		case <-r.ctx.Done():
		}
	})
	return &raypb.KillLocalActorReply{}, nil
}

func (s *nodeManagerService) GetNodeStats(ctx context.Context, req *raypb.GetNodeStatsRequest) (*raypb.GetNodeStatsReply, error) {
	r := s.r
	stats := r.coreWorkerStats(ctx, req.GetIncludeMemoryInfo(), nil)
	n := 0
	for _, st := range stats {
		if st.GetWorkerType() == commonpb.WorkerType_WORKER {
			n++
		}
	}
	return &raypb.GetNodeStatsReply{CoreWorkersStats: stats, NumWorkers: uint32(n), StoreStats: s.storeStats()}, nil
}

// coreWorkerStats asks every registered worker and driver for its
// CoreWorkerStats (in parallel, 2 s each); the unreachable are left out.
func (r *Raylet) coreWorkerStats(ctx context.Context, memory bool, limit *int64) []*commonpb.CoreWorkerStats {
	type target struct {
		id   WorkerID
		addr string
		typ  int32
		pid  int
	}
	var targets []target
	r.mu.Lock()
	for _, w := range r.byID {
		if w.port > 0 && (w.state == wsIdle || w.state == wsLeased || w.state == wsDriver) {
			targets = append(targets, target{w.id, w.grpcAddr(), w.typ, w.pid})
		}
	}
	r.mu.Unlock()
	out := make([]*commonpb.CoreWorkerStats, len(targets))
	var wg sync.WaitGroup
	for i, tg := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cw, err := r.workers.get(tg.addr)
			if err != nil {
				return
			}
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			rep, err := cw.GetCoreWorkerStats(cctx, &raypb.GetCoreWorkerStatsRequest{IntendedWorkerId: tg.id[:], IncludeMemoryInfo: memory, Limit: limit})
			if err != nil {
				return
			}
			st := rep.GetCoreWorkerStats()
			if st == nil {
				st = &commonpb.CoreWorkerStats{}
			}
			st.WorkerId = tg.id[:]
			st.WorkerType = commonpb.WorkerType(tg.typ)
			st.Pid = uint32(tg.pid)
			out[i] = st
		}()
	}
	wg.Wait()
	kept := out[:0]
	for _, st := range out {
		if st != nil {
			kept = append(kept, st)
		}
	}
	return kept
}

func (s *nodeManagerService) storeStats() *raypb.ObjectStoreStats {
	u := s.r.cfg.Store.Usage()
	s.r.mu.Lock()
	pinned := int64(len(s.r.pins))
	s.r.mu.Unlock()
	return &raypb.ObjectStoreStats{ObjectStoreBytesUsed: u.Used, ObjectStoreBytesAvail: u.Capacity - u.Used,
		NumLocalObjects: u.Objects, NumObjectStorePrimaryCopies: pinned}
}

func (s *nodeManagerService) GetObjectsInfo(ctx context.Context, req *raypb.GetObjectsInfoRequest) (*raypb.GetObjectsInfoReply, error) {
	var limit *int64
	if req.Limit != nil {
		l := req.GetLimit()
		limit = &l
	}
	stats := s.r.coreWorkerStats(ctx, true, limit)
	var total int64
	for _, st := range stats {
		total += int64(len(st.GetObjectRefs()))
	}
	return &raypb.GetObjectsInfoReply{CoreWorkersStats: stats, Total: total}, nil
}

func (s *nodeManagerService) FormatGlobalMemoryInfo(ctx context.Context, req *raypb.FormatGlobalMemoryInfoRequest) (*raypb.FormatGlobalMemoryInfoReply, error) {
	st := s.storeStats()
	summary := fmt.Sprintf("Node %s: %d objects, %d bytes used in the object store, %d primary copies pinned.\n",
		s.r.cfg.NodeIP, st.GetNumLocalObjects(), st.GetObjectStoreBytesUsed(), st.GetNumObjectStorePrimaryCopies())
	return &raypb.FormatGlobalMemoryInfoReply{MemorySummary: summary, StoreStats: st}, nil
}

func (s *nodeManagerService) GlobalGC(ctx context.Context, _ *raypb.GlobalGCRequest) (*raypb.GlobalGCReply, error) {
	return &raypb.GlobalGCReply{}, nil
}

func (s *nodeManagerService) NotifyGCSRestart(ctx context.Context, _ *raypb.NotifyGCSRestartRequest) (*raypb.NotifyGCSRestartReply, error) {
	return &raypb.NotifyGCSRestartReply{}, nil
}

func (s *nodeManagerService) DrainRaylet(ctx context.Context, req *raypb.DrainRayletRequest) (*raypb.DrainRayletReply, error) {
	return &raypb.DrainRayletReply{IsAccepted: true}, nil
}

func (s *nodeManagerService) ShutdownRaylet(ctx context.Context, req *raypb.ShutdownRayletRequest) (*raypb.ShutdownRayletReply, error) {
	r := s.r
	if fn := r.cfg.OnShutdown; fn != nil {
		r.shutdownOnce.Do(func() { go fn(req.GetGraceful()) })
	}
	return &raypb.ShutdownRayletReply{}, nil
}

func (s *nodeManagerService) GetWorkerPIDs(ctx context.Context, _ *raypb.GetWorkerPIDsRequest) (*raypb.GetWorkerPIDsReply, error) {
	r := s.r
	r.mu.Lock()
	defer r.mu.Unlock()
	rep := &raypb.GetWorkerPIDsReply{}
	for _, w := range r.byID {
		if w.pid > 0 {
			rep.Pids = append(rep.Pids, int32(w.pid))
		}
	}
	return rep, nil
}

// CancelLeasesWithResourceShapes cancels queued leases whose resource
// request equals one of the shapes (the autoscaler gives up on them).
func (s *nodeManagerService) CancelLeasesWithResourceShapes(ctx context.Context, req *raypb.CancelLeasesWithResourceShapesRequest) (*raypb.CancelLeasesWithResourceShapesReply, error) {
	r := s.r
	shapes := map[string]bool{}
	for _, sh := range req.GetResourceShapes() {
		shapes[shapeString(positive(sh.GetResourceShape()))] = true
	}
	var canceled []*lease
	r.mu.Lock()
	kept := r.queue[:0]
	for _, l := range r.queue {
		if shapes[shapeString(l.req)] {
			canceled = append(canceled, l)
			continue
		}
		kept = append(kept, l)
	}
	r.queue = kept
	r.mu.Unlock()
	for _, l := range canceled {
		l.finish(leaseResult{canceled: true, failureType: raypb.RequestWorkerLeaseReply_SCHEDULING_CANCELLED_UNSCHEDULABLE,
			message: "The lease was cancelled because no node can satisfy its resource request."})
	}
	return &raypb.CancelLeasesWithResourceShapesReply{}, nil
}

// ReleaseUnusedActorWorkers kills actor workers the GCS does not list as
// in use (after a GCS restart).
func (s *nodeManagerService) ReleaseUnusedActorWorkers(ctx context.Context, req *raypb.ReleaseUnusedActorWorkersRequest) (*raypb.ReleaseUnusedActorWorkersReply, error) {
	r := s.r
	inUse := map[WorkerID]bool{}
	for _, b := range req.GetWorkerIdsInUse() {
		if id, ok := workerIDFrom(b); ok {
			inUse[id] = true
		}
	}
	var victims []*worker
	r.mu.Lock()
	for id, w := range r.byID {
		if w.lease != nil && w.lease.isActor && !inUse[id] {
			w.setExit(commonpb.WorkerExitType_INTENDED_SYSTEM_EXIT, "Worker exits because its actor is not in use after a GCS restart.")
			victims = append(victims, w)
		}
	}
	r.mu.Unlock()
	for _, w := range victims {
		w.kill()
	}
	return &raypb.ReleaseUnusedActorWorkersReply{}, nil
}

package nodemanager

import (
	"encoding/hex"
	"strings"
	"sync"
	"time"

	commonpb "github.com/gray-cluster/gray/proto/ray/commonpb"
	raypb "github.com/gray-cluster/gray/proto/ray/raypb"
)

// lease is one RequestWorkerLease: queued until its resources fit and a
// worker of its job is idle, then granted until ReturnWorkerLease (or, for
// an actor creation lease, until the actor's worker dies).
type lease struct {
	id        string // lease_id bytes as a string key
	spec      *commonpb.LeaseSpec
	req       map[string]float64 // allocated while granted
	placement map[string]float64 // must fit to be granted (actors)
	jobHex    string
	env       runtimeEnv // the worker must have been started with it
	owner     WorkerID   // caller_address.worker_id
	isActor   bool
	// elsewhere: label selector or hard node affinity exclude this node,
	// so the lease can never run here (reported as infeasible).
	elsewhere bool
	// noSpill: the lease was already spilled here (grant_or_reject): it
	// is granted here or not at all, never sent on again.
	noSpill  bool
	backlog  int64
	queuedAt time.Time

	worker *worker
	alloc  Allocation

	once  sync.Once
	reply chan leaseResult
}

type leaseResult struct {
	worker      *worker
	pid         int
	mapping     []*commonpb.ResourceMapEntry
	addr        *commonpb.Address
	retryAt     *commonpb.Address // spilled back: ask this raylet instead
	canceled    bool
	rejected    bool
	failureType raypb.RequestWorkerLeaseReply_SchedulingFailureType
	message     string
}

func (l *lease) finish(res leaseResult) {
	l.once.Do(func() { l.reply <- res })
}

// failureCause is what GetWorkerFailureCause reports for a lease whose
// worker died.
type failureCause struct {
	info      *commonpb.RayErrorInfo
	immediate bool
	at        time.Time
}

func newLease(spec *commonpb.LeaseSpec, backlog int64) *lease {
	l := &lease{
		id:       string(spec.GetLeaseId()),
		spec:     spec,
		req:      positive(spec.GetRequiredResources()),
		jobHex:   jobHexOf(spec.GetJobId()),
		isActor:  spec.GetType() == commonpb.TaskType_ACTOR_CREATION_TASK,
		backlog:  backlog,
		queuedAt: time.Now(),
		reply:    make(chan leaseResult, 1),
	}
	l.placement = union(l.req, positive(spec.GetRequiredPlacementResources()))
	if o, ok := workerIDFrom(spec.GetCallerAddress().GetWorkerId()); ok {
		l.owner = o
	}
	return l
}

func positive(m map[string]float64) map[string]float64 {
	out := make(map[string]float64, len(m))
	for k, v := range m {
		if v > 0 {
			out[k] = v
		}
	}
	return out
}

// union is the per-resource maximum of a and b.
func union(a, b map[string]float64) map[string]float64 {
	out := make(map[string]float64, len(a)+len(b))
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		if v > out[k] {
			out[k] = v
		}
	}
	return out
}

// schedule grants every queued lease whose resources fit and that has an
// idle worker of its job, and starts workers for the ones that fit but
// have none. Called with r.mu held.
func (r *Raylet) scheduleLocked() {
	defer func() {
		close(r.changed)
		r.changed = make(chan struct{})
	}()
	if r.closed {
		return
	}
	// Trial grants (leases that fit but wait for a worker) are made on a
	// private copy, so that later leases see the rest without taking
	// anything from a ledger another raylet shares.
	view := r.res.Snapshot()
	type poolKey struct{ job, env string }
	need := map[poolKey]int{}
	envs := map[string]runtimeEnv{}
	kept := r.queue[:0]
	for _, l := range r.queue {
		if l.elsewhere || !view.Fits(l.placement) {
			kept = append(kept, l)
			continue
		}
		w := r.idleWorkerLocked(l.jobHex, l.env.key, l.req["GPU"] > 0)
		if w == nil {
			// Count it as running so that later leases see the rest.
			view.Allocate(l.req)
			need[poolKey{l.jobHex, l.env.key}]++
			envs[l.env.key] = l.env
			kept = append(kept, l)
			continue
		}
		a, ok := r.res.Acquire(l.req)
		if !ok { // the other raylet took it since the snapshot
			kept = append(kept, l)
			continue
		}
		for name, parts := range a {
			view.Reacquire(name, parts) // the same instances in the view
		}
		r.grantLocked(l, w, a)
	}
	r.queue = kept
	for k, n := range need {
		have := 0
		for _, w := range r.byID {
			if (w.state == wsStarting || w.state == wsRegistered) && w.env.key == k.env && (w.jobHex == k.job || w.jobHex == nilJobHex) {
				have++
			}
		}
		if time.Now().Before(r.startAfter) {
			break // backing off after start-up failures
		}
		for ; have < n && r.starting < r.cfg.MaxStartingWorkers; have++ {
			r.startWorkerLocked(k.job, envs[k.env])
		}
	}
}

// idleWorkerLocked finds an idle worker bound to job, else an unbound one,
// among those started with the runtime env envKey. As in Ray, a worker
// that ran GPU work serves only GPU work and one that ran CPU work only
// CPU work (a CUDA context or CUDA_VISIBLE_DEVICES must not leak).
func (r *Raylet) idleWorkerLocked(job, envKey string, gpu bool) *worker {
	var unbound *worker
	for _, w := range r.byID {
		if w.state != wsIdle || w.exiting || w.env.key != envKey || (w.ranGPU != nil && *w.ranGPU != gpu) {
			continue
		}
		if w.jobHex == job {
			return w
		}
		if w.jobHex == nilJobHex && unbound == nil {
			unbound = w
		}
	}
	return unbound
}

func (r *Raylet) grantLocked(l *lease, w *worker, a Allocation) {
	if w.ranGPU == nil {
		gpu := l.req["GPU"] > 0
		w.ranGPU = &gpu
	}
	w.state = wsLeased
	w.lease = l
	w.jobHex = l.jobHex
	if l.isActor {
		w.actorID = append([]byte(nil), l.spec.GetActorId()...)
		w.detached = l.spec.GetIsDetachedActor()
	}
	l.worker = w
	l.alloc = a
	r.leases[l.id] = l
	r.touchBusyLocked()
	r.log.Debug("lease granted", "lease", hex.EncodeToString([]byte(l.id)), "worker_id", w.id.String(), "resources", l.req)
	l.finish(leaseResult{worker: w, pid: w.pid, mapping: mapping(a), addr: w.address(r.cfg.NodeID)})
}

// releaseLeaseLocked returns a granted lease's resources and detaches it
// from its worker.
func (r *Raylet) releaseLeaseLocked(l *lease) {
	if _, ok := r.leases[l.id]; !ok {
		return
	}
	delete(r.leases, l.id)
	r.touchBusyLocked()
	w := l.worker
	if w != nil && w.blocked {
		// Its CPU was already given back while blocked.
		if w.blockedCPU != nil {
			r.res.Reacquire("CPU", w.blockedCPU)
		}
		w.blocked, w.blockedCPU = false, nil
	}
	r.res.Release(l.alloc)
	if w != nil && w.lease == l {
		w.lease = nil
	}
}

// dequeueLocked removes a queued lease; false if it is not queued.
func (r *Raylet) dequeueLocked(id string) *lease {
	for i, l := range r.queue {
		if l.id == id {
			r.queue = append(r.queue[:i], r.queue[i+1:]...)
			return l
		}
	}
	return nil
}

// resourceLoadLocked summarises queued demand by shape.
func (r *Raylet) resourceLoadLocked() (map[string]float64, *raypb.ResourceLoad) {
	load := map[string]float64{}
	type shapeKey string
	shapes := map[shapeKey]*raypb.ResourceDemand{}
	var order []shapeKey
	for _, l := range r.queue {
		for k, v := range l.placement {
			load[k] += v
		}
		key := shapeKey(shapeString(l.placement))
		d, ok := shapes[key]
		if !ok {
			d = &raypb.ResourceDemand{Shape: l.placement}
			shapes[key] = d
			order = append(order, key)
		}
		if !l.elsewhere && r.res.Feasible(l.placement) {
			d.NumReadyRequestsQueued++
		} else {
			d.NumInfeasibleRequestsQueued++
		}
		if l.backlog > d.BacklogSize {
			d.BacklogSize = l.backlog
		}
	}
	rl := &raypb.ResourceLoad{}
	for _, k := range order {
		rl.ResourceDemands = append(rl.ResourceDemands, shapes[k])
	}
	return load, rl
}

func shapeString(m map[string]float64) string {
	var b strings.Builder
	for _, k := range sortedKeys(m) {
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(formatFloat(m[k]))
		b.WriteByte(';')
	}
	return b.String()
}

// excludesNode reports whether spec's label selector or hard node affinity
// rule this node out.
func excludesNode(spec *commonpb.LeaseSpec, nodeID []byte, labels map[string]string) bool {
	if na := spec.GetSchedulingStrategy().GetNodeAffinitySchedulingStrategy(); na != nil && !na.GetSoft() &&
		len(na.GetNodeId()) > 0 && string(na.GetNodeId()) != string(nodeID) {
		return true
	}
	for _, c := range spec.GetLabelSelector().GetLabelConstraints() {
		v, has := labels[c.GetLabelKey()]
		in := false
		for _, want := range c.GetLabelValues() {
			if has && v == want {
				in = true
			}
		}
		switch c.GetOperator() {
		case commonpb.LabelSelectorOperator_LABEL_OPERATOR_IN:
			if !in {
				return true
			}
		case commonpb.LabelSelectorOperator_LABEL_OPERATOR_NOT_IN:
			if in {
				return true
			}
		}
	}
	return false
}

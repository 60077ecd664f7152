// Package raylet is the provider daemon's core: it accepts tasks, waits for
// their arguments, grants resources, runs them on pooled Python workers and
// stores their results in the node's object store.
package raylet

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/objectstore"
	"github.com/gray-cluster/gray/pyenv"
	"github.com/gray-cluster/gray/rayerr"
	"github.com/gray-cluster/gray/resledger"
	"github.com/gray-cluster/gray/sandbox"
	"github.com/gray-cluster/gray/taskspec"
	"github.com/gray-cluster/gray/worker"
)

// Sentinel errors.
var (
	ErrClosed      = errors.New("raylet closed")
	ErrUnknownTask = errors.New("unknown task")
)

// LogSink receives worker output lines attributed to a job.
type LogSink func(job ids.JobID, line string, stderr bool)

// Config configures a raylet.
type Config struct {
	NodeID    ids.NodeID
	NodeIP    string
	Resources map[string]float64
	// Ledger, when set, is the node's resource ledger shared with another
	// raylet offering the same machine (the head's native raylet): neither
	// grants what the other holds. Nil: a private one from Resources.
	Ledger *resledger.Ledger
	Store  Objects
	// Python is the interpreter that runs workers (needs ray installed).
	Python string
	// ClientAddress is the Ray Client front end workers connect back to.
	ClientAddress string
	// SessionDir holds sockets, the worker runtime and unpacked packages.
	SessionDir string
	// PrestartWorkers is how many default workers to keep warm.
	PrestartWorkers int
	// IdleWorkerTimeout is how long a surplus idle worker lives (default 2m).
	IdleWorkerTimeout time.Duration
	Logs              LogSink
	Logger            *slog.Logger
	// OnActorDead is told when an actor is dead for good.
	OnActorDead func(ids.ActorID)
	// OnActorRef is told when a worker takes (retain) or drops a handle on an
	// actor; OnHolderGone when a worker exits with whatever it held.
	OnActorRef   func(id ids.ActorID, holder string, retain bool)
	OnHolderGone func(holder string)
	// OnActorReady is told when an actor's constructor first succeeded,
	// with the pickled method table its worker reported.
	OnActorReady func(ids.ActorID, []byte)
	// OnWorkerJob is told which job a worker starts working for, so a head
	// elsewhere can attribute the worker's own Ray calls.
	OnWorkerJob func(workerID string, job ids.JobID)
	// OnLease and OnLeaseEnd report every grant of resources to a task
	// attempt or an actor incarnation (lease ids are unique per attempt),
	// for metering. Placement group reservations are not leases: the work
	// that runs in them is.
	OnLease    func(lease string, job ids.JobID, resources map[string]float64)
	OnLeaseEnd func(lease string)
	// PlacementGroups answers workers' placement group operations (nil:
	// they fail).
	PlacementGroups PlacementGroups
	// WorkerKey signs the credential each worker presents to the Ray
	// Client front end with its nested calls (nil: workers get none).
	WorkerKey []byte
	// Sandbox, when set, runs every worker in a bubblewrap sandbox with
	// cgroup limits from its work's resources (nil: plain processes).
	Sandbox *SandboxConfig
}

// Raylet schedules tasks on one node.
type Raylet struct {
	cfg   Config
	log   *slog.Logger
	store Objects
	pool  *pool
	// sandbox starts workers when they are sandboxed (nil: off).
	sandbox *sandbox.Launcher
	// pyenvs builds runtime_env pip/uv environments (see pyenv.go).
	pyenvs *pyenv.Builder
	ctx    context.Context
	cancel context.CancelFunc

	// res is this raylet's handle on the node's resource ledger.
	res *resledger.Member

	mu     sync.Mutex
	queue  dispatchQueue
	tasks  map[ids.TaskID]*task
	actors map[ids.ActorID]*actor
	pgs    map[string]*reservation
	closed bool
	wake   chan struct{}
	// names are the resources this raylet reports: its own and those the
	// GPU offer named (a shared ledger also holds the other raylet's).
	names map[string]bool
}

// New builds a raylet; Start launches it.
func New(cfg Config) (*Raylet, error) {
	if cfg.Store == nil {
		return nil, fmt.Errorf("raylet: no object store")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Logs == nil {
		cfg.Logs = func(ids.JobID, string, bool) {}
	}
	ledger := cfg.Ledger
	if ledger == nil {
		ledger = resledger.New(cfg.Resources, nil)
	}
	return &Raylet{
		cfg:   cfg,
		log:   cfg.Logger.With("component", "raylet"),
		store: cfg.Store,
		res:   ledger.Join("ray"),
		names: namesOf(cfg.Resources),
		tasks: map[ids.TaskID]*task{},
		wake:  make(chan struct{}, 1),
	}, nil
}

// Start writes the worker runtime, prestarts workers and runs the dispatcher.
func (r *Raylet) Start(ctx context.Context) error {
	r.ctx, r.cancel = context.WithCancel(ctx)
	if err := os.MkdirAll(r.cfg.SessionDir, 0o755); err != nil {
		return fmt.Errorf("raylet: session dir: %w", err)
	}
	script, err := worker.WriteScript(filepath.Join(r.cfg.SessionDir, "runtime"))
	if err != nil {
		return err
	}
	if err := r.startSandbox(r.ctx); err != nil {
		return err
	}
	if r.pyenvs, err = pyenv.NewBuilder(filepath.Join(r.cfg.SessionDir, "runtime_resources", "pip"), r.cfg.Python, r.log); err != nil {
		return err
	}
	p, err := newPool(r, script)
	if err != nil {
		return err
	}
	r.pool = p
	go r.dispatchLoop()
	p.prestart(r.cfg.PrestartWorkers)
	return nil
}

// Close stops workers and the dispatcher.
func (r *Raylet) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	r.mu.Unlock()
	if r.cancel != nil {
		r.cancel()
	}
	if r.pool != nil {
		r.pool.close()
	}
	if r.sandbox != nil {
		_ = r.sandbox.Close()
	}
	return nil
}

// NodeID is this raylet's id.
func (r *Raylet) NodeID() ids.NodeID { return r.cfg.NodeID }

// Total returns the node's resources (without withdrawn GPUs).
func (r *Raylet) Total() map[string]float64 { return r.nodeView(r.res.Total()) }

// Available returns the node's resources not granted to work, by this
// raylet or another sharing its ledger.
func (r *Raylet) Available() map[string]float64 { return r.nodeView(r.res.Available()) }

// nodeView keeps the resources this raylet offers: a shared ledger also
// holds the native raylet's own (node:<ip>, its placement groups'
// CPU_group_...), which ray:// work never names; what native work takes
// of the plain resources is counted all the same.
func (r *Raylet) nodeView(m map[string]float64) map[string]float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k := range m {
		if !r.names[k] {
			delete(m, k)
		}
	}
	return m
}

func namesOf(m map[string]float64) map[string]bool {
	out := make(map[string]bool, len(m))
	for k := range m {
		out[k] = true
	}
	return out
}

// Submit accepts a task. Its return objects must already exist in the store.
func (r *Raylet) Submit(spec *taskspec.TaskSpec) error {
	t := &task{spec: spec, stop: make(chan struct{})}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return ErrClosed
	}
	r.tasks[spec.TaskID] = t
	r.mu.Unlock()
	r.store.Pin(spec.Pins)
	go r.waitDeps(t)
	return nil
}

func (r *Raylet) waitDeps(t *task) {
	for _, d := range t.spec.Deps {
		ch, err := r.store.ReadyChan(d)
		if err != nil {
			r.finishWithError(t, r.objectLost(d))
			return
		}
		select {
		case <-ch:
		case <-t.stop:
			return
		case <-r.ctx.Done():
			return
		}
		obj, err := r.store.Get(d)
		if err != nil || obj == nil {
			r.finishWithError(t, r.objectLost(d))
			return
		}
		if obj.IsError {
			// A failed argument fails the task with the same error, as in Ray.
			r.finishWithError(t, obj.Chunks)
			return
		}
	}
	r.mu.Lock()
	if t.state != stateWaitingDeps || t.cancelled {
		r.mu.Unlock()
		return
	}
	t.state = stateQueued
	r.queue.push(t)
	r.mu.Unlock()
	r.kick()
}

func (r *Raylet) objectLost(id ids.ObjectID) [][]byte {
	return [][]byte{lostError(id)}
}

func (r *Raylet) kick() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *Raylet) dispatchLoop() {
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-r.wake:
		case <-r.res.Changed(): // another raylet took or freed resources
		}
		r.dispatch()
	}
}

// dispatch grants resources to queued tasks in order, skipping tasks that
// do not fit so that smaller ones behind them can run.
func (r *Raylet) dispatch() {
	r.mu.Lock()
	var launch []*task
	r.queue.pass(func(t *task) bool {
		from, a := r.grant(t.spec)
		if from == nil {
			return false
		}
		t.grantedFrom, t.alloc = from, a
		t.gpuIDs = a.IDs("GPU")
		t.state = stateRunning
		launch = append(launch, t)
		return true
	})
	r.mu.Unlock()
	for _, t := range launch {
		r.leaseStart(t)
		if t.onGrant != nil {
			t.onGrant()
			continue
		}
		go r.run(t)
	}
}

func (r *Raylet) run(t *task) {
	env := withGPUs(t.spec.Env, t.gpuIDs)
	if err := r.setupEnv(t.spec.JobID, env); err != nil {
		r.releaseResources(t)
		r.finishWithError(t, r.errorPickle(rayerr.RuntimeEnvSetup(err.Error())))
		return
	}
	w, err := r.pool.acquire(r.ctx, t.spec.JobID, env, t.gpuIDs)
	if err != nil {
		r.releaseResources(t)
		r.finishWithError(t, r.errorPickle(rayerr.SystemError("could not start a worker: "+err.Error())))
		return
	}
	r.mu.Lock()
	if t.cancelled {
		r.mu.Unlock()
		r.pool.release(w)
		r.releaseResources(t)
		r.finishWithError(t, r.errorPickle(rayerr.TaskCancelled()))
		return
	}
	t.worker = w
	r.mu.Unlock()
	w.limit(t.spec.Resources)
	res := w.execute(t, r.store)
	r.mu.Lock()
	t.worker = nil
	cancelled := t.cancelled
	r.mu.Unlock()
	gpuWorker := env.EnvVars[cudaVisible] != ""
	// The worker goes back to the pool before the task's resources do: the
	// next task, dispatched as soon as they are free, must find it idle
	// rather than start a new Python worker (a second of CPU) for nothing.
	switch {
	case res.err == nil && res.errBlob == nil:
		r.finishOK(t, res)
		ackContained(w, t.spec.TaskID, res)
		r.releaseWorker(w, gpuWorker)
		r.releaseResources(t)
	case res.err == nil: // the task raised
		r.releaseWorker(w, gpuWorker)
		r.releaseResources(t)
		if res.user && t.spec.RetryExceptions && t.attempt < t.spec.MaxRetries && !cancelled {
			r.retry(t)
			return
		}
		r.finishWithError(t, [][]byte{res.errBlob})
	default: // the worker died
		r.pool.discard(w)
		r.releaseResources(t)
		if cancelled {
			r.finishWithError(t, r.errorPickle(rayerr.TaskCancelled()))
			return
		}
		oom, limits := w.outOfMemory()
		if t.attempt < t.spec.MaxRetries || t.spec.MaxRetries < 0 {
			r.log.Info("worker died; retrying task", "task", t.spec.Name, "attempt", t.attempt+1, "err", res.err, "out_of_memory", oom)
			r.retry(t)
			return
		}
		if oom {
			r.finishWithError(t, r.oomError(t, limits))
			return
		}
		r.finishWithError(t, r.errorPickle(rayerr.WorkerCrashed()))
	}
}

func (r *Raylet) retry(t *task) {
	r.mu.Lock()
	t.attempt++
	t.state = stateQueued
	r.queue.push(t)
	r.mu.Unlock()
	r.kick()
}

// releaseResources gives back what a task (or an actor's or placement
// group's grant) holds: its resources and its GPU ids.
func (r *Raylet) releaseResources(t *task) {
	r.mu.Lock()
	if t.grantedFrom != nil && r.cfg.OnLeaseEnd != nil && t.spec.TaskID != (ids.TaskID{}) {
		defer r.cfg.OnLeaseEnd(leaseID(t))
	}
	r.releaseTo(t.spec, t.grantedFrom, t.alloc)
	t.grantedFrom, t.alloc = nil, nil
	t.gpuIDs = nil
	r.mu.Unlock()
	r.kick()
}

// errorPickle is a task's result chunks that raise e on the client.
func (r *Raylet) errorPickle(e rayerr.Exception) [][]byte { return [][]byte{e.Pickle()} }

func (r *Raylet) finishOK(t *task, res result) {
	for i, id := range t.spec.ReturnIDs() {
		var contained []ids.ObjectID
		if i < len(res.contained) {
			contained = res.contained[i]
		}
		var data []byte
		if i < len(res.values) {
			data = res.values[i]
		}
		r.store.Seal(&objectstore.Object{ID: id, Chunks: [][]byte{data}, Size: int64(len(data)), Contained: contained})
	}
	r.done(t)
}

func (r *Raylet) finishWithError(t *task, errChunks [][]byte) {
	size := 0
	for _, c := range errChunks {
		size += len(c)
	}
	for _, id := range t.spec.ReturnIDs() {
		r.store.Seal(&objectstore.Object{ID: id, Chunks: errChunks, Size: int64(size), IsError: true})
	}
	r.done(t)
}

func (r *Raylet) done(t *task) {
	r.mu.Lock()
	if t.state == stateDone {
		r.mu.Unlock()
		return
	}
	t.state = stateDone
	delete(r.tasks, t.spec.TaskID)
	r.mu.Unlock()
	r.store.Unpin(t.spec.Pins)
}

// Cancel cancels a task that is waiting, queued or running. A running task
// gets KeyboardInterrupt (or its worker is killed when force is set).
func (r *Raylet) Cancel(id ids.TaskID, force bool) error {
	r.mu.Lock()
	t, ok := r.tasks[id]
	if !ok {
		r.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrUnknownTask, id.Hex())
	}
	t.cancelled = true
	t.force = force
	state, w := t.state, t.worker
	if state == stateWaitingDeps {
		t.state = stateQueued // stop the dep waiter from enqueueing
		close(t.stop)
	}
	r.mu.Unlock()
	switch {
	case state == stateWaitingDeps || state == stateQueued:
		r.finishWithError(t, r.errorPickle(rayerr.TaskCancelled()))
	case state == stateRunning && w != nil:
		if force {
			w.kill()
		} else {
			w.cancel(id)
		}
	}
	return nil
}

func (r *Raylet) workerJob(workerID string, job ids.JobID) {
	if r.cfg.OnWorkerJob != nil {
		r.cfg.OnWorkerJob(workerID, job)
	}
}

// WorkerJob reports the job of the task a worker runs (or ran last).
func (r *Raylet) WorkerJob(workerID string) (ids.JobID, bool) {
	if r.pool == nil {
		return ids.JobID{}, false
	}
	r.pool.mu.Lock()
	w := r.pool.all[workerID]
	r.pool.mu.Unlock()
	if w == nil {
		return ids.JobID{}, false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.job, w.taskName != ""
}

// WorkerBlocked gives back the CPU of the task running on a worker while
// that task waits in ray.get/ray.wait, as Ray does, so that nested tasks can
// run. The returned function takes it again.
func (r *Raylet) WorkerBlocked(workerID string) func() {
	r.mu.Lock()
	var t *task
	for _, x := range r.tasks {
		if x.worker != nil && x.worker.id == workerID && x.state == stateRunning {
			t = x
			break
		}
	}
	if t == nil || t.grantedFrom == nil || len(t.alloc["CPU"]) == 0 {
		r.mu.Unlock()
		return func() {}
	}
	from, spec := t.grantedFrom, t.spec
	parts := from.ReleaseOnly(t.alloc, "CPU")
	r.mu.Unlock()
	r.kick()
	return func() {
		r.mu.Lock()
		r.poolFor(spec, from).Reacquire("CPU", parts)
		r.mu.Unlock()
	}
}

// SetClientAddress sets the front end address workers connect back to
// (known only once the front end has bound its port).
func (r *Raylet) SetClientAddress(addr string) { r.cfg.ClientAddress = addr }

// ackContained tells a worker its result (holding refs) is stored, so it may
// drop its own references to them.
func ackContained(w *workerProc, id ids.TaskID, res result) {
	for _, c := range res.contained {
		if len(c) > 0 {
			_ = w.send(map[string]any{"t": "ack", "task_id": id.Hex()}, nil)
			return
		}
	}
}

// cudaVisible is the variable that limits a process to its assigned GPUs.
const cudaVisible = "CUDA_VISIBLE_DEVICES"

// withGPUs returns env with CUDA_VISIBLE_DEVICES set to the assigned ids.
func withGPUs(env taskspec.RuntimeEnv, gpuIDs []int) taskspec.RuntimeEnv {
	if len(gpuIDs) == 0 {
		return env
	}
	out := env
	out.EnvVars = map[string]string{}
	for k, v := range env.EnvVars {
		out.EnvVars[k] = v
	}
	parts := make([]string, len(gpuIDs))
	for i, id := range gpuIDs {
		parts[i] = strconv.Itoa(id)
	}
	out.EnvVars[cudaVisible] = strings.Join(parts, ",")
	return out
}

// releaseWorker pools a worker, except one that ran on GPUs: like Ray's
// max_calls=1 default for GPU tasks, it exits so the GPU is freed and the
// next task gets a process with its own CUDA_VISIBLE_DEVICES.
func (r *Raylet) releaseWorker(w *workerProc, gpuWorker bool) {
	if gpuWorker {
		r.pool.discard(w)
		return
	}
	r.pool.release(w)
}

// handleRefs applies a worker's reference changes, in the order it made them.
func (r *Raylet) handleRefs(w *workerProc, f *frame) {
	apply := func(key string, retain bool) {
		list, _ := f.Header[key].([]any)
		for _, x := range list {
			s, _ := x.(string)
			raw, err := hex.DecodeString(s)
			if err != nil {
				continue
			}
			switch len(raw) {
			case ids.ObjectIDSize:
				oid, _ := ids.ObjectFromBytes(raw)
				if retain {
					r.store.HoldOnce(oid, w.Holder())
				} else {
					r.store.Release(oid, w.Holder())
				}
			case ids.ActorIDSize:
				if r.cfg.OnActorRef != nil {
					aid, _ := ids.ActorFromBytes(raw)
					r.cfg.OnActorRef(aid, w.Holder(), retain)
				}
			}
		}
	}
	apply("retain", true)
	apply("release", false)
}

package raylet

import (
	"errors"
	"fmt"
	"sync"

	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/objectstore"
	"github.com/gray-cluster/gray/rayerr"
	"github.com/gray-cluster/gray/taskspec"
)

// ErrUnknownActor is returned for calls to an actor this raylet never hosted.
var ErrUnknownActor = errors.New("unknown actor")

type actor struct {
	spec *taskspec.ActorSpec

	mu        sync.Mutex
	cond      *sync.Cond
	state     taskspec.ActorState
	worker    *workerProc
	restarts  int
	queue     []*taskspec.ActorCall
	inflight  map[ids.TaskID]*taskspec.ActorCall
	deathErr  [][]byte
	noRestart bool
	holding   bool // resources granted
	gate      *task
}

// CreateActor schedules an actor: it waits for its arguments and resources,
// then starts a dedicated worker that runs the constructor.
func (r *Raylet) CreateActor(spec *taskspec.ActorSpec) error {
	a := &actor{spec: spec, state: taskspec.ActorPending, inflight: map[ids.TaskID]*taskspec.ActorCall{}}
	a.cond = sync.NewCond(&a.mu)
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return ErrClosed
	}
	if r.actors == nil {
		r.actors = map[ids.ActorID]*actor{}
	}
	r.actors[spec.ActorID] = a
	r.mu.Unlock()
	r.store.Pin(spec.Pins)
	go r.actorLifecycle(a)
	go r.actorSender(a)
	return nil
}

// ActorStateOf reports an actor's state.
func (r *Raylet) ActorStateOf(id ids.ActorID) (taskspec.ActorState, bool) {
	r.mu.Lock()
	a := r.actors[id]
	r.mu.Unlock()
	if a == nil {
		return "", false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.state, true
}

// SubmitActorTask queues a method call; its return objects must exist.
func (r *Raylet) SubmitActorTask(c *taskspec.ActorCall) error {
	r.mu.Lock()
	a := r.actors[c.ActorID]
	r.mu.Unlock()
	if a == nil {
		return fmt.Errorf("%w: %s", ErrUnknownActor, c.ActorID.Hex())
	}
	r.store.Pin(c.Pins)
	a.mu.Lock()
	if a.state == taskspec.ActorDead {
		errb := a.deathErr
		a.mu.Unlock()
		r.finishCall(c, errb)
		return nil
	}
	a.queue = append(a.queue, c)
	a.cond.Broadcast()
	a.mu.Unlock()
	return nil
}

// KillActor kills the actor's worker; with noRestart the actor is dead for
// good, otherwise it restarts if max_restarts allows.
func (r *Raylet) KillActor(id ids.ActorID, noRestart bool) error {
	r.mu.Lock()
	a := r.actors[id]
	r.mu.Unlock()
	if a == nil {
		return fmt.Errorf("%w: %s", ErrUnknownActor, id.Hex())
	}
	a.mu.Lock()
	if noRestart {
		a.noRestart = true
	}
	w, state := a.worker, a.state
	a.mu.Unlock()
	if w != nil {
		w.kill()
	} else if state == taskspec.ActorPending {
		r.actorDied(a, r.errorPickle(rayerr.ActorDied()))
	}
	return nil
}

// actorLifecycle waits for arguments and resources, then (re)starts the
// actor's worker each time it dies while restarts remain.
func (r *Raylet) actorLifecycle(a *actor) {
	s := a.spec
	for _, d := range s.Deps {
		obj, err := r.store.Wait(r.ctx, d)
		if err != nil || obj == nil {
			r.actorDied(a, [][]byte{lostError(d)})
			return
		}
		if obj.IsError {
			r.actorDied(a, obj.Chunks)
			return
		}
	}
	granted := make(chan struct{})
	gate := &task{spec: &taskspec.TaskSpec{TaskID: ids.NewTaskID(s.ActorID), JobID: s.JobID, Resources: s.Resources,
		PlacementGroup: s.PlacementGroup, BundleIndex: s.BundleIndex}, state: stateQueued, onGrant: func() { close(granted) },
		lease: "actor-" + s.ActorID.Hex() + ":" + ids.NewTaskID(s.ActorID).Hex()[:16]}
	a.mu.Lock()
	a.gate = gate
	a.mu.Unlock()
	r.mu.Lock()
	r.queue.push(gate)
	r.mu.Unlock()
	r.kick()
	select {
	case <-granted:
	case <-r.ctx.Done():
		return
	}
	a.mu.Lock()
	a.holding = true
	dead := a.state == taskspec.ActorDead
	a.mu.Unlock()
	if dead {
		r.releaseActorResources(a)
		return
	}
	for {
		w, info, errb := r.startActorWorker(a)
		if errb != nil {
			if w != nil {
				r.pool.discard(w)
			}
			r.actorDied(a, errb)
			return
		}
		a.mu.Lock()
		if a.state == taskspec.ActorDead { // killed while starting
			a.mu.Unlock()
			w.kill()
			return
		}
		a.worker = w
		a.state = taskspec.ActorAlive
		first := a.restarts == 0
		a.cond.Broadcast()
		a.mu.Unlock()
		if first && r.cfg.OnActorReady != nil {
			r.cfg.OnActorReady(s.ActorID, info)
		}
		r.actorReceive(a, w)
		// The worker died.
		a.mu.Lock()
		a.worker = nil
		canRestart := !a.noRestart && (s.MaxRestarts < 0 || a.restarts < s.MaxRestarts)
		var failed []*taskspec.ActorCall
		for id, c := range a.inflight {
			delete(a.inflight, id)
			if canRestart && (s.MaxTaskRetries < 0 || c.Attempts < s.MaxTaskRetries) {
				c.Attempts++
				a.queue = append([]*taskspec.ActorCall{c}, a.queue...)
				continue
			}
			failed = append(failed, c)
		}
		if canRestart {
			a.restarts++
			a.state = taskspec.ActorRestarting
		}
		a.mu.Unlock()
		died := r.errorPickle(rayerr.ActorDied())
		for _, c := range failed {
			r.finishCall(c, died)
		}
		if !canRestart {
			r.actorDied(a, died)
			return
		}
		r.log.Info("restarting actor", "actor", s.ActorID.Hex(), "class", s.Name, "restart", a.restarts)
	}
}

// startActorWorker spawns a dedicated worker and runs the constructor; it
// returns the class info the worker reports (pickled method table).
func (r *Raylet) startActorWorker(a *actor) (*workerProc, []byte, [][]byte) {
	s := a.spec
	a.mu.Lock()
	env := s.Env
	var gpus []int
	if a.gate != nil {
		env = withGPUs(s.Env, a.gate.gpuIDs)
		gpus = a.gate.gpuIDs
	}
	a.mu.Unlock()
	if err := r.setupEnv(s.JobID, env); err != nil {
		return nil, nil, r.errorPickle(rayerr.RuntimeEnvSetup(err.Error()))
	}
	w, err := r.pool.spawnDedicated(s.JobID, env, gpus)
	if err == nil {
		err = r.pool.waitReady(r.ctx, w)
	}
	if err == nil {
		w.limit(s.Resources)
	}
	if err != nil {
		return w, nil, r.errorPickle(rayerr.ActorDied())
	}
	cls, err := r.store.Get(s.ClassID)
	if err != nil || cls == nil {
		return w, nil, [][]byte{lostError(s.ClassID)}
	}
	w.mu.Lock()
	w.job, w.taskName = s.JobID, s.Name
	w.mu.Unlock()
	r.workerJob(w.id, s.JobID)
	createID := ids.NewTaskID(s.ActorID)
	header := map[string]any{
		"t": "actor_create", "task_id": createID.Hex(), "actor_id": s.ActorID.Hex(), "name": s.Name,
		"fn": s.ClassID.Hex(), "fn_blob": 0, "args_blob": 1, "self_refs": s.SelfRefs,
		"max_concurrency": s.MaxConcurrency, "baseline_blob": -1, "concurrency_groups": s.ConcurrencyGroups,
	}
	blobs := []blob{cls.Chunks, s.Args}
	if len(s.Baseline) > 0 {
		header["baseline_blob"] = len(blobs)
		blobs = append(blobs, blob{s.Baseline})
	}
	deps, blobs, errb := depBlobs(r.store, s.Deps, blobs)
	if errb != nil {
		return w, nil, [][]byte{errb}
	}
	header["deps"] = deps
	if err := w.send(header, blobs); err != nil {
		return w, nil, r.errorPickle(rayerr.ActorDied())
	}
	select {
	case f := <-w.frames:
		res := decodeResult(f)
		if res.err != nil {
			return w, nil, r.errorPickle(rayerr.ActorDied())
		}
		if res.errBlob != nil {
			return w, nil, [][]byte{res.errBlob}
		}
		var info []byte
		if len(res.values) > 0 {
			info = res.values[0]
		}
		return w, info, nil
	case <-w.dead:
		return w, nil, r.errorPickle(rayerr.ActorDied())
	}
}

// depBlobs appends the values of deps to blobs and maps their ids to indexes.
func depBlobs(store Objects, deps []ids.ObjectID, blobs []blob) (map[string]int, []blob, []byte) {
	out := map[string]int{}
	for _, d := range deps {
		if _, ok := out[d.Hex()]; ok {
			continue
		}
		obj, err := store.Get(d)
		if err != nil || obj == nil {
			return nil, nil, lostError(d)
		}
		out[d.Hex()] = len(blobs)
		blobs = append(blobs, obj.Chunks)
	}
	return out, blobs, nil
}

// actorReceive routes the worker's results until it dies.
func (r *Raylet) actorReceive(a *actor, w *workerProc) {
	for {
		select {
		case f := <-w.frames:
			id := f.str("task_id")
			a.mu.Lock()
			var c *taskspec.ActorCall
			for tid, x := range a.inflight {
				if tid.Hex() == id {
					c = x
					delete(a.inflight, tid)
					break
				}
			}
			a.mu.Unlock()
			if c == nil {
				continue
			}
			res := decodeResult(f)
			if res.errBlob != nil {
				r.finishCall(c, [][]byte{res.errBlob})
				continue
			}
			for i, oid := range c.ReturnIDs() {
				var data []byte
				var contained []ids.ObjectID
				if i < len(res.values) {
					data = res.values[i]
				}
				if i < len(res.contained) {
					contained = res.contained[i]
				}
				r.store.Seal(&objectstore.Object{ID: oid, Chunks: [][]byte{data}, Size: int64(len(data)), Contained: contained})
			}
			ackContained(w, c.TaskID, res)
			r.store.Unpin(c.Pins)
		case <-w.dead:
			return
		case <-r.ctx.Done():
			return
		}
	}
}

// actorSender sends queued calls in submission order, each once its
// arguments are ready and the actor is alive.
func (r *Raylet) actorSender(a *actor) {
	for {
		a.mu.Lock()
		for len(a.queue) == 0 && a.state != taskspec.ActorDead {
			a.cond.Wait()
		}
		if a.state == taskspec.ActorDead {
			a.mu.Unlock()
			return
		}
		c := a.queue[0]
		a.mu.Unlock()
		depErr := r.waitCallDeps(c)
		a.mu.Lock()
		for a.state != taskspec.ActorAlive && a.state != taskspec.ActorDead {
			a.cond.Wait()
		}
		if a.state == taskspec.ActorDead {
			a.mu.Unlock()
			return // actorDied fails what is queued
		}
		if len(a.queue) == 0 || a.queue[0] != c {
			a.mu.Unlock()
			continue
		}
		a.queue = a.queue[1:]
		if depErr != nil {
			a.mu.Unlock()
			r.finishCall(c, depErr)
			continue
		}
		w := a.worker
		a.inflight[c.TaskID] = c
		a.mu.Unlock()
		header := map[string]any{
			"t": "call", "task_id": c.TaskID.Hex(), "method": c.Method, "num_returns": c.NumReturns, "args_blob": 0,
			"concurrency_group": c.ConcurrencyGroup,
		}
		deps, blobs, errb := depBlobs(r.store, c.Deps, []blob{c.Args})
		if errb != nil {
			a.mu.Lock()
			delete(a.inflight, c.TaskID)
			a.mu.Unlock()
			r.finishCall(c, [][]byte{errb})
			continue
		}
		header["deps"] = deps
		if err := w.send(header, blobs); err != nil {
			r.log.Debug("send to actor failed; the restart logic takes over", "err", err)
		}
	}
}

func (r *Raylet) waitCallDeps(c *taskspec.ActorCall) [][]byte {
	for _, d := range c.Deps {
		obj, err := r.store.Wait(r.ctx, d)
		if err != nil || obj == nil {
			return [][]byte{lostError(d)}
		}
		if obj.IsError {
			return obj.Chunks
		}
	}
	return nil
}

// actorDied marks the actor dead and fails everything still waiting.
func (r *Raylet) actorDied(a *actor, errb [][]byte) {
	a.mu.Lock()
	if a.state == taskspec.ActorDead {
		a.mu.Unlock()
		return
	}
	a.state = taskspec.ActorDead
	a.deathErr = errb
	pending := append([]*taskspec.ActorCall(nil), a.queue...)
	a.queue = nil
	for id, c := range a.inflight {
		pending = append(pending, c)
		delete(a.inflight, id)
	}
	w := a.worker
	a.cond.Broadcast()
	a.mu.Unlock()
	if w != nil {
		w.kill()
	}
	for _, c := range pending {
		r.finishCall(c, errb)
	}
	r.releaseActorResources(a)
	r.store.Unpin(a.spec.Pins)
	if r.cfg.OnActorDead != nil {
		r.cfg.OnActorDead(a.spec.ActorID)
	}
	r.log.Debug("actor dead", "actor", a.spec.ActorID.Hex(), "class", a.spec.Name)
}

func (r *Raylet) releaseActorResources(a *actor) {
	a.mu.Lock()
	holding, gate := a.holding, a.gate
	a.holding = false
	a.mu.Unlock()
	if holding && gate != nil {
		r.releaseResources(gate)
	}
}

func (r *Raylet) finishCall(c *taskspec.ActorCall, errb [][]byte) {
	size := 0
	for _, b := range errb {
		size += len(b)
	}
	for _, id := range c.ReturnIDs() {
		r.store.Seal(&objectstore.Object{ID: id, Chunks: errb, Size: int64(size), IsError: true})
	}
	r.store.Unpin(c.Pins)
}

package nodeserver

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/gray-cluster/gray/cluster"
	"github.com/gray-cluster/gray/gpu"
	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/internal/nodewire"
	"github.com/gray-cluster/gray/objectstore"
	pb "github.com/gray-cluster/gray/proto/nodepb"
	"github.com/gray-cluster/gray/raylet"
	"github.com/gray-cluster/gray/taskspec"
)

// ErrNodeGone is returned for work sent to a provider whose control channel
// is down.
var ErrNodeGone = errors.New("nodeserver: provider not connected")

// remote is a provider's raylet as the cluster drives it. It pins on the
// head what the provider's work needs, remembers that work until its results
// arrive (so a dead provider's work can be recovered), and sends commands
// down the provider's control channel in order.
type remote struct {
	id    ids.NodeID
	store *objectstore.Store

	mu        sync.Mutex
	out       *sendQueue // nil while disconnected
	total     map[string]float64
	available map[string]float64
	lastHeard time.Time
	workers   map[string]ids.JobID
	holders   map[string]bool
	tasks     map[ids.TaskID]*pendingResults
	actors    map[ids.ActorID]*taskspec.ActorSpec
	calls     map[ids.TaskID]*pendingResults
	seq       uint64
	billing   Billing
	// gpus are the provider's GPUs as last sampled.
	gpus []gpu.Device
	// locate names the other providers holding copies of objects (set by
	// the server; nil in tests that build a remote alone).
	locate    func([]ids.ObjectID) []*pb.PeerLocation
	transfers transferCounters
	// reserving are bundle reservations waiting for the provider's answer.
	reserving map[uint64]chan error
	reqSeq    uint64
	// releaseLater are bundle releases to send when the provider is back.
	releaseLater map[string]bool
	// bundles are the resources reserved per placement group (as far as
	// the head counted them into available).
	bundles map[string]map[string]float64
	// reclaimed are the objects claimed for resumed sessions after a head
	// restart that this provider is to send (see reclaim.go).
	reclaimed map[ids.ObjectID]reclaimKind
}

// locations lists where other providers hold deps (see Server.locate).
func (r *remote) locations(deps []ids.ObjectID) []*pb.PeerLocation {
	if r.locate == nil {
		return nil
	}
	return r.locate(deps)
}

func (r *remote) leased(lease string) {
	if r.billing != nil {
		r.billing.Leased(r.id.Hex(), lease)
	}
}

// pendingResults is a task or call whose results have not all arrived.
type pendingResults struct {
	task    *taskspec.TaskSpec
	call    *taskspec.ActorCall
	pins    []ids.ObjectID
	missing int
	seq     uint64
}

func newRemote(id ids.NodeID, store *objectstore.Store) *remote {
	return &remote{
		id: id, store: store, total: map[string]float64{}, available: map[string]float64{},
		workers: map[string]ids.JobID{}, holders: map[string]bool{},
		tasks: map[ids.TaskID]*pendingResults{}, actors: map[ids.ActorID]*taskspec.ActorSpec{},
		calls: map[ids.TaskID]*pendingResults{},
	}
}

var _ cluster.Member = (*remote)(nil)

func (r *remote) NodeID() ids.NodeID { return r.id }

func (r *remote) send(m *pb.HeadMessage) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sendLocked(m)
}

func (r *remote) sendLocked(m *pb.HeadMessage) error {
	if r.out == nil {
		return ErrNodeGone
	}
	r.out.push(m)
	return nil
}

// Submit pins the task's objects on the head and sends it.
func (r *remote) Submit(spec *taskspec.TaskSpec) error {
	r.leased(spec.TaskID.Hex())
	r.store.Pin(spec.Pins)
	m := nodewire.Task(spec)
	m.PeerLocations = r.locations(spec.Deps)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seq++
	r.tasks[spec.TaskID] = &pendingResults{task: spec, pins: spec.Pins, missing: spec.NumReturns, seq: r.seq}
	if spec.PlacementGroup == "" { // work in a bundle leaves the node's resources alone
		for k, v := range spec.Resources {
			r.available[k] -= v // until the provider reports again
		}
	}
	// Sent even while disconnected: a reconnecting provider that does not
	// report the task running gets it recovered.
	_ = r.sendLocked(&pb.HeadMessage{Msg: &pb.HeadMessage_Submit{Submit: m}})
	return nil
}

func (r *remote) Cancel(id ids.TaskID, force bool) error {
	r.mu.Lock()
	_, ok := r.tasks[id]
	r.mu.Unlock()
	if !ok {
		return fmt.Errorf("%w: %s", raylet.ErrUnknownTask, id.Hex())
	}
	return r.send(&pb.HeadMessage{Msg: &pb.HeadMessage_Cancel{Cancel: &pb.Cancel{TaskId: id.Bytes(), Force: force}}})
}

// Total returns the provider's resources; the map is replaced, never
// changed, so callers may read it but must not modify it.
func (r *remote) Total() map[string]float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.total
}

func (r *remote) Available() map[string]float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := maps.Clone(r.available)
	for k, v := range out {
		if v < 0 {
			out[k] = 0
		}
	}
	return out
}

func (r *remote) WorkerJob(workerID string) (ids.JobID, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	j, ok := r.workers[workerID]
	return j, ok
}

func (r *remote) WorkerBlocked(workerID string) func() {
	_ = r.send(&pb.HeadMessage{Msg: &pb.HeadMessage_WorkerBlocked{WorkerBlocked: &pb.WorkerBlocked{WorkerId: workerID, Blocked: true}}})
	return func() {
		_ = r.send(&pb.HeadMessage{Msg: &pb.HeadMessage_WorkerBlocked{WorkerBlocked: &pb.WorkerBlocked{WorkerId: workerID}}})
	}
}

func (r *remote) CreateActor(spec *taskspec.ActorSpec) error {
	r.leased("actor-" + spec.ActorID.Hex())
	r.store.Pin(spec.Pins)
	m := nodewire.Actor(spec)
	m.PeerLocations = r.locations(spec.Deps)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.actors[spec.ActorID] = spec
	if spec.PlacementGroup == "" {
		for k, v := range spec.Resources {
			r.available[k] -= v
		}
	}
	_ = r.sendLocked(&pb.HeadMessage{Msg: &pb.HeadMessage_CreateActor{CreateActor: m}})
	return nil
}

func (r *remote) SubmitActorTask(call *taskspec.ActorCall) error {
	r.store.Pin(call.Pins)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seq++
	r.calls[call.TaskID] = &pendingResults{call: call, pins: call.Pins, missing: call.NumReturns, seq: r.seq}
	_ = r.sendLocked(&pb.HeadMessage{Msg: &pb.HeadMessage_ActorCall{ActorCall: nodewire.Call(call)}})
	return nil
}

func (r *remote) KillActor(id ids.ActorID, noRestart bool) error {
	return r.send(&pb.HeadMessage{Msg: &pb.HeadMessage_KillActor{KillActor: &pb.KillActor{ActorId: id.Bytes(), NoRestart: noRestart}}})
}

// resultArrived counts one pushed result; a task or call with all its
// results in is finished: its pins are dropped and it is forgotten.
func (r *remote) resultArrived(oid ids.ObjectID) {
	tid := oid.Task()
	r.mu.Lock()
	var unpin []ids.ObjectID
	for _, table := range []map[ids.TaskID]*pendingResults{r.tasks, r.calls} {
		if p := table[tid]; p != nil {
			p.missing--
			if p.missing <= 0 {
				delete(table, tid)
				unpin = p.pins
			}
		}
	}
	r.mu.Unlock()
	r.store.Unpin(unpin)
}

// actorDead forgets an actor that died on the provider.
func (r *remote) actorDead(id ids.ActorID) {
	r.mu.Lock()
	spec := r.actors[id]
	delete(r.actors, id)
	r.mu.Unlock()
	if spec != nil {
		r.store.Unpin(spec.Pins)
	}
}

// refs applies a provider worker's reference changes to the head's store.
func (r *remote) refs(m *pb.ObjectRefs) {
	list, err := nodewire.ObjectIDs(m.Ids)
	if err != nil {
		return
	}
	if m.Holder != "" {
		r.mu.Lock()
		r.holders[m.Holder] = true
		r.mu.Unlock()
	}
	switch m.Op {
	case pb.ObjectRefs_HOLD:
		for _, id := range list {
			r.store.HoldOnce(id, m.Holder)
		}
	case pb.ObjectRefs_RELEASE:
		for _, id := range list {
			r.store.Release(id, m.Holder)
		}
	case pb.ObjectRefs_RELEASE_ALL:
		r.store.ReleaseAll(m.Holder)
		r.mu.Lock()
		delete(r.holders, m.Holder)
		r.mu.Unlock()
	}
}

// takeLost removes and returns the work the provider no longer has: all of
// it when keep is nil (the node died), else what keep does not list, with
// the pins the caller drops once it has resubmitted what it can.
func (r *remote) takeLost(keepTasks map[ids.TaskID]bool, keepActors map[ids.ActorID]bool) (cluster.Lost, []ids.ObjectID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var lost cluster.Lost
	var unpin []ids.ObjectID
	var calls []*pendingResults
	for id, p := range r.tasks {
		if keepTasks == nil || !keepTasks[id] {
			lost.Tasks = append(lost.Tasks, p.task)
			unpin = append(unpin, p.pins...)
			delete(r.tasks, id)
		}
	}
	for id, a := range r.actors {
		if keepActors == nil || !keepActors[id] {
			lost.Actors = append(lost.Actors, a)
			unpin = append(unpin, a.Pins...)
			delete(r.actors, id)
		}
	}
	for id, p := range r.calls {
		if keepActors == nil || !keepActors[p.call.ActorID] {
			calls = append(calls, p)
			unpin = append(unpin, p.pins...)
			delete(r.calls, id)
		}
	}
	slices.SortFunc(calls, func(a, b *pendingResults) int { return cmp.Compare(a.seq, b.seq) })
	for _, p := range calls {
		lost.Calls = append(lost.Calls, p.call)
	}
	if keepTasks == nil {
		lost.Holders = slices.Collect(maps.Keys(r.holders))
		r.holders = map[string]bool{}
	}
	return lost, unpin
}

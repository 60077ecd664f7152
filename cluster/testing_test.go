package cluster

import (
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gray-cluster/gray/gcs"
	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/internal/pickle"
	"github.com/gray-cluster/gray/objectstore"
	"github.com/gray-cluster/gray/raylet"
	"github.com/gray-cluster/gray/taskspec"
)

// op is one call a fakeMember received.
type op struct {
	Kind string // "submit", "cancel", "create", "call", "kill", "blocked", "reserve", "release"
	// Task is the task id of a submit, cancel or actor call.
	Task  ids.TaskID
	Actor ids.ActorID
	// MaxRetries (submit) and MaxRestarts (create) are the values the spec
	// carried when the member received it (the cluster mutates specs later).
	MaxRetries  int
	MaxRestarts int
	Method      string
	Force       bool
	NoRestart   bool
	Worker      string
	// PG and Bundles (sorted indices, "0,2") of a reserve or release.
	PG      string
	Bundles string
}

// fakeMember is an in-memory cluster.Member that records what it is asked
// to do, in order.
type fakeMember struct {
	id ids.NodeID

	mu    sync.Mutex
	total map[string]float64
	avail map[string]float64
	ops   []op
	// held are the placement group bundles reserved here, by group.
	held map[string]map[int]map[string]float64
	// reserveErr, when set, refuses ReserveBundles.
	reserveErr error
	jobs       map[string]ids.JobID // worker id -> job
	unblocked  []string
	// submitErr, when set, fails Submit (and records nothing).
	submitErr error
	// onCreate and onCall run (without the fake's lock) after CreateActor
	// and SubmitActorTask recorded their op: they stand for a concurrent
	// client acting while the cluster is in the middle of delivering.
	onCreate func(*taskspec.ActorSpec)
	onCall   func(*taskspec.ActorCall)
	// check, when set, is called on every Submit/CreateActor/SubmitActorTask
	// (property test: assert the member may take work now).
	check func(kind string)

	// ch receives every recorded op (buffered; never blocks the cluster).
	ch chan op
}

var _ Member = (*fakeMember)(nil)

// nodeID is a deterministic node id whose hex starts with the 8-digit
// big-endian form of n+1, so that ids sort as their numbers do and each has
// a distinct worker prefix.
func nodeID(n int) ids.NodeID {
	var id ids.NodeID
	binary.BigEndian.PutUint32(id[:4], uint32(n+1))
	for i := 4; i < len(id); i++ {
		id[i] = byte(0xa0 + n)
	}
	return id
}

func newFake(n int, total map[string]float64) *fakeMember {
	return &fakeMember{
		id: nodeID(n), total: maps.Clone(total), avail: maps.Clone(total),
		held: map[string]map[int]map[string]float64{}, jobs: map[string]ids.JobID{}, ch: make(chan op, 4096),
	}
}

func (f *fakeMember) record(o op) {
	f.mu.Lock()
	f.ops = append(f.ops, o)
	f.mu.Unlock()
	select {
	case f.ch <- o:
	default:
		panic("fakeMember: op channel full")
	}
}

func (f *fakeMember) NodeID() ids.NodeID { return f.id }

func (f *fakeMember) Submit(spec *taskspec.TaskSpec) error {
	if f.check != nil {
		f.check("submit")
	}
	f.mu.Lock()
	err := f.submitErr
	f.mu.Unlock()
	if err != nil {
		return err
	}
	f.record(op{Kind: "submit", Task: spec.TaskID, MaxRetries: spec.MaxRetries})
	return nil
}

func (f *fakeMember) Cancel(id ids.TaskID, force bool) error {
	f.mu.Lock()
	known := slices.ContainsFunc(f.ops, func(o op) bool { return o.Kind == "submit" && o.Task == id })
	f.mu.Unlock()
	f.record(op{Kind: "cancel", Task: id, Force: force})
	if !known {
		return raylet.ErrUnknownTask
	}
	return nil
}

func (f *fakeMember) Total() map[string]float64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.total)
}

func (f *fakeMember) Available() map[string]float64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.avail)
}

func (f *fakeMember) setAvailable(a map[string]float64) {
	f.mu.Lock()
	f.avail = maps.Clone(a)
	f.mu.Unlock()
}

func (f *fakeMember) WorkerJob(workerID string) (ids.JobID, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	j, ok := f.jobs[workerID]
	return j, ok
}

func (f *fakeMember) WorkerBlocked(workerID string) func() {
	f.record(op{Kind: "blocked", Worker: workerID})
	return func() {
		f.mu.Lock()
		f.unblocked = append(f.unblocked, workerID)
		f.mu.Unlock()
	}
}

func (f *fakeMember) CreateActor(spec *taskspec.ActorSpec) error {
	if f.check != nil {
		f.check("create")
	}
	f.record(op{Kind: "create", Actor: spec.ActorID, MaxRestarts: spec.MaxRestarts})
	if f.onCreate != nil {
		f.onCreate(spec)
	}
	return nil
}

func (f *fakeMember) SubmitActorTask(call *taskspec.ActorCall) error {
	if f.check != nil {
		f.check("call")
	}
	f.record(op{Kind: "call", Task: call.TaskID, Actor: call.ActorID, Method: call.Method})
	if f.onCall != nil {
		f.onCall(call)
	}
	return nil
}

func (f *fakeMember) KillActor(id ids.ActorID, noRestart bool) error {
	f.record(op{Kind: "kill", Actor: id, NoRestart: noRestart})
	return nil
}

// ReserveBundles reserves bundles out of avail like a raylet, or refuses
// with reserveErr or when they do not fit.
func (f *fakeMember) ReserveBundles(pg string, job ids.JobID, bundles map[int]map[string]float64) error {
	f.mu.Lock()
	err := f.reserveErr
	sum := map[string]float64{}
	for i, b := range bundles {
		if f.held[pg][i] != nil {
			continue
		}
		for k, v := range b {
			sum[k] += v
		}
	}
	for k, v := range sum {
		if f.avail[k] < v && err == nil {
			err = fmt.Errorf("%w: %s", raylet.ErrBundlesUnavailable, k)
		}
	}
	if err == nil {
		for k, v := range sum {
			f.avail[k] -= v
		}
		if f.held[pg] == nil {
			f.held[pg] = map[int]map[string]float64{}
		}
		for i, b := range bundles {
			f.held[pg][i] = b
		}
	}
	f.mu.Unlock()
	if err != nil {
		return err
	}
	f.record(op{Kind: "reserve", PG: pg, Bundles: indices(bundles)})
	return nil
}

// ReleaseBundles gives a group's bundles back to avail.
func (f *fakeMember) ReleaseBundles(pg string) error {
	f.mu.Lock()
	held := f.held[pg]
	delete(f.held, pg)
	for _, b := range held {
		for k, v := range b {
			f.avail[k] += v
		}
	}
	f.mu.Unlock()
	f.record(op{Kind: "release", PG: pg, Bundles: indices(held)})
	return nil
}

// holding lists the bundle indices of pg reserved here ("0,2").
func (f *fakeMember) holding(pg string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return indices(f.held[pg])
}

func indices(m map[int]map[string]float64) string {
	var parts []string
	for _, i := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprint(i))
	}
	return strings.Join(parts, ",")
}

// recorded returns a copy of the ops so far, optionally of some kinds only.
func (f *fakeMember) recorded(kinds ...string) []op {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []op
	for _, o := range f.ops {
		if len(kinds) == 0 || slices.Contains(kinds, o.Kind) {
			out = append(out, o)
		}
	}
	return out
}

// submitted lists the task ids the member received with Submit.
func (f *fakeMember) submitted() []ids.TaskID {
	var out []ids.TaskID
	for _, o := range f.recorded("submit") {
		out = append(out, o.Task)
	}
	return out
}

// waitOp waits (with a deadline) for the next op of the given kind on the
// member's channel, skipping others.
func (f *fakeMember) waitOp(t *testing.T, kind string) op {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case o := <-f.ch:
			if o.Kind == kind {
				return o
			}
		case <-deadline:
			t.Fatalf("node %s: no %q op within the deadline; ops: %+v", f.id.Hex()[:8], kind, f.recorded())
		}
	}
}

// ---- test cluster harness ----

type harness struct {
	t     *testing.T
	c     *Cluster
	store *objectstore.Store

	mu         sync.Mutex
	warnings   []warning
	actorsDead []ids.ActorID
	holders    []string
}

type warning struct {
	job ids.JobID
	msg string
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	h := &harness{t: t, store: objectstore.New(1 << 30)}
	h.c = New(Config{
		Store:  h.store,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Seed:   42,
		OnActorDead: func(id ids.ActorID) {
			h.mu.Lock()
			h.actorsDead = append(h.actorsDead, id)
			h.mu.Unlock()
		},
		OnHolderGone: func(holder string) {
			h.mu.Lock()
			h.holders = append(h.holders, holder)
			h.mu.Unlock()
		},
		Warn: func(job ids.JobID, msg string) {
			h.mu.Lock()
			h.warnings = append(h.warnings, warning{job, msg})
			h.mu.Unlock()
		},
	})
	return h
}

func (h *harness) warns() []warning {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.warnings)
}

func (h *harness) deadActors() []ids.ActorID {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.actorsDead)
}

func (h *harness) goneHolders() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.holders)
}

// add registers a fake provider node with the given resources and labels.
func (h *harness) add(n int, total map[string]float64, labels map[string]string) *fakeMember {
	f := newFake(n, total)
	h.c.Add(f, gcs.NodeInfo{IP: fmt.Sprintf("10.0.0.%d", n+1), Labels: labels, Total: total})
	return f
}

var job1 = ids.JobFromInt(1)

// task builds a task spec with one return whose object exists (pending) in
// the store, so that a failure can be sealed and observed.
func (h *harness) task(name string, res map[string]float64, maxRetries int, s taskspec.Scheduling) *taskspec.TaskSpec {
	spec := &taskspec.TaskSpec{
		TaskID: ids.NewTaskID(ids.NilActorFor(job1)), JobID: job1, Name: name,
		NumReturns: 1, Resources: res, MaxRetries: maxRetries, BundleIndex: -1, Scheduling: s,
	}
	for _, id := range spec.ReturnIDs() {
		h.store.Create(id, "driver")
	}
	return spec
}

func (h *harness) actor(name string, res map[string]float64, maxRestarts, maxTaskRetries int, s taskspec.Scheduling) *taskspec.ActorSpec {
	return &taskspec.ActorSpec{
		ActorID: ids.NewActorID(job1), JobID: job1, Name: name, Resources: res,
		MaxRestarts: maxRestarts, MaxTaskRetries: maxTaskRetries, BundleIndex: -1, Scheduling: s,
	}
}

func (h *harness) call(a *taskspec.ActorSpec, method string) *taskspec.ActorCall {
	c := &taskspec.ActorCall{TaskID: ids.NewTaskID(a.ActorID), ActorID: a.ActorID, JobID: job1, Method: method, NumReturns: 1}
	for _, id := range c.ReturnIDs() {
		h.store.Create(id, "driver")
	}
	return c
}

// sealedError reports the exception class ("module.Name") and arguments an
// object was sealed with; "" when it is still pending.
func (h *harness) sealedError(id ids.ObjectID) (string, []any) {
	h.t.Helper()
	obj, err := h.store.Get(id)
	if err != nil {
		h.t.Fatalf("store.Get(%s): %v", id.Hex(), err)
	}
	if obj == nil {
		return "", nil
	}
	if !obj.IsError {
		h.t.Fatalf("object %s sealed but not as an error", id.Hex())
	}
	v, err := pickle.DecodeBytes(slices.Concat(obj.Chunks...))
	if err != nil {
		h.t.Fatalf("decode error value of %s: %v", id.Hex(), err)
	}
	o, ok := v.(*pickle.Object)
	if !ok {
		h.t.Fatalf("error value of %s decodes to %T, want *pickle.Object", id.Hex(), v)
	}
	if o.Global {
		h.t.Fatalf("error value of %s is the class itself, not an instance", id.Hex())
	}
	return o.Module + "." + o.Name, o.Args
}

// wantSealed asserts every id was sealed with the exception name.
func (h *harness) wantSealed(name string, idsList ...ids.ObjectID) {
	h.t.Helper()
	for _, id := range idsList {
		got, _ := h.sealedError(id)
		if got != name {
			if got == "" {
				got = "<pending>"
			}
			h.t.Errorf("object %s: sealed with %s, want %s", id.Hex()[:12], got, name)
		}
	}
}

// wantPending asserts no id was sealed.
func (h *harness) wantPending(idsList ...ids.ObjectID) {
	h.t.Helper()
	for _, id := range idsList {
		if got, _ := h.sealedError(id); got != "" {
			h.t.Errorf("object %s: sealed with %s, want still pending", id.Hex()[:12], got)
		}
	}
}

func (h *harness) pendingLen() int {
	h.c.mu.Lock()
	defer h.c.mu.Unlock()
	return len(h.c.pending)
}

// argString returns the first argument of an error value as a string.
func argString(args []any) string {
	if len(args) == 0 {
		return ""
	}
	s, _ := args[0].(string)
	return s
}

func short(id ids.NodeID) string { return id.Hex()[:8] }

func cpu(n float64) map[string]float64 { return map[string]float64{"CPU": n} }

func affinity(id ids.NodeID, soft bool) taskspec.Scheduling {
	return taskspec.Scheduling{Kind: "NODE_AFFINITY", NodeID: id.Hex(), Soft: soft}
}

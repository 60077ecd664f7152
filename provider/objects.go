package provider

import (
	"context"
	"errors"
	"sync"

	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/internal/nodewire"
	"github.com/gray-cluster/gray/nodeserver"
	"github.com/gray-cluster/gray/objectstore"
	pb "github.com/gray-cluster/gray/proto/nodepb"
	"github.com/gray-cluster/gray/raylet"
)

// cacheHolder holds the objects the provider keeps in its local store.
const cacheHolder = "cache"

// objects is a provider raylet's object store: objects it needs are pulled
// from the head into a local cache, results are pushed to the head, and
// reference changes of its workers are forwarded to the head's store.
type objects struct {
	p     *Provider
	local *objectstore.Store

	mu       sync.Mutex
	inflight map[ids.ObjectID]*pull
	cached   []ids.ObjectID // oldest first
	pushes   chan struct{}  // bounds concurrent pushes
	// oversized is the last pulled object too large for the cache.
	oversized *objectstore.Object
}

type pull struct {
	done chan struct{}
	err  error
}

var _ raylet.Objects = (*objects)(nil)

func newObjects(p *Provider, capacity int64) *objects {
	return &objects{
		p: p, local: objectstore.New(capacity), inflight: map[ids.ObjectID]*pull{},
		pushes: make(chan struct{}, 16),
	}
}

// fetch starts (or joins) a pull of id and returns it.
func (o *objects) fetch(id ids.ObjectID) *pull {
	o.mu.Lock()
	defer o.mu.Unlock()
	if pl := o.inflight[id]; pl != nil {
		return pl
	}
	pl := &pull{done: make(chan struct{})}
	if _, err := o.local.Get(id); err == nil {
		close(pl.done)
		return pl
	}
	o.inflight[id] = pl
	go func() {
		pl.err = o.pullOne(id)
		o.mu.Lock()
		delete(o.inflight, id)
		o.mu.Unlock()
		close(pl.done)
	}()
	return pl
}

func (o *objects) pullOne(id ids.ObjectID) error {
	client, err := o.p.client()
	if err != nil {
		return err
	}
	stream, err := client.PullObject(o.p.ctx, &pb.PullRequest{ObjectId: id.Bytes()})
	if err != nil {
		return err
	}
	obj, err := nodeserver.ReceiveObject(stream.Recv, o.local.Capacity())
	if err != nil {
		return err
	}
	o.remember(obj)
	return nil
}

// remember caches a pulled object, dropping the oldest ones to make room.
func (o *objects) remember(obj *objectstore.Object) {
	for {
		err := o.local.Put(obj, cacheHolder)
		if err == nil || errors.Is(err, objectstore.ErrExists) {
			break
		}
		if !o.evictOne() {
			// Larger than the whole cache: keep it out of the cache, the
			// task gets it through Get below.
			o.mu.Lock()
			o.oversized = obj
			o.mu.Unlock()
			return
		}
	}
	o.mu.Lock()
	o.cached = append(o.cached, obj.ID)
	o.mu.Unlock()
}

func (o *objects) evictOne() bool {
	o.mu.Lock()
	if len(o.cached) == 0 {
		o.mu.Unlock()
		return false
	}
	id := o.cached[0]
	o.cached = o.cached[1:]
	o.mu.Unlock()
	o.local.Release(id, cacheHolder)
	return true
}

func (o *objects) lookup(id ids.ObjectID, pl *pull) (*objectstore.Object, error) {
	if obj, err := o.local.Get(id); err == nil && obj != nil {
		return obj, nil
	}
	o.mu.Lock()
	big := o.oversized
	o.mu.Unlock()
	if big != nil && big.ID == id {
		return big, nil
	}
	if pl.err != nil {
		return nil, pl.err
	}
	return nil, objectstore.ErrNotFound
}

// Get returns an object, pulling it from the head when it is not here.
func (o *objects) Get(id ids.ObjectID) (*objectstore.Object, error) {
	return o.Wait(o.p.ctx, id)
}

// ReadyChan is closed once the object is here (or could not be pulled).
func (o *objects) ReadyChan(id ids.ObjectID) (<-chan struct{}, error) {
	return o.fetch(id).done, nil
}

// Wait pulls an object and returns it.
func (o *objects) Wait(ctx context.Context, id ids.ObjectID) (*objectstore.Object, error) {
	pl := o.fetch(id)
	select {
	case <-pl.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return o.lookup(id, pl)
}

// Seal pushes a result to the head. Pushes run concurrently; the head
// counts a task finished when all its results have arrived.
func (o *objects) Seal(obj *objectstore.Object) bool {
	// Keep a copy: the next task here that needs it does not pull it back.
	o.remember(obj)
	o.pushes <- struct{}{}
	go func() {
		defer func() { <-o.pushes }()
		for attempt := 0; ; attempt++ {
			err := o.pushOne(obj)
			if err == nil {
				return
			}
			o.p.log.Warn("push result", "object", obj.ID.Hex(), "attempt", attempt, "err", err)
			if !o.p.waitReconnect(attempt) {
				return
			}
		}
	}()
	return true
}

func (o *objects) pushOne(obj *objectstore.Object) error {
	client, err := o.p.client()
	if err != nil {
		return err
	}
	stream, err := client.PushObject(o.p.ctx)
	if err != nil {
		return err
	}
	if err := nodeserver.SendObject(obj, stream.Send); err != nil {
		return err
	}
	_, err = stream.CloseAndRecv()
	return err
}

// Pin and Unpin are the head's business: it pins what it sends here.
func (o *objects) Pin([]ids.ObjectID)   {}
func (o *objects) Unpin([]ids.ObjectID) {}

func (o *objects) refs(op pb.ObjectRefs_Op, holder string, list ...ids.ObjectID) {
	o.p.sendEvent(&pb.NodeMessage{Msg: &pb.NodeMessage_Refs{Refs: &pb.ObjectRefs{Op: op, Ids: nodewire.IDs(list), Holder: holder}}})
}

// HoldOnce forwards a worker's reference to the head's store.
func (o *objects) HoldOnce(id ids.ObjectID, holder string) bool {
	o.refs(pb.ObjectRefs_HOLD, holder, id)
	return true
}

// Release forwards a worker's dropped reference.
func (o *objects) Release(id ids.ObjectID, holder string) bool {
	o.refs(pb.ObjectRefs_RELEASE, holder, id)
	return true
}

// ReleaseAll forwards a worker's exit.
func (o *objects) ReleaseAll(holder string) int {
	o.refs(pb.ObjectRefs_RELEASE_ALL, holder)
	return 0
}

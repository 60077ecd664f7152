package provider

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/internal/nodewire"
	"github.com/gray-cluster/gray/nodeserver"
	"github.com/gray-cluster/gray/objectstore"
	"github.com/gray-cluster/gray/objstream"
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
	// hints are the holders the head named for objects not pulled yet.
	hints *lru.Cache[ids.ObjectID, []holder]

	stats  transferStats
	served atomic.Int64 // bytes served to other providers
}

type pull struct {
	done chan struct{}
	err  error
}

var _ raylet.Objects = (*objects)(nil)

func newObjects(p *Provider, capacity int64) *objects {
	o := &objects{
		p: p, local: objectstore.New(capacity), inflight: map[ids.ObjectID]*pull{},
		pushes: make(chan struct{}, 16),
	}
	// Both bounds are positive, the only way these can fail.
	o.hints, _ = lru.New[ids.ObjectID, []holder](maxHints)
	o.stats.recent, _ = lru.New[ids.ObjectID, ObjectTransfer](maxHints)
	return o
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
		pl.err = o.pullRetrying(id)
		o.mu.Lock()
		delete(o.inflight, id)
		o.mu.Unlock()
		close(pl.done)
	}()
	return pl
}

// pullRetryFor bounds how long a pull is retried while the head cannot be
// reached (it restarts: its gRPC connections come back within seconds).
const pullRetryFor = 30 * time.Second

// pullRetrying pulls id, trying again while the head is unreachable.
func (o *objects) pullRetrying(id ids.ObjectID) error {
	deadline := time.Now().Add(pullRetryFor)
	wait := 50 * time.Millisecond
	for {
		err := o.pullOne(id)
		if err == nil || status.Code(err) != codes.Unavailable || time.Now().After(deadline) {
			if err != nil {
				o.p.log.Warn("pull from the head failed", "object", id.Hex(), "err", err)
			}
			return err
		}
		o.p.log.Info("head unreachable for a pull; retrying", "object", id.Hex(), "err", err)
		select {
		case <-o.p.ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
}

// FirstPieceBytes is the size of the first piece of a pull (which also
// tells the object's size); StripeBytes the size above which a result is
// pushed as ranges over all of the provider's bulk QUIC connections in
// parallel. On a long lossy path one connection's window is small, so even
// a few MiB are worth spreading.
const (
	FirstPieceBytes = 256 << 10
	StripeBytes     = 1 << 20
)

// pullRange pulls [off, off+n) of id from the head over bulk connection
// conn (the relay path).
func (o *objects) pullRange(ctx context.Context, conn int, id ids.ObjectID, off, n int64) (*objstream.Range, error) {
	stream, err := pb.NewHeadClient(o.p.stripe(conn)).PullObject(ctx, &pb.PullRequest{ObjectId: id.Bytes(), Offset: off, Length: n})
	if err != nil {
		return nil, err
	}
	return objstream.ReceiveRange(stream.Recv, 0)
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

// held returns the object if this provider holds it (nil otherwise), for
// other providers that pull it directly.
func (o *objects) held(id ids.ObjectID) *objectstore.Object {
	if obj, err := o.local.Get(id); err == nil && obj != nil {
		return obj
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.oversized != nil && o.oversized.ID == id {
		return o.oversized
	}
	return nil
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
	o.push(obj)
	return true
}

// push sends an object to the head: a small one inline on the control
// channel, a larger one over streams of its own (retried across
// reconnects).
func (o *objects) push(obj *objectstore.Object) {
	if obj.Size <= nodeserver.InlineResultMax {
		// Small results ride the control channel, in order, whole.
		m := &pb.ObjectChunk{ObjectId: obj.ID.Bytes(), TotalSize: obj.Size, IsError: obj.IsError,
			Contained: nodewire.IDs(obj.Contained), EndOfChunk: true}
		for _, c := range obj.Chunks {
			m.Data = append(m.Data, c...)
		}
		o.p.sendEvent(&pb.NodeMessage{Msg: &pb.NodeMessage_Result{Result: m}})
		return
	}
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
}

func (o *objects) pushOne(obj *objectstore.Object) error {
	if obj.Size <= StripeBytes {
		return o.pushRange(0, obj, -1, 0)
	}
	k := o.p.stripes()
	size := rangeSize(obj.Size, k)
	errs := make(chan error, k)
	n := 0
	for off := int64(0); off < obj.Size; off += size {
		go func(conn int, off int64) { errs <- o.pushRange(conn, obj, off, min(size, obj.Size-off)) }(n, off)
		n++
	}
	var first error
	for range n {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// pushRange pushes [off, off+n) of obj over connection conn; off < 0
// pushes the whole object as stored.
func (o *objects) pushRange(conn int, obj *objectstore.Object, off, n int64) error {
	stream, err := pb.NewHeadClient(o.p.stripe(conn)).PushObject(o.p.ctx)
	if err != nil {
		return err
	}
	if off < 0 {
		err = objstream.SendObject(obj, stream.Send)
	} else {
		err = objstream.SendRange(obj, off, n, stream.Send)
	}
	if err != nil {
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

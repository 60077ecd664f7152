package nodemanager

import (
	"context"
	"sync"
	"time"

	commonpb "github.com/gray-cluster/gray/proto/ray/commonpb"
	raypb "github.com/gray-cluster/gray/proto/ray/raypb"
)

// pin is a primary copy held for its owner (PinObjectIDs).
type pin struct {
	owner       *commonpb.Address
	ownerID     WorkerID
	generatorID []byte
}

// pinObjects pins ids for owner; successes follow the request order. Owners
// hear ADDED for every newly pinned object.
func (r *Raylet) pinObjects(owner *commonpb.Address, ids [][]byte, generatorID []byte) []bool {
	ok := make([]bool, len(ids))
	ownerID, _ := workerIDFrom(owner.GetWorkerId())
	var added []ObjectID
	r.mu.Lock()
	for i, b := range ids {
		id, valid := objectIDFrom(b)
		if !valid {
			continue
		}
		if _, held := r.pins[id]; held {
			ok[i] = true
			continue
		}
		if !r.cfg.Store.Pin(id) {
			continue
		}
		ok[i] = true
		r.pins[id] = &pin{owner: owner, ownerID: ownerID, generatorID: generatorID}
		added = append(added, id)
	}
	_, ownerDead := r.dead[ownerID]
	r.mu.Unlock()
	if ownerDead {
		// The owner is already gone: nobody will free these.
		r.freeObjectIDs(added)
		return ok
	}
	r.owners.notify(owner, added, raypb.ObjectPlasmaLocationUpdate_ADDED, generatorID)
	return ok
}

// freeObjects unpins and deletes ids (FreeLocalObjects, and the socket's
// FreeObjectsInObjectStoreRequest).
func (r *Raylet) freeObjects(raw [][]byte) {
	var ids []ObjectID
	for _, b := range raw {
		if id, ok := objectIDFrom(b); ok {
			ids = append(ids, id)
		}
	}
	r.freeObjectIDs(ids)
}

func (r *Raylet) freeObjectIDs(ids []ObjectID) {
	type removal struct {
		owner *commonpb.Address
		gen   []byte
		id    ObjectID
	}
	var removed []removal
	r.mu.Lock()
	for _, id := range ids {
		if p, ok := r.pins[id]; ok {
			delete(r.pins, id)
			r.cfg.Store.Unpin(id)
			if _, dead := r.dead[p.ownerID]; !dead {
				removed = append(removed, removal{p.owner, p.generatorID, id})
			}
		}
		r.cfg.Store.Delete(id)
	}
	r.mu.Unlock()
	for _, rm := range removed {
		r.owners.notify(rm.owner, []ObjectID{rm.id}, raypb.ObjectPlasmaLocationUpdate_REMOVED, rm.gen)
	}
}

// dropPinsOwnedByLocked releases every object pinned for a dead owner.
func (r *Raylet) dropPinsOwnedByLocked(owner WorkerID) []ObjectID {
	var ids []ObjectID
	for id, p := range r.pins {
		if p.ownerID == owner {
			ids = append(ids, id)
			delete(r.pins, id)
			r.cfg.Store.Unpin(id)
			r.cfg.Store.Delete(id)
		}
	}
	return ids
}

// ownerNotifier sends UpdateObjectLocationBatch to owners, in order per
// owner, batching what queued up while a call was in flight.
type ownerNotifier struct {
	r  *Raylet
	mu sync.Mutex
	q  map[string]*ownerQueue
}

type ownerQueue struct {
	addr    *commonpb.Address
	pending []*raypb.ObjectLocationUpdate
	running bool
}

func newOwnerNotifier(r *Raylet) *ownerNotifier {
	return &ownerNotifier{r: r, q: map[string]*ownerQueue{}}
}

func (n *ownerNotifier) notify(owner *commonpb.Address, ids []ObjectID, kind raypb.ObjectPlasmaLocationUpdate, gen []byte) {
	if len(ids) == 0 || owner.GetPort() == 0 {
		return
	}
	key := string(owner.GetWorkerId())
	n.mu.Lock()
	defer n.mu.Unlock()
	oq, ok := n.q[key]
	if !ok {
		oq = &ownerQueue{addr: owner}
		n.q[key] = oq
	}
	for _, id := range ids {
		k := kind
		u := &raypb.ObjectLocationUpdate{ObjectId: append([]byte(nil), id[:]...), PlasmaLocationUpdate: &k}
		if len(gen) > 0 {
			u.GeneratorId = gen
		}
		oq.pending = append(oq.pending, u)
	}
	if !oq.running {
		oq.running = true
		n.r.goTracked(func() { n.drain(key, oq) })
	}
}

func (n *ownerNotifier) drain(key string, oq *ownerQueue) {
	r := n.r
	for {
		n.mu.Lock()
		batch := oq.pending
		oq.pending = nil
		if len(batch) == 0 {
			oq.running = false
			delete(n.q, key)
			n.mu.Unlock()
			return
		}
		n.mu.Unlock()
		addr := oq.addr
		cw, err := r.workers.get(addrString(addr))
		if err != nil {
			continue
		}
		ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
		_, err = cw.UpdateObjectLocationBatch(ctx, &raypb.UpdateObjectLocationBatchRequest{
			IntendedWorkerId:      addr.GetWorkerId(),
			NodeId:                r.cfg.NodeID,
			ObjectLocationUpdates: batch,
		})
		cancel()
		if err != nil && r.ctx.Err() == nil {
			r.log.Debug("UpdateObjectLocationBatch failed", "owner", addrString(addr), "err", err)
		}
	}
}

func addrString(a *commonpb.Address) string {
	w := &worker{ip: a.GetIpAddress(), port: a.GetPort()}
	return w.grpcAddr()
}

// wait answers a WaitRequest: found once num_required are sealed or the
// timeout (ms; negative waits until the client goes) passes.
func (r *Raylet) wait(c *client, m waitRequest) {
	ids := make([]ObjectID, 0, len(m.IDs))
	for _, b := range m.IDs {
		id, _ := objectIDFrom(b)
		ids = append(ids, id)
	}
	n := int(m.NumRequired)
	if n > len(ids) {
		n = len(ids)
	}
	ctx := c.ctx
	if m.TimeoutMs >= 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(m.TimeoutMs)*time.Millisecond)
		defer cancel()
	}
	var sealed []ObjectID
	if n > 0 {
		sealed = r.cfg.Store.WaitSealed(ctx, ids, n)
	}
	if c.ctx.Err() != nil {
		return
	}
	got := map[ObjectID]bool{}
	for _, id := range sealed {
		got[id] = true
	}
	for _, id := range ids {
		if !got[id] && r.cfg.Store.Contains(id) {
			got[id] = true
		}
	}
	// At most num_required found, in request order, as the stock raylet
	// replies: the core worker checks it (and aborts when there are more).
	var found, remaining [][]byte
	for i, id := range ids {
		if got[id] && len(found) < n {
			found = append(found, m.IDs[i])
		} else {
			remaining = append(remaining, m.IDs[i])
		}
	}
	if err := c.send(msgWaitReply, buildWaitReply(found, remaining)); err != nil {
		c.close()
	}
}

// waitActorCallArgs tells the actor worker that an actor task's plasma
// arguments are all local.
func (r *Raylet) waitActorCallArgs(c *client, m waitForActorCallArgs) {
	ids := make([]ObjectID, 0, len(m.IDs))
	for _, b := range m.IDs {
		if id, ok := objectIDFrom(b); ok {
			ids = append(ids, id)
		}
	}
	if len(ids) > 0 && len(r.cfg.Store.WaitSealed(c.ctx, ids, len(ids))) < len(ids) {
		return // the worker went away
	}
	w := c.worker
	cw, err := r.workers.get(w.grpcAddr())
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(c.ctx, 30*time.Second)
	defer cancel()
	if _, err := cw.ActorCallArgWaitComplete(ctx, &raypb.ActorCallArgWaitCompleteRequest{
		IntendedWorkerId: w.id[:], TaskId: m.TaskID, AttemptNumber: m.AttemptNumber,
	}); err != nil && c.ctx.Err() == nil {
		r.log.Warn("ActorCallArgWaitComplete failed", "worker_id", w.id.String(), "err", err)
	}
}

// plasmaReady answers SubscribePlasmaReady with PlasmaObjectReady once the
// object is sealed here (the caller has asked the puller for it).
func (r *Raylet) plasmaReady(c *client, m subscribePlasmaReady) {
	id, ok := objectIDFrom(m.ObjectID)
	if !ok {
		return
	}
	if len(r.cfg.Store.WaitSealed(c.ctx, []ObjectID{id}, 1)) < 1 {
		return
	}
	w := c.worker
	cw, err := r.workers.get(w.grpcAddr())
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(c.ctx, 30*time.Second)
	defer cancel()
	if _, err := cw.PlasmaObjectReady(ctx, &raypb.PlasmaObjectReadyRequest{ObjectId: m.ObjectID}); err != nil && c.ctx.Err() == nil {
		r.log.Warn("PlasmaObjectReady failed", "worker_id", w.id.String(), "err", err)
	}
}

// pushError forwards a worker's PushErrorRequest to the GCS error channel.
func (r *Raylet) pushError(m pushErrorRequest) {
	ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
	defer cancel()
	if err := r.gcs.reportJobError(ctx, &raypb.ErrorTableData{JobId: m.JobID, Type: m.Type, ErrorMessage: m.Message, Timestamp: m.Timestamp}); err != nil && r.ctx.Err() == nil {
		r.log.Warn("ReportJobError failed", "err", err)
	}
}

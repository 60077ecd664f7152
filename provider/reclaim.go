package provider

import (
	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/internal/nodewire"
	pb "github.com/gray-cluster/gray/proto/nodepb"
)

// After a head restart the provider's store is where the results it
// produced (and the copies it pulled) still are: it lists them when it
// registers again (heldIDs), and the restarted head answers which to push
// back to it, for the sessions that resumed, and which to forget
// (returnObjects).

// maxHeldListed bounds how many held objects a Register lists (newest
// first), so that the message stays well under the head's limit.
const maxHeldListed = 1 << 16

// heldIDs lists the objects the provider's cache holds, newest first.
func (o *objects) heldIDs() []ids.ObjectID {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make([]ids.ObjectID, 0, min(len(o.cached)+1, maxHeldListed))
	if o.oversized != nil {
		out = append(out, o.oversized.ID)
	}
	for i := len(o.cached) - 1; i >= 0 && len(out) < maxHeldListed; i-- {
		out = append(out, o.cached[i])
	}
	return out
}

// returnObjects pushes the objects the head asks back to it and forgets
// those it drops. A held object that is gone is answered as missing; a
// pending one (a result still to come) is pushed only if already here,
// else it goes to the head as any result does once its task ends.
func (o *objects) returnObjects(m *pb.ReturnObjects) {
	held, _ := nodewire.ObjectIDs(m.Held)
	pending, _ := nodewire.ObjectIDs(m.Pending)
	drop, _ := nodewire.ObjectIDs(m.Drop)
	for _, id := range held {
		if obj := o.held(id); obj != nil {
			o.push(obj)
			continue
		}
		o.p.sendEvent(&pb.NodeMessage{Msg: &pb.NodeMessage_Result{Result: &pb.ObjectChunk{ObjectId: id.Bytes(), Missing: true}}})
	}
	for _, id := range pending {
		if obj := o.held(id); obj != nil {
			o.push(obj)
		}
	}
	for _, id := range drop {
		o.forget(id)
	}
	if len(held)+len(pending)+len(drop) > 0 {
		o.p.log.Info("objects returned to the restarted head", "held", len(held), "pending", len(pending), "dropped", len(drop))
	}
}

// forget drops id from the cache.
func (o *objects) forget(id ids.ObjectID) {
	o.mu.Lock()
	for i, c := range o.cached {
		if c == id {
			o.cached = append(o.cached[:i], o.cached[i+1:]...)
			break
		}
	}
	if o.oversized != nil && o.oversized.ID == id {
		o.oversized = nil
	}
	o.mu.Unlock()
	o.local.Release(id, cacheHolder)
}

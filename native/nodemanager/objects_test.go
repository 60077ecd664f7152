package nodemanager

import (
	"bytes"
	"context"
	"testing"
	"time"

	raypb "github.com/gray-cluster/gray/proto/ray/raypb"
)

func oid(n byte) ObjectID {
	var id ObjectID
	id[0], id[27] = n, 1
	return id
}

func updates(calls []any) []*raypb.ObjectLocationUpdate {
	var out []*raypb.ObjectLocationUpdate
	for _, c := range calls {
		out = append(out, c.(*raypb.UpdateObjectLocationBatchRequest).GetObjectLocationUpdates()...)
	}
	return out
}

func countKind(us []*raypb.ObjectLocationUpdate, k raypb.ObjectPlasmaLocationUpdate) int {
	n := 0
	for _, u := range us {
		if u.GetPlasmaLocationUpdate() == k {
			n++
		}
	}
	return n
}

func TestPinFreeAndLocationUpdates(t *testing.T) {
	tn := newTestNode(t, true, nil)
	ctx := context.Background()
	_, wid, cw, port := tn.driver(t, 1)
	owner := addrOf("127.0.0.1", port, wid)
	a, b, missing := oid(1), oid(2), oid(3)
	tn.store.Seal(a)
	tn.store.Seal(b)
	rep, err := tn.nm.PinObjectIDs(ctx, &raypb.PinObjectIDsRequest{OwnerAddress: owner, ObjectIds: [][]byte{a[:], missing[:], b[:]}})
	if err != nil {
		t.Fatal(err)
	}
	if s := rep.GetSuccesses(); len(s) != 3 || !s[0] || s[1] || !s[2] {
		t.Fatalf("successes: %v", s)
	}
	if tn.store.pins(a) != 1 || tn.store.pins(b) != 1 {
		t.Fatal("objects not pinned in the store")
	}
	calls := cw.rec.waitFor(t, "UpdateObjectLocationBatch", func(c []any) bool {
		return countKind(updates(c), raypb.ObjectPlasmaLocationUpdate_ADDED) >= 2
	})
	req := calls[0].(*raypb.UpdateObjectLocationBatchRequest)
	if !bytes.Equal(req.GetIntendedWorkerId(), wid) || !bytes.Equal(req.GetNodeId(), tn.r.cfg.NodeID) {
		t.Fatalf("location update: %v", req)
	}
	// Pinning twice does not pin twice.
	tn.nm.PinObjectIDs(ctx, &raypb.PinObjectIDsRequest{OwnerAddress: owner, ObjectIds: [][]byte{a[:]}})
	if tn.store.pins(a) != 1 {
		t.Fatalf("pins after a second PinObjectIDs: %d", tn.store.pins(a))
	}
	if _, err := tn.nm.FreeLocalObjects(ctx, &raypb.FreeLocalObjectsRequest{ObjectIds: [][]byte{a[:]}}); err != nil {
		t.Fatal(err)
	}
	cw.rec.waitFor(t, "UpdateObjectLocationBatch", func(c []any) bool {
		return countKind(updates(c), raypb.ObjectPlasmaLocationUpdate_REMOVED) >= 1
	})
	if tn.store.pins(a) != 0 || tn.store.Contains(a) {
		t.Fatal("freed object still pinned or present")
	}
}

// Objects pinned for an owner are released when the owner goes.
func TestOwnerDeathUnpins(t *testing.T) {
	tn := newTestNode(t, true, nil)
	ctx := context.Background()
	sock, wid, _, port := tn.driver(t, 1)
	a := oid(9)
	tn.store.Seal(a)
	tn.nm.PinObjectIDs(ctx, &raypb.PinObjectIDsRequest{OwnerAddress: addrOf("127.0.0.1", port, wid), ObjectIds: [][]byte{a[:]}})
	sock.conn.Close()
	tn.store.waitUntil(t, "the dead owner's object to be unpinned", func() bool { return tn.store.pins(a) == 0 })
}

func TestWaitRequest(t *testing.T) {
	tn := newTestNode(t, true, nil)
	sock, _, _, _ := tn.driver(t, 1)
	a, b := oid(1), oid(2)
	tn.store.Seal(a)
	// One of two required, already there.
	sock.send(msgWaitRequest, buildIDsMessage(msgWaitRequest, [][]byte{a[:], b[:]}, 1, 5000, nil))
	body, err := sock.expect(msgWaitReply)
	if err != nil {
		t.Fatal(err)
	}
	found, remaining := parseWaitReplyBody(body)
	if len(found) != 1 || !bytes.Equal(found[0], a[:]) || len(remaining) != 1 || !bytes.Equal(remaining[0], b[:]) {
		t.Fatalf("found %x remaining %x", found, remaining)
	}
	// Both required: held until b is sealed.
	sock.send(msgWaitRequest, buildIDsMessage(msgWaitRequest, [][]byte{a[:], b[:]}, 2, -1, nil))
	go func() {
		tn.r.mu.Lock() // let the raylet start waiting first (best effort; correctness does not depend on it)
		tn.r.mu.Unlock()
		tn.store.Seal(b)
	}()
	body, err = sock.expect(msgWaitReply)
	if err != nil {
		t.Fatal(err)
	}
	if found, remaining = parseWaitReplyBody(body); len(found) != 2 || len(remaining) != 0 {
		t.Fatalf("found %x remaining %x", found, remaining)
	}
	// More sealed than required: only num_required come back as found
	// (the stock core worker aborts on more).
	sock.send(msgWaitRequest, buildIDsMessage(msgWaitRequest, [][]byte{a[:], b[:]}, 1, 5000, nil))
	body, err = sock.expect(msgWaitReply)
	if err != nil {
		t.Fatal(err)
	}
	if found, remaining = parseWaitReplyBody(body); len(found) != 1 || !bytes.Equal(found[0], a[:]) || len(remaining) != 1 {
		t.Fatalf("one required of two sealed: found %x remaining %x", found, remaining)
	}
	// Timeout: reply with what is there.
	c := oid(3)
	start := time.Now()
	sock.send(msgWaitRequest, buildIDsMessage(msgWaitRequest, [][]byte{c[:]}, 1, 100, nil))
	body, err = sock.expect(msgWaitReply)
	if err != nil {
		t.Fatal(err)
	}
	if found, remaining = parseWaitReplyBody(body); len(found) != 0 || len(remaining) != 1 || time.Since(start) < 100*time.Millisecond {
		t.Fatalf("timeout wait: found %x remaining %x after %v", found, remaining, time.Since(start))
	}
}

func TestActorCallArgsAndFree(t *testing.T) {
	tn := newTestNode(t, true, nil)
	ctx := context.Background()
	waitLease(t, tn.requestAsync(ctx, leaseSpec(1, jobID(1), owner1, map[string]float64{"CPU": 1}), false))
	w := tn.nextSpawn(t)
	a := oid(5)
	task := bytes.Repeat([]byte{0x42}, 24)
	w.sock.send(msgWaitForActorCallArgs, buildIDsMessage(msgWaitForActorCallArgs, [][]byte{a[:]}, 2, 0, task))
	tn.store.Seal(a)
	calls := w.cw.rec.waitFor(t, "ActorCallArgWaitComplete", atLeast(1))
	req := calls[0].(*raypb.ActorCallArgWaitCompleteRequest)
	if !bytes.Equal(req.GetTaskId(), task) || req.GetAttemptNumber() != 2 || !bytes.Equal(req.GetIntendedWorkerId(), w.id[:]) {
		t.Fatalf("ActorCallArgWaitComplete: %v", req)
	}
	// FreeObjectsInObjectStoreRequest deletes from the store.
	w.sock.send(msgFreeObjectsInObjectStore, buildIDsMessage(msgFreeObjectsInObjectStore, [][]byte{a[:]}, 0, 0, nil))
	tn.store.waitUntil(t, "the object to be deleted", func() bool { return !tn.store.Contains(a) })
}

package provider

import (
	"io"
	"log/slog"
	"slices"
	"testing"

	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/internal/nodewire"
	"github.com/gray-cluster/gray/objectstore"
	pb "github.com/gray-cluster/gray/proto/nodepb"
)

// After a head restart the provider lists what its cache holds, newest
// first; asked back, it pushes what it has, reports what it lost as
// missing, pushes a result to come only if it is already here, and forgets
// what the head drops.
func TestReturnObjectsAnswersTheRestartedHead(t *testing.T) {
	p := &Provider{events: make(chan *pb.NodeMessage, 16), log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	o := newObjects(p, 1<<20)
	job := ids.JobFromInt(1)
	newID := func() ids.ObjectID { return ids.NewTaskID(ids.NilActorFor(job)).ReturnID(1) }
	kept, dropped, lost, toCome := newID(), newID(), newID(), newID()
	for _, id := range []ids.ObjectID{kept, dropped} {
		o.remember(&objectstore.Object{ID: id, Size: 3, Chunks: [][]byte{[]byte("abc")}})
	}
	if got := o.heldIDs(); !slices.Equal(got, []ids.ObjectID{dropped, kept}) {
		t.Fatalf("held %v, want newest first", got)
	}
	o.returnObjects(&pb.ReturnObjects{
		Held:    nodewire.IDs([]ids.ObjectID{kept, lost}),
		Pending: nodewire.IDs([]ids.ObjectID{toCome}),
		Drop:    nodewire.IDs([]ids.ObjectID{dropped}),
	})
	var results []*pb.ObjectChunk
	for len(p.events) > 0 {
		results = append(results, (<-p.events).GetResult())
	}
	if len(results) != 2 {
		t.Fatalf("sent %d results, want 2 (the kept one, the lost one as missing)", len(results))
	}
	if id, _ := ids.ObjectFromBytes(results[0].ObjectId); id != kept || string(results[0].Data) != "abc" || results[0].Missing {
		t.Fatalf("first result %v, want the kept object's value", results[0])
	}
	if id, _ := ids.ObjectFromBytes(results[1].ObjectId); id != lost || !results[1].Missing {
		t.Fatalf("second result %v, want the lost object as missing", results[1])
	}
	if got := o.heldIDs(); !slices.Equal(got, []ids.ObjectID{kept}) || o.held(dropped) != nil {
		t.Fatalf("held %v after the drop", got)
	}
}

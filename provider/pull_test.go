package provider

import (
	"bytes"
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/objectstore"
	"github.com/gray-cluster/gray/objstream"
	pb "github.com/gray-cluster/gray/proto/nodepb"
)

// source serves ranges of obj like a holder or the head would, failing the
// ranges fail says to.
func source(t *testing.T, obj *objectstore.Object, fail func(off int64) error, served *atomic.Int64) rangeFunc {
	return func(_ context.Context, _ int, id ids.ObjectID, off, n int64) (*objstream.Range, error) {
		if err := fail(off); err != nil {
			return nil, err
		}
		var msgs []*pb.ObjectChunk
		if err := objstream.SendRange(obj, off, n, func(m *pb.ObjectChunk) error { msgs = append(msgs, m); return nil }); err != nil {
			t.Fatal(err)
		}
		r, err := objstream.ReceiveRange(func() (*pb.ObjectChunk, error) { m := msgs[0]; msgs = msgs[1:]; return m, nil }, 0)
		if err == nil {
			served.Add(int64(len(r.Data)))
		}
		return r, err
	}
}

var errBroken = errors.New("broken mid-transfer")

// A transfer that breaks part-way keeps the ranges it got; another source
// (the head) fills exactly the gaps, and the pieces assemble into the
// object.
func TestPullResumesFromAnotherSource(t *testing.T) {
	data := make([]byte, 5<<20+777)
	for i := range data {
		data[i] = byte(i * 13)
	}
	id := ids.NewTaskID(ids.NilActorFor(ids.JobFromInt(1))).ReturnID(1)
	obj := &objectstore.Object{ID: id, Size: int64(len(data)), Chunks: [][]byte{data[:1<<20], data[1<<20:]}}
	var fromPeer, fromHead atomic.Int64
	// The peer fails every range past 2 MiB.
	peer := source(t, obj, func(off int64) error {
		if off >= 2<<20 {
			return errBroken
		}
		return nil
	}, &fromPeer)
	head := source(t, obj, func(int64) error { return nil }, &fromHead)
	ctx := context.Background()
	parts, err := pullStriped(ctx, peer, 4, id, nil)
	if !errors.Is(err, errBroken) || len(parts) == 0 {
		t.Fatalf("peer pull: %d parts, err %v", len(parts), err)
	}
	missing := gaps(parts)
	if len(missing) == 0 {
		t.Fatal("a failed transfer left no gaps")
	}
	parts, err = pullStriped(ctx, head, 3, id, parts)
	if err != nil {
		t.Fatal(err)
	}
	if g := gaps(parts); len(g) != 0 {
		t.Fatalf("gaps left: %v", g)
	}
	got, err := objstream.Assemble(parts)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(bytes.Join(got.Chunks, nil), data) {
		t.Fatal("assembled object differs")
	}
	var gap int64
	for _, s := range missing {
		gap += s.n
	}
	if fromPeer.Load()+fromHead.Load() != int64(len(data)) || fromHead.Load() != gap {
		t.Fatalf("peer sent %d, head %d (gaps %d) of %d bytes", fromPeer.Load(), fromHead.Load(), gap, len(data))
	}
}

func TestGaps(t *testing.T) {
	r := func(off, n int64) *objstream.Range {
		return &objstream.Range{Total: 100, Offset: off, Data: make([]byte, n)}
	}
	got := gaps([]*objstream.Range{r(50, 10), r(0, 20), r(90, 10)})
	want := []span{{20, 30}, {60, 30}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("gaps %v, want %v", got, want)
	}
	if g := gaps([]*objstream.Range{r(0, 100)}); len(g) != 0 {
		t.Fatalf("a whole object has gaps %v", g)
	}
}

func TestRangeSize(t *testing.T) {
	for _, tc := range []struct {
		n    int64
		k    int
		want int64
	}{
		{64 << 20, 48, (64<<20 + 47) / 48}, // large: one range per stream
		{2 << 20, 48, MinRangeBytes},       // small: no range under the minimum
		{100, 48, 100},                     // tiny: one range
		{10 << 20, 0, 10 << 20},            // no streams: one range
	} {
		if got := rangeSize(tc.n, tc.k); got != tc.want {
			t.Errorf("rangeSize(%d, %d) = %d, want %d", tc.n, tc.k, got, tc.want)
		}
		if got := rangeSize(tc.n, tc.k); (tc.n+got-1)/got > int64(max(tc.k, 1)) {
			t.Errorf("rangeSize(%d, %d) = %d makes more ranges than streams", tc.n, tc.k, got)
		}
	}
}

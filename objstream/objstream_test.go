package objstream

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/objectstore"
	pb "github.com/gray-cluster/gray/proto/nodepb"
)

// pipe collects sent messages and replays them to a receiver.
type pipe struct{ msgs []*pb.ObjectChunk }

func (p *pipe) send(m *pb.ObjectChunk) error { p.msgs = append(p.msgs, m); return nil }
func (p *pipe) recv() (*pb.ObjectChunk, error) {
	if len(p.msgs) == 0 {
		return nil, io.EOF
	}
	m := p.msgs[0]
	p.msgs = p.msgs[1:]
	return m, nil
}

func randomObject(rnd *rand.Rand) (*objectstore.Object, []byte) {
	var all []byte
	obj := &objectstore.Object{ID: ids.NewTaskID(ids.NilActorFor(ids.JobFromInt(1))).ReturnID(1)}
	for range rnd.IntN(5) + 1 {
		c := make([]byte, rnd.IntN(3*MessageSize))
		for i := range c {
			c[i] = byte(rnd.Uint32())
		}
		obj.Chunks = append(obj.Chunks, c)
		all = append(all, c...)
	}
	obj.Size = int64(len(all))
	return obj, all
}

// Any cut of any object into ranges, sent and received, reassembles to the
// same bytes; the assembly collects pieces in any order.
func TestRangesReassemble(t *testing.T) {
	for seed := range uint64(60) {
		rnd := rand.New(rand.NewPCG(seed, 7))
		obj, all := randomObject(rnd)
		var cuts []int64
		for off := int64(0); off < obj.Size; {
			n := min(int64(rnd.IntN(2*MessageSize)+1), obj.Size-off)
			cuts = append(cuts, off, n)
			off += n
		}
		if obj.Size == 0 {
			cuts = []int64{0, 0}
		}
		var parts []*Range
		for i := 0; i < len(cuts); i += 2 {
			p := &pipe{}
			if err := SendRange(obj, cuts[i], cuts[i+1], p.send); err != nil {
				t.Fatal(err)
			}
			r, err := ReceiveRange(p.recv, 0)
			if err != nil {
				t.Fatalf("seed %d: %v", seed, err)
			}
			if !bytes.Equal(r.Data, all[cuts[i]:cuts[i]+cuts[i+1]]) {
				t.Fatalf("seed %d: range [%d,+%d) differs", seed, cuts[i], cuts[i+1])
			}
			parts = append(parts, r)
		}
		rnd.Shuffle(len(parts), func(i, j int) { parts[i], parts[j] = parts[j], parts[i] })
		var a Assembly
		var got *objectstore.Object
		for i, r := range parts {
			o, err := a.Add(r, time.Unix(0, 0))
			if err != nil {
				t.Fatal(err)
			}
			if (o != nil) != (i == len(parts)-1) {
				t.Fatalf("seed %d: object complete after %d of %d parts", seed, i+1, len(parts))
			}
			got = o
		}
		if !bytes.Equal(bytes.Join(got.Chunks, nil), all) || got.Size != obj.Size {
			t.Fatalf("seed %d: assembled object differs", seed)
		}
	}
}

func TestRangeErrors(t *testing.T) {
	obj, _ := randomObject(rand.New(rand.NewPCG(1, 2)))
	if err := SendRange(obj, obj.Size, 1, (&pipe{}).send); !errors.Is(err, ErrBadRange) {
		t.Fatalf("range past the end: %v", err)
	}
	p := &pipe{}
	_ = SendRange(obj, 0, obj.Size, p.send)
	if _, err := ReceiveRange(p.recv, obj.Size-1); !errors.Is(err, ErrOversized) {
		t.Fatalf("object above the limit: %v", err)
	}
	p = &pipe{}
	_ = SendRange(obj, 0, obj.Size, p.send)
	p.msgs = p.msgs[:len(p.msgs)-1]
	if len(p.msgs) > 0 {
		if _, err := ReceiveRange(p.recv, 0); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("truncated stream: %v", err)
		}
	}
	if _, err := Assemble([]*Range{{Total: 10, Offset: 0, Data: make([]byte, 4)}, {Total: 10, Offset: 5, Data: make([]byte, 5)}}); !errors.Is(err, ErrBadRange) {
		t.Fatalf("gap: %v", err)
	}
}

package clientserver

import (
	"bytes"
	"io"
	"log/slog"
	"math/rand"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/gray-cluster/gray/gcs"
	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/objectstore"
	pb "github.com/gray-cluster/gray/proto/rayclientpb"
	"github.com/gray-cluster/gray/taskspec"
)

// TestSendChunksProperty checks that sendChunks re-cuts arbitrary segments
// into ChunkSize pieces whose concatenation is the segments', and that
// starting at chunk k yields exactly the tail of the full stream.
func TestSendChunksProperty(t *testing.T) {
	rng := rand.New(rand.NewSource(11))
	// collect keeps a copy of each chunk: with reuse the buffer is recycled.
	collect := func(out *[]*pb.GetResponse) func(*pb.GetResponse) error {
		return func(r *pb.GetResponse) error {
			c := proto.Clone(r).(*pb.GetResponse) // copies Data
			*out = append(*out, c)
			return nil
		}
	}
	for iter := 0; iter < 12; iter++ {
		reuse := iter%2 == 1
		var segs [][]byte
		var whole []byte
		for n := rng.Intn(6); n >= 0; n-- {
			var size int
			switch rng.Intn(4) {
			case 0:
				size = 0
			case 1:
				size = rng.Intn(300)
			case 2:
				size = ChunkSize - 2 + rng.Intn(5) // around a boundary
			default:
				size = rng.Intn(3 * ChunkSize)
			}
			seg := make([]byte, size)
			rng.Read(seg)
			segs = append(segs, seg)
			whole = append(whole, seg...)
		}
		var full []*pb.GetResponse
		if err := sendChunks(segs, 0, reuse, collect(&full)); err != nil {
			t.Fatal(err)
		}
		wantN := max(1, (len(whole)+ChunkSize-1)/ChunkSize)
		if len(full) != wantN {
			t.Fatalf("iter %d: %d chunks for %d bytes, want %d", iter, len(full), len(whole), wantN)
		}
		var got []byte
		for i, r := range full {
			if int(r.ChunkId) != i || int(r.TotalChunks) != wantN || r.TotalSize != uint64(len(whole)) || !r.Valid {
				t.Fatalf("iter %d chunk %d: id %d total %d size %d", iter, i, r.ChunkId, r.TotalChunks, r.TotalSize)
			}
			if i < wantN-1 && len(r.Data) != ChunkSize {
				t.Fatalf("iter %d: chunk %d has %d bytes, want %d", iter, i, len(r.Data), ChunkSize)
			}
			got = append(got, r.Data...)
		}
		if !bytes.Equal(got, whole) {
			t.Fatalf("iter %d: chunks do not concatenate to the segments", iter)
		}
		start := rng.Intn(wantN)
		var tail []*pb.GetResponse
		if err := sendChunks(segs, start, reuse, collect(&tail)); err != nil {
			t.Fatal(err)
		}
		if len(tail) != wantN-start {
			t.Fatalf("iter %d: start %d gave %d chunks, want %d", iter, start, len(tail), wantN-start)
		}
		for i, r := range tail {
			w := full[start+i]
			if r.ChunkId != w.ChunkId || !bytes.Equal(r.Data, w.Data) {
				t.Fatalf("iter %d: resumed chunk %d differs", iter, r.ChunkId)
			}
		}
	}
}

type fakeNode struct{}

func (fakeNode) NodeID() ids.NodeID                    { return ids.NodeID{1} }
func (fakeNode) Submit(*taskspec.TaskSpec) error       { return nil }
func (fakeNode) Cancel(ids.TaskID, bool) error         { return nil }
func (fakeNode) Total() map[string]float64             { return map[string]float64{"CPU": 1} }
func (fakeNode) Available() map[string]float64         { return map[string]float64{"CPU": 1} }
func (fakeNode) WorkerJob(string) (ids.JobID, bool)    { return ids.JobID{}, false }
func (fakeNode) WorkerBlocked(string) func()           { return func() {} }
func (fakeNode) CreateActor(*taskspec.ActorSpec) error { return nil }
func (fakeNode) SubmitActorTask(*taskspec.ActorCall) error {
	return nil
}
func (fakeNode) KillActor(ids.ActorID, bool) error { return nil }
func (fakeNode) Nodes() []gcs.NodeInfo {
	return []gcs.NodeInfo{{ID: ids.NodeID{1}, IsHead: true, State: gcs.NodeAlive}}
}
func (fakeNode) WorkerNode(string) (ids.NodeID, bool) { return ids.NodeID{1}, true }

func newTestServer(t *testing.T) (*Server, *objectstore.Store) {
	t.Helper()
	store := objectstore.New(1 << 30)
	s, err := New(Config{Store: store, KV: gcs.NewMemKV(), Jobs: gcs.NewJobs(), Node: fakeNode{},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return s, store
}

// TestResentChunkedPutLeavesNoBuffer: after a reconnect the stock client
// resends every unacknowledged request, and it re-chunks a put from the
// start. The final chunk is answered from the replay cache, so the chunks
// collected before it must not stay buffered in the session.
func TestResentChunkedPutLeavesNoBuffer(t *testing.T) {
	s, store := newTestServer(t)
	ss := newSession("0123456789abcdef0123456789abcdef", "")
	ss.out = newOutbox()
	data := bytes.Repeat([]byte{7}, 3000)
	sendPut := func() {
		for i := 0; i < 3; i++ {
			s.handleData(ss, &pb.DataRequest{ReqId: 5, Type: &pb.DataRequest_Put{Put: &pb.PutRequest{
				Data: data[i*1000 : (i+1)*1000], ChunkId: int32(i), TotalChunks: 3, TotalSize: 3000}}})
		}
	}
	sendPut()
	sendPut() // the resend after a reconnect
	answers := ss.out.drain()
	if len(answers) != 2 || !bytes.Equal(answers[0].GetPut().GetId(), answers[1].GetPut().GetId()) {
		t.Fatalf("answers to the put and its resend: %v", answers)
	}
	if store.Len() != 1 {
		t.Fatalf("store holds %d objects, want 1", store.Len())
	}
	ss.mu.Lock()
	left := len(ss.putChunks)
	ss.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d put buffers left in the session after the resend was answered", left)
	}

	// The same holds for a task whose arguments came in chunks (here one
	// that fails to schedule: its answer is cached all the same).
	sendTask := func() {
		for i := 0; i < 3; i++ {
			s.handleData(ss, &pb.DataRequest{ReqId: 6, Type: &pb.DataRequest_Task{Task: &pb.ClientTask{
				Type: pb.ClientTask_FUNCTION, Name: "f", PayloadId: make([]byte, ids.ObjectIDSize),
				Data: data[i*1000 : (i+1)*1000], ChunkId: int32(i), TotalChunks: 3}}})
		}
	}
	sendTask()
	sendTask()
	if answers := ss.out.drain(); len(answers) != 2 || answers[0].GetTaskTicket() == nil {
		t.Fatalf("answers to the task and its resend: %v", answers)
	}
	ss.mu.Lock()
	left = len(ss.taskChunks)
	ss.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d task buffers left in the session after the resend was answered", left)
	}
}

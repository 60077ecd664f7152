package clientserver_test

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"math"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/gray-cluster/gray/head"
	"github.com/gray-cluster/gray/internal/testcluster"
	pb "github.com/gray-cluster/gray/proto/rayclientpb"
)

var (
	hasRayOnce sync.Once
	hasRay     bool
)

// startPool starts an in-process pool without prestarted workers, or skips
// the test when the worker Python cannot import ray.
func startPool(t *testing.T) *head.Head {
	t.Helper()
	hasRayOnce.Do(func() { hasRay = testcluster.HasRay() })
	if !hasRay {
		t.Skip("no Python with ray[client] (create .venv or set GRAY_PYTHON)")
	}
	return testcluster.Start(t, testcluster.Options{PrestartWorkers: 0})
}

// rawClient speaks the Ray Client protocol with the generated Go stubs, the
// way the stock Python client does: one client_id per session, sent as
// metadata on every call.
type rawClient struct {
	t        *testing.T
	clientID string
	driver   pb.RayletDriverClient
	data     pb.RayletDataStreamerClient
}

func newClientID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b[:]) // 32 hex chars, like uuid4().hex
}

func dial(t *testing.T, h *head.Head) *rawClient {
	t.Helper()
	conn, err := grpc.NewClient(h.ClientAddr(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		// The stock client allows 2 GiB messages; chunks are 5 MiB.
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(math.MaxInt32), grpc.MaxCallSendMsgSize(math.MaxInt32)),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &rawClient{t: t, clientID: newClientID(), driver: pb.NewRayletDriverClient(conn), data: pb.NewRayletDataStreamerClient(conn)}
}

// ctx returns the test's context carrying the session metadata plus extra
// key/value pairs.
func (c *rawClient) ctx(extra ...string) context.Context {
	return c.ctxAs(c.clientID, "False", extra...)
}

func (c *rawClient) ctxAs(clientID, reconnecting string, extra ...string) context.Context {
	kv := append([]string{"client_id", clientID, "reconnecting", reconnecting}, extra...)
	return metadata.NewOutgoingContext(c.t.Context(), metadata.Pairs(kv...))
}

// dataStream is one Datapath stream used request by request.
type dataStream struct {
	t      *testing.T
	stream grpc.BidiStreamingClient[pb.DataRequest, pb.DataResponse]
	next   int32
}

func (c *rawClient) openData() *dataStream {
	c.t.Helper()
	s, err := c.data.Datapath(c.ctx())
	if err != nil {
		c.t.Fatal(err)
	}
	return &dataStream{t: c.t, stream: s, next: 1}
}

// connect opens the data stream and does the client's handshake: init with
// an empty job_config, then connection_info.
func (c *rawClient) connect() (*dataStream, *pb.ConnectionInfoResponse) {
	c.t.Helper()
	d := c.openData()
	init := d.call(&pb.DataRequest{Type: &pb.DataRequest_Init{Init: &pb.InitRequest{}}}).GetInit()
	if init == nil || !init.Ok {
		c.t.Fatalf("init = %v", init)
	}
	info := d.call(&pb.DataRequest{Type: &pb.DataRequest_ConnectionInfo{ConnectionInfo: &pb.ConnectionInfoRequest{}}}).GetConnectionInfo()
	if info == nil {
		c.t.Fatal("no connection_info response")
	}
	return d, info
}

func (d *dataStream) reqID() int32 {
	id := d.next
	d.next++
	return id
}

func (d *dataStream) send(req *pb.DataRequest) {
	d.t.Helper()
	if err := d.stream.Send(req); err != nil {
		d.t.Fatalf("send req %d: %v", req.ReqId, err)
	}
}

// recv returns the next response, which must answer reqID.
func (d *dataStream) recv(reqID int32) *pb.DataResponse {
	d.t.Helper()
	resp, err := d.stream.Recv()
	if err != nil {
		d.t.Fatalf("waiting for the response to req %d: %v", reqID, err)
	}
	if resp.ReqId != reqID {
		d.t.Fatalf("got a response to req %d while waiting for req %d: %v", resp.ReqId, reqID, resp)
	}
	return resp
}

// call sends req under a fresh req_id and returns its response.
func (d *dataStream) call(req *pb.DataRequest) *pb.DataResponse {
	d.t.Helper()
	req.ReqId = d.reqID()
	d.send(req)
	return d.recv(req.ReqId)
}

// put sends data as one put split into chunkSize pieces under one req_id.
func (d *dataStream) put(data []byte, chunkSize int) *pb.PutResponse {
	d.t.Helper()
	id := d.reqID()
	total := (len(data) + chunkSize - 1) / chunkSize
	if total == 0 {
		total = 1
	}
	for i := 0; i < total; i++ {
		end := min(len(data), (i+1)*chunkSize)
		d.send(&pb.DataRequest{ReqId: id, Type: &pb.DataRequest_Put{Put: &pb.PutRequest{
			Data: data[i*chunkSize : end], ChunkId: int32(i), TotalChunks: int32(total), TotalSize: int64(len(data)),
		}}})
	}
	p := d.recv(id).GetPut()
	if p == nil {
		d.t.Fatalf("no put response to req %d", id)
	}
	return p
}

// closeAndDrain half-closes the stream and reads until the server ends it.
func (d *dataStream) closeAndDrain() error {
	if err := d.stream.CloseSend(); err != nil {
		return err
	}
	for {
		if _, err := d.stream.Recv(); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// getObject runs GetObject and returns every chunk until the stream ends.
func (c *rawClient) getObject(req *pb.GetRequest) ([]*pb.GetResponse, error) {
	c.t.Helper()
	stream, err := c.driver.GetObject(c.ctx(), req)
	if err != nil {
		return nil, err
	}
	var out []*pb.GetResponse
	for {
		r, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, r)
	}
}

// bytesPickle returns a protocol 5 pickle of a Python bytes object whose
// total length is size, filled with pseudo-random bytes from seed.
func bytesPickle(size int, seed uint64) []byte {
	const head = 2 + 1 + 4 // PROTO 5, BINBYTES, uint32 length
	out := make([]byte, size)
	out[0], out[1], out[2] = 0x80, 5, 'B'
	binary.LittleEndian.PutUint32(out[3:], uint32(size-head-1))
	x := seed | 1
	for i := head; i < size-1; i++ { // xorshift: cheap and deterministic
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		out[i] = byte(x)
	}
	out[size-1] = '.'
	return out
}

// eventually polls cond until it holds or a generous deadline passes; only
// for effects that the protocol gives no event for.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("%s: still false at the deadline", what)
		case <-tick.C:
		}
	}
}

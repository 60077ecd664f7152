package clientserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/internal/pickle"
	"github.com/gray-cluster/gray/objectstore"
	pb "github.com/gray-cluster/gray/proto/rayclientpb"
	"github.com/gray-cluster/gray/rayerr"
)

// sessionFor finds the session named by the call's client_id metadata.
func (s *Server) sessionFor(ctx context.Context) (*session, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	clientID := mdValue(md, "client_id")
	if clientID == "" {
		return nil, fmt.Errorf("no client_id in the request metadata")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ss := s.sessions[clientID]
	if ss == nil {
		return nil, fmt.Errorf("no session for client %s", clientID)
	}
	if err := s.checkOwner(ctx, ss); err != nil {
		return nil, err
	}
	return ss, nil
}

// parseIDs reads the object ids of a get or wait: each must be one the
// session holds (the stock server looks them up in the client's own refs).
func (s *Server) parseIDs(ctx context.Context, raw [][]byte, ss *session) ([]ids.ObjectID, error) {
	out := make([]ids.ObjectID, len(raw))
	for i, b := range raw {
		oid, err := ids.ObjectFromBytes(b)
		if err != nil {
			return nil, err
		}
		if !s.store.Contains(oid) {
			s.awaitRestored(ctx, ss, oid)
		}
		if !s.store.Contains(oid) {
			if err := ss.lostAtRestart(oid); err != nil {
				return nil, err
			}
		}
		if !s.store.Contains(oid) || !s.mayUse(ss, oid) {
			return nil, notHeldError{fmt.Sprintf("ClientObjectRef %s is not found for client %s", oid.Hex(), ss.clientID)}
		}
		out[i] = oid
	}
	return out, nil
}

// waitAll waits until every object is sealed or the deadline passes.
func (s *Server) waitAll(ctx context.Context, list []ids.ObjectID) ([]*objectstore.Object, error) {
	objs := make([]*objectstore.Object, len(list))
	for i, id := range list {
		obj, err := s.store.Wait(ctx, id)
		if err != nil {
			return nil, err
		}
		if obj == nil {
			return nil, fmt.Errorf("%w: %s", objectstore.ErrNotFound, id.Hex())
		}
		objs[i] = obj
	}
	return objs, nil
}

// GetObject serves a synchronous ray.get: one pickled list of the values,
// streamed in chunks, or a pickled exception.
func (s *Server) GetObject(req *pb.GetRequest, stream pb.RayletDriver_GetObjectServer) error {
	ctx := stream.Context()
	fail := func(b []byte) error { return stream.Send(&pb.GetResponse{Valid: false, Error: b}) }
	ss, err := s.sessionFor(ctx)
	if err != nil {
		return fail(s.errorPickle(rayerr.ValueError(err.Error())))
	}
	timeout := time.Duration(float64(req.Timeout) * float64(time.Second))
	if timeout <= 0 {
		timeout = time.Millisecond
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// After a head restart this may wait for the providers (within the
	// get's timeout: the client asks again).
	list, err := s.parseIDs(wctx, req.Ids, ss)
	if err != nil {
		if ctx.Err() != nil {
			return status.FromContextError(ctx.Err()).Err()
		}
		if wctx.Err() != nil {
			return fail(s.errorPickle(rayerr.GetTimeout()))
		}
		return fail(s.errorPickle(rayerr.Of(err, rayerr.ValueError)))
	}
	if s.log.Enabled(ctx, slog.LevelDebug) {
		s.log.Debug("get", "objects", hexList(list), "client", ss.clientID)
	}
	release := s.blockWorker(ss)
	objs, err := s.waitAll(wctx, list)
	release()
	if err != nil {
		if ctx.Err() != nil {
			return status.FromContextError(ctx.Err()).Err()
		}
		if wctx.Err() != nil {
			return fail(s.errorPickle(rayerr.GetTimeout()))
		}
		return fail(s.errorPickle(rayerr.ObjectLost(err.Error())))
	}
	values := make([][][]byte, len(objs))
	for i, o := range objs {
		if o.IsError {
			return fail(concat(o.Chunks))
		}
		values[i] = o.Chunks
	}
	for _, o := range objs {
		s.borrow(ss, o)
	}
	// Send encodes the message before returning, so one buffer serves all chunks.
	return sendChunks(pickle.WrapList(values), int(req.StartChunkId), true, func(c *pb.GetResponse) error {
		return stream.Send(c)
	})
}

// blockWorker lets a worker blocked in ray.get give back its CPU, as Ray does,
// so nested tasks cannot deadlock the node. It returns the undo function.
func (s *Server) blockWorker(ss *session) func() {
	if ss.workerID == "" {
		return func() {}
	}
	if b, ok := s.cfg.Node.(interface {
		WorkerBlocked(string) func()
	}); ok {
		return b.WorkerBlocked(ss.workerID)
	}
	return func() {}
}

func concat(chunks [][]byte) []byte {
	if len(chunks) == 1 {
		return chunks[0]
	}
	n := 0
	for _, c := range chunks {
		n += len(c)
	}
	out := make([]byte, 0, n)
	for _, c := range chunks {
		out = append(out, c...)
	}
	return out
}

// sendChunks re-cuts segments into ChunkSize messages starting at chunk
// start, copying one chunk at a time (the value is never assembled whole).
// With reuse, one buffer is recycled: send must be done with it on return.
func sendChunks(segs [][]byte, start int, reuse bool, send func(*pb.GetResponse) error) error {
	var total int64
	for _, s := range segs {
		total += int64(len(s))
	}
	n := int((total + ChunkSize - 1) / ChunkSize)
	if n == 0 {
		n = 1
	}
	seg, off := 0, 0
	skip := int64(start) * ChunkSize
	for skip > 0 && seg < len(segs) {
		rem := int64(len(segs[seg]) - off)
		if skip >= rem {
			skip -= rem
			seg++
			off = 0
			continue
		}
		off += int(skip)
		skip = 0
	}
	var shared []byte
	for id := start; id < n; id++ {
		size := int64(ChunkSize)
		if rem := total - int64(id)*ChunkSize; rem < size {
			size = rem
		}
		var buf []byte
		if reuse {
			if shared == nil {
				shared = make([]byte, 0, min(total, ChunkSize))
			}
			buf = shared[:0]
		} else {
			buf = make([]byte, 0, size)
		}
		for int64(len(buf)) < size && seg < len(segs) {
			want := int(size) - len(buf)
			avail := len(segs[seg]) - off
			if avail > want {
				buf = append(buf, segs[seg][off:off+want]...)
				off += want
				break
			}
			buf = append(buf, segs[seg][off:]...)
			seg++
			off = 0
		}
		err := send(&pb.GetResponse{Valid: true, Data: buf, ChunkId: int32(id), TotalChunks: int32(n), TotalSize: uint64(total)})
		if err != nil {
			return err
		}
	}
	return nil
}

// asyncGet answers a Datapath get (ref.future(), await ref): when the object
// is ready its single value is pushed in chunks under the request's id, from
// the request's start chunk. A request re-sent after a reconnect replaces
// the one still running for the same id (which stops at its next chunk).
func (s *Server) asyncGet(ss *session, reqID int32, g *pb.GetRequest) {
	ctx, cancel := context.WithCancel(s.ctx)
	ss.mu.Lock()
	op := &asyncGetOp{out: ss.out, ctx: ctx, cancel: cancel}
	if old := ss.asyncGets[reqID]; old != nil {
		old.cancel()
	}
	ss.asyncGets[reqID] = op
	ss.mu.Unlock()
	done := func() {
		cancel()
		ss.mu.Lock()
		if ss.asyncGets[reqID] == op {
			delete(ss.asyncGets, reqID)
		}
		ss.mu.Unlock()
	}
	send := func(r *pb.GetResponse) bool {
		if op.ctx.Err() != nil {
			return false
		}
		return ss.sendOn(op.out, &pb.DataResponse{ReqId: reqID, Type: &pb.DataResponse_Get{Get: r}})
	}
	sendErr := func(b []byte) { send(&pb.GetResponse{Valid: false, Error: b}) }
	go func() {
		defer done()
		// Parsed here: after a head restart it may wait for the providers.
		list, err := s.parseIDs(op.ctx, g.Ids, ss)
		if err == nil && len(list) != 1 {
			err = fmt.Errorf("an asynchronous get takes exactly one id, got %d", len(list))
		}
		if err != nil {
			sendErr(s.errorPickle(rayerr.Of(err, rayerr.ValueError)))
			return
		}
		s.log.Debug("async get", "object", list[0].Hex(), "client", ss.clientID, "start_chunk", g.StartChunkId)
		obj, err := s.store.Wait(op.ctx, list[0])
		if err != nil || obj == nil {
			if op.ctx.Err() == nil {
				sendErr(s.errorPickle(rayerr.ObjectLost(list[0].Hex())))
			}
			return
		}
		if obj.IsError {
			sendErr(concat(obj.Chunks))
			return
		}
		s.borrow(ss, obj)
		_ = sendChunks(obj.Chunks, int(g.StartChunkId), false, func(c *pb.GetResponse) error {
			if !send(c) {
				return errAsyncGetReplaced
			}
			return nil
		})
	}()
}

// errAsyncGetReplaced stops an async get whose stream was replaced.
var errAsyncGetReplaced = errors.New("async get answered on a newer stream")

// WaitObject implements ray.wait: the first num_returns ready refs, in the
// order given.
func (s *Server) WaitObject(ctx context.Context, req *pb.WaitRequest) (*pb.WaitResponse, error) {
	ss, err := s.sessionFor(ctx)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	wctx := ctx
	if req.Timeout >= 0 {
		var cancel context.CancelFunc
		wctx, cancel = context.WithTimeout(ctx, time.Duration(req.Timeout*float64(time.Second)))
		defer cancel()
	}
	list, err := s.parseIDs(wctx, req.ObjectIds, ss)
	if err != nil {
		if wctx.Err() != nil && ctx.Err() == nil {
			// Timed out waiting for the providers after a head restart:
			// nothing is ready yet.
			return &pb.WaitResponse{Valid: true, RemainingObjectIds: req.ObjectIds}, nil
		}
		return &pb.WaitResponse{Valid: false}, nil
	}
	if len(list) == 0 {
		return &pb.WaitResponse{Valid: true}, nil
	}
	want := int(req.NumReturns)
	if err := checkWait(list, want); err != nil {
		// The stock server answers ray.wait's ValueError with valid=false.
		s.log.Debug("wait refused", "client", ss.clientID, "err", err)
		return &pb.WaitResponse{Valid: false}, nil
	}
	readyCh := make(chan int, len(list))
	for i, id := range list {
		ch, err := s.store.ReadyChan(id)
		if err != nil {
			return &pb.WaitResponse{Valid: false}, nil
		}
		go func(i int, ch <-chan struct{}) {
			select {
			case <-ch:
				readyCh <- i
			case <-wctx.Done():
			}
		}(i, ch)
	}
	release := s.blockWorker(ss)
	got := 0
wait:
	for got < want {
		select {
		case <-readyCh:
			got++
		case <-wctx.Done():
			break wait
		}
	}
	release()
	resp := &pb.WaitResponse{Valid: true}
	for _, id := range list {
		ready := false
		if s.store.Ready(id) {
			ready = true
		}
		if ready && len(resp.ReadyObjectIds) < want {
			resp.ReadyObjectIds = append(resp.ReadyObjectIds, append([]byte(nil), id[:]...))
		} else {
			resp.RemainingObjectIds = append(resp.RemainingObjectIds, append([]byte(nil), id[:]...))
		}
	}
	return resp, nil
}

func hexList(list []ids.ObjectID) string {
	parts := make([]string, len(list))
	for i, id := range list {
		parts[i] = id.Hex()
	}
	return strings.Join(parts, ",")
}

// checkWait applies ray.wait's argument rules: unique refs, and
// 0 < num_returns <= len(refs).
func checkWait(list []ids.ObjectID, want int) error {
	seen := make(map[ids.ObjectID]bool, len(list))
	for _, id := range list {
		if seen[id] {
			return fmt.Errorf("%w: wait requires a list of unique object refs", ErrBadWait)
		}
		seen[id] = true
	}
	if want <= 0 {
		return fmt.Errorf("%w: invalid number of objects to return %d", ErrBadWait, want)
	}
	if want > len(list) {
		return fmt.Errorf("%w: num_returns %d is greater than the %d refs given", ErrBadWait, want, len(list))
	}
	return nil
}

// ErrNotHeld is a request naming an object the session holds no reference
// to (another session's, or one it released).
var ErrNotHeld = errors.New("object not held by the session")

// notHeldError is ErrNotHeld with the stock server's message.
type notHeldError struct{ msg string }

func (e notHeldError) Error() string        { return e.msg }
func (e notHeldError) Is(target error) bool { return target == ErrNotHeld }

// ErrBadWait is a ray.wait whose arguments Ray rejects.
var ErrBadWait = errors.New("invalid ray.wait arguments")

// borrow makes a session that receives a value holding refs a holder of
// those refs, as the stock server registers every ref it sends a client.
func (s *Server) borrow(ss *session, o *objectstore.Object) {
	for _, c := range o.Contained {
		if s.isAnchorObject(c) {
			continue // the session holds the anchor's actors instead
		}
		if s.store.HoldOnce(c, ss.holder()) {
			ss.track(c)
		}
	}
	s.borrowActors(ss, o)
}

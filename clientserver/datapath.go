package clientserver

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/gray-cluster/gray/gcs"
	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/internal/pickle"
	"github.com/gray-cluster/gray/objectstore"
	pb "github.com/gray-cluster/gray/proto/rayclientpb"
	"github.com/gray-cluster/gray/rayerr"
)

func mdValue(md metadata.MD, key string) string {
	if v := md.Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}

// Datapath is the main bidirectional channel of a client session.
func (s *Server) Datapath(stream pb.RayletDataStreamer_DatapathServer) error {
	md, _ := metadata.FromIncomingContext(stream.Context())
	clientID := mdValue(md, "client_id")
	if clientID == "" {
		return status.Error(codes.InvalidArgument, "missing client_id metadata")
	}
	reconnecting := mdValue(md, "reconnecting") == "True"
	c, _ := callerFrom(stream.Context())
	ss, err := s.attach(clientID, c, reconnecting)
	if err != nil {
		return err
	}
	ss.mu.Lock()
	if p, ok := peer.FromContext(stream.Context()); ok && ss.peer == nil {
		ss.peer = p.Addr
	}
	out := newOutbox()
	ss.out = out
	ss.generation++
	gen := ss.generation
	ss.mu.Unlock()

	sendErr := make(chan error, 1)
	go func() { sendErr <- s.sendLoop(stream, out) }()

	var recvErr error
	for {
		req, err := stream.Recv()
		if err != nil {
			if err != io.EOF {
				recvErr = err
			}
			break
		}
		if cleanup := s.handleData(ss, req); cleanup {
			break
		}
	}
	close(out.done)
	<-sendErr
	s.detach(ss, gen)
	return recvErr
}

func (s *Server) sendLoop(stream pb.RayletDataStreamer_DatapathServer, out *outbox) error {
	for {
		for _, r := range out.drain() {
			if err := stream.Send(r); err != nil {
				return err
			}
		}
		select {
		case <-out.notify:
		case <-out.done:
			for _, r := range out.drain() {
				if err := stream.Send(r); err != nil {
					return err
				}
			}
			return nil
		}
	}
}

// attach finds or creates the session for a new data stream.
func (s *Server) attach(clientID string, c caller, reconnecting bool) (*session, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss, ok := s.sessions[clientID]
	if reconnecting && !ok && c.workerID != "" {
		// A worker that outlived the head it was connected to (a provider's,
		// across a head restart): its refs are its worker's, reported over
		// its raylet, so a new session for it loses nothing.
		s.log.Info("worker reconnected to a session this head does not know; starting it anew", "worker", c.workerID)
	} else if reconnecting && (!ok || ss.ended) {
		return nil, status.Error(codes.NotFound, "Attempted to reconnect to a session that has already been cleaned up.")
	}
	if ok && (ss.workerID != c.workerID || ss.account != c.id.Account) {
		// Another identity's client id: no session to share.
		return nil, status.Error(codes.PermissionDenied, errNotYours.Error())
	}
	if !ok {
		ss = newSession(clientID, c.workerID)
		ss.account = c.id.Account
		s.sessions[clientID] = ss
	}
	ss.mu.Lock()
	ss.streams++
	ss.mu.Unlock()
	return ss, nil
}

// detach runs when a data stream ends: clean up now after connection_cleanup,
// or after the reconnect grace period unless the client came back.
func (s *Server) detach(ss *session, gen int) {
	ss.mu.Lock()
	ss.streams--
	cleanup := ss.cleanupReq || ss.grace <= 0
	grace := ss.grace
	ss.mu.Unlock()
	if cleanup {
		s.endSession(ss)
		return
	}
	time.AfterFunc(grace, func() {
		ss.mu.Lock()
		stale := ss.generation == gen && ss.streams == 0
		ss.mu.Unlock()
		if stale {
			s.endSession(ss)
		}
	})
}

// endSession releases everything the session held.
func (s *Server) endSession(ss *session) {
	ss.mu.Lock()
	if ss.ended {
		ss.mu.Unlock()
		return
	}
	ss.ended = true
	job, initialized := ss.job, ss.initialized
	for id, ch := range ss.logs {
		close(ch)
		delete(ss.logs, id)
	}
	ss.mu.Unlock()
	s.mu.Lock()
	delete(s.sessions, ss.clientID)
	// Forget the function/class payloads the session put (their objects go
	// with the session's references) and its KV retry answers.
	for _, key := range ss.clientRefs {
		delete(s.objMeta, s.clientRefs[key])
		delete(s.clientRefs, key)
	}
	prefix := ss.clientID + "/"
	for k := range s.kvDedupe {
		if strings.HasPrefix(k, prefix) {
			delete(s.kvDedupe, k)
		}
	}
	s.mu.Unlock()
	s.forgetSession(ss)
	n := s.store.ReleaseAll(ss.holder())
	s.endSessionActors(ss)
	if initialized && ss.workerID == "" {
		s.cfg.Jobs.Finish(job, time.Now())
		if pgs, ok := s.cfg.Node.(interface{ RemoveJobPlacementGroups(ids.JobID) }); ok {
			pgs.RemoveJobPlacementGroups(job) // as Ray does when a driver exits
		}
		if s.cfg.Billing != nil {
			if _, err := s.cfg.Billing.CloseSession(job.Hex()); err != nil {
				s.log.Warn("billing: cannot close session escrow", "job", job.Hex(), "err", err)
			}
		}
	}
	s.log.Debug("session ended", "client", ss.clientID, "released", n)
}

// handleData processes one request; it reports true after connection_cleanup.
func (s *Server) handleData(ss *session, req *pb.DataRequest) bool {
	switch t := req.Type.(type) {
	case *pb.DataRequest_Acknowledge:
		ss.ack(t.Acknowledge.ReqId)
		return false
	case *pb.DataRequest_ConnectionCleanup:
		ss.mu.Lock()
		ss.cleanupReq = true
		ss.mu.Unlock()
		ss.send(&pb.DataResponse{ReqId: req.ReqId, Type: &pb.DataResponse_ConnectionCleanup{ConnectionCleanup: &pb.ConnectionCleanupResponse{}}}, false)
		return true
	case *pb.DataRequest_Get:
		if t.Get.Asynchronous {
			s.asyncGet(ss, req.ReqId, t.Get)
			return false
		}
	case *pb.DataRequest_Put:
		if t.Put.TotalChunks > 1 && t.Put.ChunkId < t.Put.TotalChunks-1 {
			if !ss.answered(req.ReqId) {
				s.collectPut(ss, req.ReqId, t.Put)
			}
			return false
		}
	case *pb.DataRequest_Task:
		if t.Task.TotalChunks > 1 && t.Task.ChunkId < t.Task.TotalChunks-1 {
			if !ss.answered(req.ReqId) {
				s.collectTask(ss, req.ReqId, t.Task)
			}
			return false
		}
	}
	if !ss.admit(req.ReqId) {
		return false
	}
	resp := &pb.DataResponse{ReqId: req.ReqId}
	switch t := req.Type.(type) {
	case *pb.DataRequest_Init:
		resp.Type = &pb.DataResponse_Init{Init: s.init(ss, t.Init)}
	case *pb.DataRequest_ConnectionInfo:
		resp.Type = &pb.DataResponse_ConnectionInfo{ConnectionInfo: &pb.ConnectionInfoResponse{
			NumClients:    int32(s.NumClients()),
			RayVersion:    s.cfg.RayVersion,
			RayCommit:     "gray",
			PythonVersion: s.cfg.PythonVersion,
		}}
	case *pb.DataRequest_Put:
		resp.Type = &pb.DataResponse_Put{Put: s.finishPut(ss, req.ReqId, t.Put)}
	case *pb.DataRequest_Release:
		resp.Type = &pb.DataResponse_Release{Release: s.release(ss, t.Release)}
	case *pb.DataRequest_Task:
		ticket, deferred := s.schedule(ss, req.ReqId, t.Task)
		if deferred {
			return false
		}
		resp.Type = &pb.DataResponse_TaskTicket{TaskTicket: ticket}
	case *pb.DataRequest_Terminate:
		resp.Type = &pb.DataResponse_Terminate{Terminate: s.terminate(ss, t.Terminate)}
	case *pb.DataRequest_ListNamedActors:
		resp.Type = &pb.DataResponse_ListNamedActors{ListNamedActors: &pb.ClientListNamedActorsResponse{ActorsJson: s.listNamedActors(ss, t.ListNamedActors.AllNamespaces)}}
	case *pb.DataRequest_PrepRuntimeEnv:
		resp.Type = &pb.DataResponse_PrepRuntimeEnv{PrepRuntimeEnv: &pb.PrepRuntimeEnvResponse{}}
	case *pb.DataRequest_Get:
		// Synchronous gets use GetObject; answer a Datapath one the same way.
		s.asyncGet(ss, req.ReqId, t.Get)
		return false
	default:
		s.log.Warn("unknown datapath request", "client", ss.clientID, "req", req.ReqId)
		ss.mu.Lock()
		delete(ss.inflight, req.ReqId)
		ss.mu.Unlock()
		return false
	}
	ss.send(resp, true)
	return false
}

func (s *Server) collectPut(ss *session, reqID int32, p *pb.PutRequest) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	buf := ss.putChunks[reqID]
	if buf == nil || p.ChunkId == 0 {
		buf = &chunkBuf{total: p.TotalChunks, clientRef: p.ClientRefId}
		ss.putChunks[reqID] = buf
	}
	if int(p.ChunkId) != len(buf.chunks) {
		return // a resent chunk we already have
	}
	buf.chunks = append(buf.chunks, p.Data)
	buf.size += int64(len(p.Data))
}

func (s *Server) finishPut(ss *session, reqID int32, p *pb.PutRequest) *pb.PutResponse {
	chunks := [][]byte{p.Data}
	size := int64(len(p.Data))
	clientRef := p.ClientRefId
	if p.TotalChunks > 1 {
		ss.mu.Lock()
		buf := ss.putChunks[reqID]
		delete(ss.putChunks, reqID)
		ss.mu.Unlock()
		if buf == nil || len(buf.chunks) != int(p.TotalChunks)-1 {
			return &pb.PutResponse{Valid: false, Error: s.errorPickle(rayerr.ValueError(fmt.Sprintf("put request %d is missing chunks", reqID)))}
		}
		chunks = append(buf.chunks, p.Data)
		size = buf.size + int64(len(p.Data))
		clientRef = buf.clientRef
	}
	job := s.jobOf(ss)
	oid := ids.NewTaskID(ids.NilActorFor(job)).ReturnID(1)
	obj := &objectstore.Object{ID: oid, Chunks: chunks, Size: size}
	stubs, err := scanChunks(chunks)
	if err != nil {
		return &pb.PutResponse{Valid: false, Error: s.errorPickle(rayerr.ValueError("could not read the pickled object: " + err.Error()))}
	}
	var selfRefs []string
	for _, st := range stubs {
		switch st.Type {
		case "Object", "RemoteFunc", "RemoteActor":
			if cid, err := ids.ObjectFromBytes(st.RefID); err == nil {
				obj.Contained = append(obj.Contained, cid)
			}
		case "RemoteFuncSelfReference", "RemoteActorSelfReference":
			selfRefs = append(selfRefs, fmt.Sprintf("%x", st.RefID))
		}
	}
	if err := s.store.Put(obj, ss.holder()); err != nil {
		return &pb.PutResponse{Valid: false, Error: s.errorPickle(rayerr.Of(err, rayerr.ValueError))}
	}
	ss.track(oid)
	if needsPutCheck(ss, chunks, size, clientRef) {
		if errb := s.checkPut(ss, oid); errb != nil {
			// The value does not load: the put fails, as on a stock head.
			s.store.Release(oid, ss.holder())
			ss.untrack(oid)
			return &pb.PutResponse{Valid: false, Error: errb}
		}
	}
	s.mu.Lock()
	if len(clientRef) > 0 {
		key := fmt.Sprintf("%x", clientRef)
		s.clientRefs[key] = oid
		ss.mu.Lock()
		ss.clientRefs = append(ss.clientRefs, key)
		ss.mu.Unlock()
	}
	if len(selfRefs) > 0 {
		s.objMeta[oid] = &objectMeta{selfRefs: selfRefs}
	}
	s.mu.Unlock()
	if len(clientRef) > 0 && ss.workerID == "" {
		// A function or class pickle: tasks name it by id from now on.
		s.persistPayload(ss, gcs.SessionPayload{Object: oid, ClientRef: clientRef, SelfRefs: selfRefs, Data: concat(chunks)})
	}
	if actors := actorStubs(stubs); len(actors) > 0 {
		s.objectHoldsActors(oid, actors, ss.workerID != "" && isAnchor(chunks))
	}
	s.log.Debug("put", "object", oid.String(), "size", size)
	return &pb.PutResponse{Id: oid[:], Valid: true}
}

// stubMarker appears in every pickle that carries a Ray reference.
var stubMarker = []byte("PickleStub")

// scanChunks finds the reference stubs in a pickle given as chunks; pickles
// without the stub class name cannot contain any and are not parsed.
func scanChunks(chunks [][]byte) ([]pickle.Stub, error) {
	if !hasStubMarker(chunks) {
		return nil, nil
	}
	if len(chunks) == 1 {
		return pickle.ScanStubsBytes(chunks[0])
	}
	readers := make([]io.Reader, len(chunks))
	for i, c := range chunks {
		readers[i] = bytes.NewReader(c)
	}
	return pickle.ScanStubs(io.MultiReader(readers...))
}

// hasStubMarker reports whether the stub class name occurs in the chunks.
func hasStubMarker(chunks [][]byte) bool {
	for i, c := range chunks {
		if bytes.Contains(c, stubMarker) {
			return true
		}
		if i > 0 { // the name may straddle a chunk boundary
			prev := chunks[i-1]
			tail := prev[max(0, len(prev)-len(stubMarker)):]
			head := c[:min(len(c), len(stubMarker))]
			if bytes.Contains(append(append([]byte{}, tail...), head...), stubMarker) {
				return true
			}
		}
	}
	return false
}

func (s *Server) release(ss *session, r *pb.ReleaseRequest) *pb.ReleaseResponse {
	ok := make([]bool, len(r.Ids))
	for i, raw := range r.Ids {
		if oid, err := ids.ObjectFromBytes(raw); err == nil {
			ok[i] = s.store.Release(oid, ss.holder())
			if ss.workerID == "" {
				ss.untrack(oid)
			}
			continue
		}
		if aid, err := ids.ActorFromBytes(raw); err == nil {
			ok[i] = s.releaseActor(ss, aid)
		}
	}
	return &pb.ReleaseResponse{Ok: ok}
}

// errorPickle is the pickled exception e, for a reply's error field.
func (s *Server) errorPickle(e rayerr.Exception) []byte { return e.Pickle() }

// jobOf is the job a session's requests act for.
func (s *Server) jobOf(ss *session) ids.JobID {
	if ss.workerID != "" {
		if job, ok := s.cfg.Node.WorkerJob(ss.workerID); ok {
			return job
		}
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.job
}

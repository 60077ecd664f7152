package clientproxy

import (
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/gray-cluster/gray/proto/rayclientpb"
)

// datapath relays a session's Datapath stream; the first stream of a
// client_id starts its server (its first message must be init).
func (p *Proxy) datapath(ss grpc.ServerStream, id string, md metadata.MD, method string) error {
	reconnecting := len(md.Get("reconnecting")) > 0 && md.Get("reconnecting")[0] == "True"
	p.mu.Lock()
	s := p.sessions[id]
	var first *[]byte
	if s == nil {
		if reconnecting {
			p.mu.Unlock()
			return status.Errorf(codes.NotFound, "ray client session %s was already cleaned up; reconnect failed", id)
		}
		s = &specific{clientID: id, exited: make(chan struct{}), ready: make(chan struct{}), grace: p.cfg.DefaultGrace}
		p.sessions[id] = s
		s.streams, s.gen = 1, 1
		p.mu.Unlock()
		var f []byte
		if err := ss.RecvMsg(&f); err != nil {
			p.forget(s)
			return err
		}
		var req pb.DataRequest
		if err := proto.Unmarshal(f, &req); err != nil || req.GetInit() == nil {
			p.forget(s)
			return status.Error(codes.InvalidArgument, "the first Datapath message of a ray client session must be init")
		}
		if g := req.GetInit().GetReconnectGracePeriod(); g > 0 {
			s.grace = time.Duration(g) * time.Second
		}
		p.wg.Add(1)
		go func() { defer p.wg.Done(); p.start(p.ctx, s) }()
		<-s.ready
		if s.err != nil {
			p.log.Warn("ray client session refused", "client_id", id, "err", s.err)
			p.forget(s)
			return ss.SendMsg(&pb.DataResponse{ReqId: req.GetReqId(),
				Type: &pb.DataResponse_Init{Init: &pb.InitResponse{Ok: false, Msg: s.err.Error()}}})
		}
		first = &f
	} else {
		s.streams++
		s.gen++
		p.mu.Unlock()
		select {
		case <-s.ready:
		case <-ss.Context().Done():
			p.streamEnded(s, false)
			return ss.Context().Err()
		}
		if s.err != nil {
			p.streamEnded(s, false)
			return status.Error(codes.Unavailable, s.err.Error())
		}
	}
	cleanup := false
	err := relay(ss, s, md, method, first, func(f []byte) {
		if hasField(f, fieldConnectionCleanup) {
			cleanup = true
		}
	})
	p.streamEnded(s, cleanup)
	return err
}

// forget drops s from the sessions (its server never started, or is gone).
func (p *Proxy) forget(s *specific) {
	p.mu.Lock()
	if p.sessions[s.clientID] == s {
		delete(p.sessions, s.clientID)
	}
	p.mu.Unlock()
}

// streamEnded stops the session's server now (the client cleaned up) or
// after the grace period unless the client reconnected meanwhile.
func (p *Proxy) streamEnded(s *specific, cleanup bool) {
	p.mu.Lock()
	s.streams--
	gen := s.gen
	p.mu.Unlock()
	stopIf := func() {
		p.mu.Lock()
		if s.streams > 0 || s.gen != gen || p.sessions[s.clientID] != s {
			p.mu.Unlock()
			return
		}
		delete(p.sessions, s.clientID)
		p.mu.Unlock()
		p.kill(s)
	}
	if cleanup {
		p.wg.Add(1)
		go func() { defer p.wg.Done(); stopIf() }()
		return
	}
	t := time.AfterFunc(s.grace, stopIf)
	go func() {
		select {
		case <-p.ctx.Done():
			t.Stop()
		case <-s.exited:
			t.Stop()
		}
	}()
}

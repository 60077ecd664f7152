package clientserver

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/gray-cluster/gray/auth"
	"github.com/gray-cluster/gray/internal/ids"
	pb "github.com/gray-cluster/gray/proto/rayclientpb"
)

// Metadata a worker runtime sends with its calls: its id and credential.
const (
	mdWorkerID   = "gray-worker-id"
	mdWorkerCred = "gray-worker-cred"
)

// unauthenticatedMsg is what Ray's servers answer a call without a valid
// token with (code UNAUTHENTICATED).
const unauthenticatedMsg = "Invalid or missing authentication token"

// authInitMsg is the InitResponse message of a refused connection: the
// stock client raises it at ray.init, without retrying, as
// ConnectionAbortedError("Initialization failure from server: ...").
const authInitMsg = "ray.exceptions.AuthenticationError: %s. Token authentication is enabled on this gray pool " +
	"(--auth-mode token): set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token) " +
	"to a token from `gray token create --account NAME`."

// refusedStreamHold is how long a refused data stream stays open after its
// answer, for the client to read it before the stream's end (the client's
// close waits for that end).
const refusedStreamHold = 250 * time.Millisecond

// caller is who a call comes from.
type caller struct {
	id auth.Identity
	// workerID is set for a worker runtime; its account is that of the job
	// it runs (see accountOf).
	workerID string
}

type callerKey struct{}

func callerFrom(ctx context.Context) (caller, bool) {
	c, ok := ctx.Value(callerKey{}).(caller)
	return c, ok
}

// errWorkerCred refuses a worker id without a valid credential.
var errWorkerCred = errors.New("worker credential invalid")

// identify authenticates a call's metadata: a worker credential, or a token.
func (s *Server) identify(md metadata.MD) (caller, error) {
	if wid := mdValue(md, mdWorkerID); wid != "" {
		if s.cfg.Auth.Enabled() && !s.workerCredOK(wid, mdValue(md, mdWorkerCred)) {
			return caller{}, errWorkerCred
		}
		return caller{workerID: wid}, nil
	}
	tok, _ := auth.FromMetadata(md)
	id, err := s.cfg.Auth.Authenticate(tok)
	if err != nil {
		return caller{}, err
	}
	return caller{id: id}, nil
}

// workerCredOK checks a worker's credential against the key of the node the
// worker runs on.
func (s *Server) workerCredOK(workerID, cred string) bool {
	if s.cfg.WorkerKey == nil || cred == "" {
		return false
	}
	node, ok := s.cfg.Node.WorkerNode(workerID)
	if !ok {
		return false
	}
	return auth.CheckWorkerCredential(s.cfg.WorkerKey(node), workerID, cred)
}

// unaryAuth authenticates every unary call but the connect ping (which
// tells nothing: it lets the stock client get to the data stream, whose
// Init carries the refusal it shows without retrying).
func (s *Server) unaryAuth(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	c, err := s.identify(md)
	if err != nil {
		if ci, ok := req.(*pb.ClusterInfoRequest); ok && ci.Type == pb.ClusterInfoType_PING {
			return handler(ctx, req)
		}
		s.log.Debug("refused unauthenticated call", "method", info.FullMethod, "err", err)
		return nil, status.Error(codes.Unauthenticated, unauthenticatedMsg)
	}
	return handler(context.WithValue(ctx, callerKey{}, c), req)
}

// streamAuth authenticates every stream. A refused data stream answers the
// client's Init with the reason, then ends ABORTED with it (a code the
// client does not retry); a refused log stream ends UNAUTHENTICATED.
func (s *Server) streamAuth(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	md, _ := metadata.FromIncomingContext(ss.Context())
	c, err := s.identify(md)
	if err == nil {
		return handler(srv, &authedStream{ServerStream: ss, ctx: context.WithValue(ss.Context(), callerKey{}, c)})
	}
	s.log.Debug("refused unauthenticated stream", "method", info.FullMethod, "err", err)
	hold := func() {
		select {
		case <-ss.Context().Done():
		case <-time.After(refusedStreamHold):
		}
	}
	switch info.FullMethod {
	case pb.RayletDataStreamer_Datapath_FullMethodName:
		reason := auth.MsgInvalid
		if errors.Is(err, auth.ErrMissing) {
			reason = auth.MsgMissing
		}
		msg := fmt.Sprintf(authInitMsg, reason)
		req := new(pb.DataRequest)
		if rerr := ss.RecvMsg(req); rerr == nil && req.GetInit() != nil {
			_ = ss.SendMsg(&pb.DataResponse{ReqId: req.ReqId, Type: &pb.DataResponse_Init{Init: &pb.InitResponse{
				Ok: false, Msg: msg}}})
			hold()
		}
		return status.Error(codes.Aborted, msg)
	case pb.RayletLogStreamer_Logstream_FullMethodName:
		hold()
	}
	return status.Error(codes.Unauthenticated, unauthenticatedMsg)
}

type authedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (a *authedStream) Context() context.Context { return a.ctx }

// errNotYours refuses a call on a session another identity opened.
var errNotYours = errors.New("the session belongs to another client")

// checkOwner verifies that the caller of ctx may act in session ss: the
// same worker, or a driver of the same account.
func (s *Server) checkOwner(ctx context.Context, ss *session) error {
	c, ok := callerFrom(ctx)
	if !ok {
		return nil // called inside the server
	}
	if c.workerID != ss.workerID || (c.workerID == "" && c.id.Account != ss.account) {
		return errNotYours
	}
	return nil
}

// accountOf is the account a session acts for: its driver's, or for a
// worker that of the job it now runs.
func (s *Server) accountOf(ss *session) string {
	if ss.workerID == "" {
		return ss.account
	}
	return s.jobAccount(s.jobOf(ss))
}

// JobAccount is the account that started a job ("" if unknown).
func (s *Server) JobAccount(job ids.JobID) string { return s.jobAccount(job) }

// jobAccount is the account that started a job ("" if unknown).
func (s *Server) jobAccount(job ids.JobID) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.jobAccounts[job]
}

func (s *Server) setJobAccount(job ids.JobID, account string) {
	s.mu.Lock()
	s.jobAccounts[job] = account
	s.mu.Unlock()
}

// sameAccount reports whether an object belongs to the session's account
// (by the job its id embeds). With auth off there is one account.
func (s *Server) sameAccount(ss *session, oid ids.ObjectID) bool {
	if !s.cfg.Auth.Enabled() {
		return true
	}
	acct := s.accountOf(ss)
	return acct != "" && s.jobAccount(oid.Task().Job()) == acct
}

// mayUse reports whether a session may get, wait on or pass an object.
func (s *Server) mayUse(ss *session, oid ids.ObjectID) bool {
	return ss.holds(oid) && s.sameAccount(ss, oid)
}

// actorAllowed reports whether a session's account owns an actor.
func (s *Server) actorAllowed(ss *session, aid ids.ActorID) bool {
	if !s.cfg.Auth.Enabled() {
		return true
	}
	info, ok := s.cfg.Actors.Get(aid)
	return ok && info.Account != "" && info.Account == s.accountOf(ss)
}

// Package clientserver is gray's Ray Client front end: the three gRPC services
// (RayletDriver, RayletDataStreamer, RayletLogStreamer) that stock
// `ray.init("ray://...")` clients speak, with one session per client_id.
package clientserver

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/gray-cluster/gray/auth"
	"github.com/gray-cluster/gray/gcs"
	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/objectstore"
	pb "github.com/gray-cluster/gray/proto/rayclientpb"
	"github.com/gray-cluster/gray/taskhistory"
	"github.com/gray-cluster/gray/taskspec"
)

// ChunkSize is the Ray Client transfer chunk (OBJECT_TRANSFER_CHUNK_SIZE).
const ChunkSize = 5 << 20

// Node is what the front end needs from the node that runs tasks.
type Node interface {
	NodeID() ids.NodeID
	Submit(spec *taskspec.TaskSpec) error
	Cancel(id ids.TaskID, force bool) error
	Total() map[string]float64
	Available() map[string]float64
	// WorkerJob reports the job of the task a worker is running.
	WorkerJob(workerID string) (ids.JobID, bool)
	CreateActor(spec *taskspec.ActorSpec) error
	SubmitActorTask(call *taskspec.ActorCall) error
	KillActor(id ids.ActorID, noRestart bool) error
	// Nodes lists the cluster's nodes for ray.nodes().
	Nodes() []gcs.NodeInfo
	// WorkerNode reports the node a worker runs on.
	WorkerNode(workerID string) (ids.NodeID, bool)
}

// SessionBilling is the pool's accounting as the front end sees it: each
// client session has an escrow (keyed by its job id in hex), opened from the
// account of the token it authenticated with ("default" with auth off).
type SessionBilling interface {
	OpenSession(session, account string) error
	CloseSession(session string) (int64, error)
	// Admit refuses new work of a session whose escrow is spent.
	Admit(session string) error
}

// Config configures the front end.
type Config struct {
	// Addr is the TCP listen address (":10001").
	Addr          string
	RayVersion    string
	PythonVersion string
	NodeIP        string
	DashboardURL  string
	Store         *objectstore.Store
	KV            gcs.KV
	Jobs          *gcs.Jobs
	Actors        *gcs.Actors
	Node          Node
	// Billing, when set, meters sessions (nil: the pool is free).
	Billing SessionBilling
	// PackagesDir is where working_dir packages are unpacked.
	PackagesDir string
	// JobOrigin, when set, tells a session opened by a Jobs API
	// entrypoint (by its connection's peer address) from others.
	JobOrigin func(peer net.Addr) (JobOrigin, bool)
	Logger    *slog.Logger
	// MaxMessageSize bounds one gRPC message (the client allows 2 GiB).
	MaxMessageSize int
	// Auth authenticates every call (nil: auth disabled, one account).
	Auth *auth.Authenticator
	// WorkerKey returns the worker credential key of a node (auth.
	// NodeWorkerKey); in token mode a worker runtime's session needs it.
	WorkerKey func(ids.NodeID) []byte
	// TLS, when set, serves the port over TLS.
	TLS *tls.Config
	// Tasks, when set, records the tasks submitted (for the State API).
	Tasks *taskhistory.History
	// Sessions, when set, keeps the open driver sessions so that a
	// restarted head can resume them (see Restore).
	Sessions *gcs.Sessions
	// AwaitRestored, when set, waits (until ctx ends) for the providers
	// known from before a head restart to report the objects they hold;
	// a resumed session's get of an object its store lacks waits for it
	// before the object counts as lost.
	AwaitRestored func(ctx context.Context) error
}

// Server serves Ray Client sessions.
type Server struct {
	pb.UnimplementedRayletDriverServer
	pb.UnimplementedRayletDataStreamerServer
	pb.UnimplementedRayletLogStreamerServer

	cfg   Config
	log   *slog.Logger
	store *objectstore.Store
	grpc  *grpc.Server
	ln    net.Listener
	// plain serves tunnelled provider workers when the client port has TLS.
	plain   *grpc.Server
	plainLn net.Listener
	ctx     context.Context
	stop    context.CancelFunc

	mu         sync.Mutex
	sessions   map[string]*session
	clientRefs map[string]ids.ObjectID // client-side ref id (hex) -> object
	objMeta    map[ids.ObjectID]*objectMeta
	kvDedupe   map[string]*pb.KVPutResponse
	// actorHolders are the sessions holding a handle on each actor.
	actorHolders map[ids.ActorID]map[string]bool
	actorMeta    map[ids.ActorID]*actorMeta

	// objActors are the actors each stored object's value holds a handle
	// on (see actorrefs.go); holdSeq numbers pending-work holders.
	objActors map[ids.ObjectID][]ids.ActorID
	anchors   map[ids.ObjectID]bool
	holdSeq   atomic.Uint64

	// putCheckFn is the stored function put checks call (putcheck.go).
	putCheckFn ids.ObjectID

	// logSink carries server log records to the sessions' log streams.
	logSink *logSink

	// jobAccounts is the account that started each job (for isolation).
	jobAccounts map[ids.JobID]string
}

// objectMeta is what the front end remembers about a put payload.
type objectMeta struct {
	// selfRefs are client-side ref ids a function/class pickle refers to.
	selfRefs []string
}

// New builds a front end.
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil || cfg.KV == nil || cfg.Node == nil || cfg.Jobs == nil {
		return nil, fmt.Errorf("clientserver: store, kv, jobs and node are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Actors == nil {
		cfg.Actors = gcs.NewActors()
	}
	if cfg.RayVersion == "" {
		cfg.RayVersion = "2.60.0"
	}
	if cfg.MaxMessageSize == 0 {
		cfg.MaxMessageSize = math.MaxInt32
	}
	sink := newLogSink()
	return &Server{
		cfg:        cfg,
		log:        slog.New(&logTee{inner: cfg.Logger.Handler(), sink: sink}).With("component", "clientserver"),
		logSink:    sink,
		store:      cfg.Store,
		sessions:   map[string]*session{},
		clientRefs: map[string]ids.ObjectID{},
		objMeta:    map[ids.ObjectID]*objectMeta{},
		kvDedupe:   map[string]*pb.KVPutResponse{},

		actorHolders: map[ids.ActorID]map[string]bool{},
		actorMeta:    map[ids.ActorID]*actorMeta{},
		objActors:    map[ids.ObjectID][]ids.ActorID{},
		anchors:      map[ids.ObjectID]bool{},
		jobAccounts:  map[ids.JobID]string{},
	}, nil
}

// Listen binds the TCP address (so callers learn the port before Start).
func (s *Server) Listen() (net.Addr, error) {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("clientserver: listen %s: %w", s.cfg.Addr, err)
	}
	s.ln = ln
	return ln.Addr(), nil
}

// Start serves until Close.
func (s *Server) Start(ctx context.Context) error {
	if s.ln == nil {
		if _, err := s.Listen(); err != nil {
			return err
		}
	}
	if s.ctx == nil { // Restore may have set it up
		s.ctx, s.stop = context.WithCancel(ctx)
	}
	opts := []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(s.unaryAuth),
		grpc.ChainStreamInterceptor(s.streamAuth),
		grpc.MaxRecvMsgSize(s.cfg.MaxMessageSize),
		grpc.MaxSendMsgSize(math.MaxInt32),
		// The stock client pings every 30 s even when idle.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Minute}),
		grpc.InitialWindowSize(16 << 20),
		grpc.InitialConnWindowSize(64 << 20),
		grpc.ReadBufferSize(1 << 20),
		grpc.WriteBufferSize(1 << 20),
	}
	if s.cfg.TLS != nil {
		// Provider workers come through the pool's tunnel (QUIC, mutual
		// TLS already): they get a plain-text listener on loopback.
		pl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return fmt.Errorf("clientserver: tunnel listener: %w", err)
		}
		s.plainLn = pl
		s.plain = grpc.NewServer(opts...)
		s.register(s.plain)
		go func() { _ = s.plain.Serve(pl) }()
		opts = append(opts, grpc.Creds(credentials.NewTLS(s.cfg.TLS)))
	}
	s.grpc = grpc.NewServer(opts...)
	go s.publishServerLogs(s.ctx)
	go s.sweepLoop()
	s.register(s.grpc)
	go func() {
		if err := s.grpc.Serve(s.ln); err != nil {
			s.log.Error("grpc serve", "err", err)
		}
	}()
	return nil
}

func (s *Server) register(g *grpc.Server) {
	pb.RegisterRayletDriverServer(g, s)
	pb.RegisterRayletDataStreamerServer(g, s)
	pb.RegisterRayletLogStreamerServer(g, s)
}

// TunnelAddr is where connections that came through the pool's tunnel are
// delivered: the client port itself, or with TLS a plain-text loopback
// listener (the tunnel already encrypts and authenticates both ends).
func (s *Server) TunnelAddr() string {
	if s.plainLn != nil {
		return s.plainLn.Addr().String()
	}
	if s.ln != nil {
		return s.ln.Addr().String()
	}
	return ""
}

// Close stops serving and drops every session.
func (s *Server) Close() error {
	if s.stop != nil {
		s.stop()
	}
	if s.grpc != nil {
		done := make(chan struct{})
		go func() { s.grpc.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-time.After(2 * time.Second):
			s.grpc.Stop()
		}
	}
	if s.plain != nil {
		s.plain.Stop()
	}
	return nil
}

// NumClients counts connected driver sessions (workers excluded).
func (s *Server) NumClients() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, ss := range s.sessions {
		if ss.workerID == "" && ss.streams > 0 {
			n++
		}
	}
	return n
}

// Sessions lists driver sessions (for gray status).
func (s *Server) Sessions() []SessionInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []SessionInfo
	for _, ss := range s.sessions {
		if ss.workerID != "" {
			continue
		}
		out = append(out, SessionInfo{ClientID: ss.clientID, JobID: ss.job.Hex(), Namespace: ss.namespace, Account: ss.account})
	}
	return out
}

// SessionInfo describes one client session.
type SessionInfo struct {
	ClientID, JobID, Namespace string
	Account                    string `json:",omitempty"`
}

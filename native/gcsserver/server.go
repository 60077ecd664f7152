// Package gcsserver serves Ray 2.60.0's GCS gRPC services (gcs_service.proto
// and the autoscaler's AutoscalerStateService) so that stock Ray drivers,
// stock core workers and gray's native raylet can run against gray.
//
// The server keeps its tables in memory (the internal KV lives in the
// gcs.KV it is given, shared with the Ray Client front end); with
// Config.Tables the actor, job and node tables are also written through to
// a gcs.Store and loaded again when a server starts on it (see persist.go). It drives
// raylets (RequestWorkerLease, KillLocalActor, bundle reservations,
// GetResourceLoad polls) and core workers (PushTask of actor creation tasks,
// WaitForActorRefDeleted) as a gRPC client, and publishes table changes on
// Ray's GCS pub/sub channels.
//
// Acknowledged but not acted on: RuntimeEnvGcsService.PinRuntimeEnvURI (the
// pin is remembered until it expires, nothing is collected),
// RayEventExportGcsService.AddEvents, the autoscaler's ReportClusterConfig,
// NodeInfoGcsService.DrainNode and the autoscaler's DrainNode (the node is
// only marked draining: no new actors or bundles go there). Not served:
// ray.rpc.syncer.RaySyncer (stock raylets use it to learn each other's
// resources; gray's raylets do not need it) and the autoscaler's
// ResizeRayletResourceInstances (UNIMPLEMENTED).
package gcsserver

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/gray-cluster/gray/gcs"
	"github.com/gray-cluster/gray/proto/ray/autoscalerpb"
	"github.com/gray-cluster/gray/proto/ray/raypb"
)

// RayVersion is the Ray version the server reports (CheckAlive).
const RayVersion = "2.60.0"

// ClusterIDSize is the length of a Ray cluster id.
const ClusterIDSize = 28

// Ray's StatusCode values that the GCS puts in GcsStatus.code.
const (
	codeInvalid             = 4
	codeIOError             = 5
	codeCreationTaskError   = 16
	codeNotFound            = 17
	codeSchedulingCancelled = 19
	codeAlreadyExists       = 20
)

// Errors returned by New and the accessors.
var (
	ErrBadConfig = errors.New("gcsserver: bad config")
	ErrClosed    = errors.New("gcsserver: closed")

	errBadRequest = errors.New("malformed request")
)

// clusterIDKey is the gRPC metadata key carrying the cluster id.
const clusterIDKey = "ray_cluster_id"

// defaultSystemConfig is what GetInternalConfig returns when Config leaves it
// empty: a JSON object of RayConfig overrides. A stock node joining the
// cluster (ray start --address) requires the spilling key to be present.
const defaultSystemConfig = `{"automatic_object_spilling_enabled": false}`

// Config configures a Server.
type Config struct {
	// KV backs InternalKVGcsService (shared with the Ray Client front end).
	KV gcs.KV
	// Tables, when set, is the durable home of the actor, job and node
	// tables: New loads them, every change is written through (nil: memory
	// only).
	Tables *gcs.NativeTables
	// ClusterID is the 28-byte cluster id.
	ClusterID []byte
	Logger    *slog.Logger
	// Now is the clock (nil: time.Now).
	Now func() time.Time
	// SystemConfig is the JSON returned by GetInternalConfig ("" =
	// {"automatic_object_spilling_enabled": false}); it should match what
	// the raylets return from GetSystemConfig.
	SystemConfig string
	// NextJobID, when set, allocates job numbers (so that the Ray Client
	// front end and native drivers never share one); nil: 1, 2, 3, ...
	NextJobID func(context.Context) (uint32, error)
	// Dial opens client connections to raylets and core workers (nil: an
	// insecure grpc.NewClient).
	Dial func(addr string) (*grpc.ClientConn, error)

	// ResourcePollPeriod is how often each raylet's GetResourceLoad is
	// polled (0: 1 s; negative: never).
	ResourcePollPeriod time.Duration
	// NodeDeadAfter marks a raylet DEAD when it has not answered a poll for
	// this long (0: 10 s).
	NodeDeadAfter time.Duration
	// PollHold bounds how long a GcsSubscriberPoll is held (0: 20 s).
	PollHold time.Duration
	// SubscriberTimeout drops subscribers that stopped polling (0: 60 s).
	SubscriberTimeout time.Duration
	// TaskEventLimit bounds the task event ring (0: 10000).
	TaskEventLimit int
	// RetryDelay is the pause before re-trying a failed actor scheduling or
	// placement step (0: 500 ms).
	RetryDelay time.Duration
	// RequireClusterID rejects calls whose ray_cluster_id metadata is absent
	// (a present but different id is always rejected).
	RequireClusterID bool
}

// Server is the native GCS.
type Server struct {
	cfg   Config
	log   *slog.Logger
	now   func() time.Time
	cidHx string

	ctx    context.Context // cancelled by Close; every held call watches it
	cancel context.CancelFunc
	wg     sync.WaitGroup

	loopMu  sync.Mutex // orders goLoop's wg.Add before Close's wg.Wait
	closing bool

	ctrl *publisher // ControlPlanePubSubGcsService
	obs  *publisher // ObservabilityPubSubService

	conns *connPool

	mu         sync.Mutex
	nodes      map[string]*nodeEntry
	nodeOrder  []string
	nodesGen   chan struct{} // closed and replaced whenever nodes change
	jobs       map[string]*raypb.JobTableData
	jobOrder   []string
	nextJob    uint32
	workers    map[string]*raypb.WorkerTableData
	workerOrd  []string
	actors     map[string]*actor
	actorOrder []string
	named      map[nameKey]string // -> actor id
	pgs        map[string]*placementGroup
	pgOrder    []string
	leaseSeq   uint32
	spreadNext int
	uriPins    map[string]time.Time
	constraint *autoscalerpb.ClusterResourceConstraint
	events     *taskEventRing

	startOnce sync.Once
	closeOnce sync.Once
	stopWatch func() bool // stops Start's ctx watch
}

// New validates cfg and returns a server; call Register, then Start.
func New(cfg Config) (*Server, error) {
	if cfg.KV == nil {
		return nil, fmt.Errorf("%w: KV is nil", ErrBadConfig)
	}
	if len(cfg.ClusterID) != ClusterIDSize {
		return nil, fmt.Errorf("%w: cluster id is %d bytes, want %d", ErrBadConfig, len(cfg.ClusterID), ClusterIDSize)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.SystemConfig == "" {
		cfg.SystemConfig = defaultSystemConfig
	}
	if cfg.ResourcePollPeriod == 0 {
		cfg.ResourcePollPeriod = time.Second
	}
	if cfg.NodeDeadAfter == 0 {
		cfg.NodeDeadAfter = 10 * time.Second
	}
	if cfg.PollHold == 0 {
		cfg.PollHold = 20 * time.Second
	}
	if cfg.SubscriberTimeout == 0 {
		cfg.SubscriberTimeout = time.Minute
	}
	if cfg.TaskEventLimit == 0 {
		cfg.TaskEventLimit = 10000
	}
	if cfg.RetryDelay == 0 {
		cfg.RetryDelay = 500 * time.Millisecond
	}
	if cfg.Dial == nil {
		cfg.Dial = func(addr string) (*grpc.ClientConn, error) {
			return grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
				grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMessageSize), grpc.MaxCallSendMsgSize(MaxMessageSize)))
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "native-gcs"),
		now:      cfg.Now,
		cidHx:    hex.EncodeToString(cfg.ClusterID),
		ctx:      ctx,
		cancel:   cancel,
		nodes:    map[string]*nodeEntry{},
		nodesGen: make(chan struct{}),
		jobs:     map[string]*raypb.JobTableData{},
		nextJob:  1,
		workers:  map[string]*raypb.WorkerTableData{},
		actors:   map[string]*actor{},
		named:    map[nameKey]string{},
		pgs:      map[string]*placementGroup{},
		uriPins:  map[string]time.Time{},
		events:   newTaskEventRing(cfg.TaskEventLimit),
	}
	s.ctrl = newPublisher("control", cfg.Now, cfg.PollHold)
	s.obs = newPublisher("observability", cfg.Now, cfg.PollHold)
	s.conns = newConnPool(cfg.Dial, s.cidHx)
	if err := s.loadTables(ctx); err != nil {
		cancel()
		return nil, err
	}
	return s, nil
}

// ClusterID returns the cluster id.
func (s *Server) ClusterID() []byte { return append([]byte(nil), s.cfg.ClusterID...) }

// MaxMessageSize is the largest gRPC message the GCS sends or accepts, as
// Ray's max_grpc_message_size (pickled functions in the KV can be large).
const MaxMessageSize = 512 << 20

// ServerOptions returns the options a grpc.Server for this GCS should be
// built with: the ray_cluster_id check, Ray's message size limit, and a
// keepalive policy that tolerates the C++ clients' idle pings.
func (s *Server) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(s.checkClusterID),
		grpc.MaxRecvMsgSize(MaxMessageSize),
		grpc.MaxSendMsgSize(MaxMessageSize),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
	}
}

// NewGRPCServer builds a grpc.Server with ServerOptions (plus extra) and
// every service registered.
func (s *Server) NewGRPCServer(extra ...grpc.ServerOption) *grpc.Server {
	g := grpc.NewServer(append(s.ServerOptions(), extra...)...)
	s.Register(g)
	return g
}

// Register registers every GCS service on g.
func (s *Server) Register(g *grpc.Server) {
	raypb.RegisterNodeInfoGcsServiceServer(g, &nodeService{s: s})
	raypb.RegisterInternalKVGcsServiceServer(g, &kvService{s: s})
	raypb.RegisterJobInfoGcsServiceServer(g, &jobService{s: s})
	raypb.RegisterWorkerInfoGcsServiceServer(g, &workerService{s: s})
	raypb.RegisterActorInfoGcsServiceServer(g, &actorService{s: s})
	raypb.RegisterPlacementGroupInfoGcsServiceServer(g, &pgService{s: s})
	raypb.RegisterControlPlanePubSubGcsServiceServer(g, &ctrlPubSubService{s: s})
	raypb.RegisterObservabilityPubSubServiceServer(g, &obsPubSubService{s: s})
	raypb.RegisterNodeResourceInfoGcsServiceServer(g, &resourceService{s: s})
	raypb.RegisterTaskInfoGcsServiceServer(g, &taskService{s: s})
	raypb.RegisterRuntimeEnvGcsServiceServer(g, &runtimeEnvService{s: s})
	raypb.RegisterRayEventExportGcsServiceServer(g, &eventExportService{s: s})
	autoscalerpb.RegisterAutoscalerStateServiceServer(g, &autoscalerService{s: s})
	healthpb.RegisterHealthServer(g, health.NewServer()) // SERVING while up
}

// Start launches the background loops (raylet resource polls and health,
// subscriber expiry). It returns at once; ctx or Close stops the loops.
func (s *Server) Start(ctx context.Context) error {
	if s.ctx.Err() != nil {
		return ErrClosed
	}
	s.startOnce.Do(func() {
		s.dropStaleExports(ctx)
		s.mu.Lock()
		s.stopWatch = context.AfterFunc(ctx, s.Close)
		s.resumeLocked()
		s.mu.Unlock()
		s.goLoop(s.janitorLoop)
		if s.cfg.ResourcePollPeriod > 0 {
			s.goLoop(s.resourcePollLoop)
		}
	})
	return nil
}

// Close ends every held call and background loop and closes client
// connections. Held calls return with an error or an empty reply.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		stop := s.stopWatch
		s.mu.Unlock()
		if stop != nil {
			stop()
		}
		s.cancel()
		s.ctrl.close()
		s.obs.close()
		s.loopMu.Lock()
		s.closing = true
		s.loopMu.Unlock()
		s.wg.Wait()
		s.conns.close()
	})
}

// goLoop runs f in a goroutine that Close waits for; after Close it does
// nothing.
func (s *Server) goLoop(f func()) {
	s.loopMu.Lock()
	defer s.loopMu.Unlock()
	if s.closing {
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
}

// janitorLoop drops subscribers that stopped polling and expired URI pins.
func (s *Server) janitorLoop() {
	t := time.NewTicker(s.cfg.SubscriberTimeout / 4)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		s.ctrl.expire(s.cfg.SubscriberTimeout)
		s.obs.expire(s.cfg.SubscriberTimeout)
		now := s.now()
		s.mu.Lock()
		for uri, until := range s.uriPins {
			if now.After(until) {
				delete(s.uriPins, uri)
			}
		}
		s.mu.Unlock()
	}
}

// checkClusterID rejects a call whose ray_cluster_id metadata names another
// cluster (and, with RequireClusterID, one without it; GetClusterId is
// always allowed since that is how clients learn the id).
func (s *Server) checkClusterID(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if info.FullMethod == raypb.NodeInfoGcsService_GetClusterId_FullMethodName {
		return h(ctx, req)
	}
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get(clusterIDKey)
	if len(vals) == 0 {
		if s.cfg.RequireClusterID {
			return nil, status.Errorf(codes.Unauthenticated, "gray GCS: missing %s metadata", clusterIDKey)
		}
		return h(ctx, req)
	}
	if vals[0] != s.cidHx {
		return nil, status.Errorf(codes.Unauthenticated, "gray GCS: %s %q does not match this cluster (%s)", clusterIDKey, vals[0], s.cidHx)
	}
	return h(ctx, req)
}

// okStatus is the GcsStatus of a successful reply.
func okStatus() *raypb.GcsStatus { return &raypb.GcsStatus{} }

func errStatus(code int32, format string, args ...any) *raypb.GcsStatus {
	return &raypb.GcsStatus{Code: code, Message: fmt.Sprintf(format, args...)}
}

func hexID(b []byte) string { return hex.EncodeToString(b) }

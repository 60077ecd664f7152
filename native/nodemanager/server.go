// Package nodemanager is gray's raylet for stock Ray 2.60.0 core workers:
// the NodeManagerService gRPC server, the worker<->raylet unix socket, the
// pool of default_worker.py processes it starts, lease scheduling on the
// node's resources, object pinning in the local plasma store, and worker
// log forwarding to drivers, and the runtime_env set-ups it can do itself
// (env_vars; working_dir and py_modules packages the driver uploaded to
// the GCS KV, unpacked under <session_dir>/runtime_resources). It talks to
// the GCS only through Ray's GCS gRPC services (RegisterNode, AddJob,
// MarkJobFinished, ReportWorkerFailure, GcsPublish, ReportJobError,
// InternalKVGet).
package nodemanager

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"

	nodepb "github.com/gray-cluster/gray/proto/nodepb"
	raypb "github.com/gray-cluster/gray/proto/ray/raypb"
	"github.com/gray-cluster/gray/pyenv"
	"github.com/gray-cluster/gray/resledger"
)

var (
	// ErrConfig is an invalid Config.
	ErrConfig = errors.New("nodemanager: invalid config")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("nodemanager: closed")
)

// Config configures one raylet.
type Config struct {
	NodeID       []byte // 28 bytes
	NodeIP       string
	NodeName     string // default NodeIP
	GCSAddress   string // host:port of the GCS gRPC
	ClusterIDHex string // passed to workers as --cluster-id and sent as ray_cluster_id metadata
	SessionName  string // session_2026-...
	TempDir      string
	SessionDir   string // default TempDir/SessionName
	RayletSocket string // default <session_dir>/sockets/raylet
	PlasmaSocket string // default <session_dir>/sockets/plasma_store

	NodeManagerPort              int // 0 = pick
	ObjectManagerPort            int // advertised only
	MetricsAgentPort             int // advertised and passed to workers
	RuntimeEnvAgentPort          int
	MetricsExportPort            int
	DashboardAgentListenPort     int
	WebUI                        string // --webui for workers
	MinWorkerPort, MaxWorkerPort int    // range for workers' gRPC ports; 0,0 = any free port

	Resources map[string]float64 // CPU, GPU, memory, object_store_memory, custom
	// Ledger, when set, is the node's resource ledger shared with another
	// raylet on the same machine (the head's ray:// raylet); nil: a private
	// one built from Resources and GPUIDs.
	Ledger *resledger.Ledger
	GPUIDs []int // instance ids for GPU resource_mapping
	Labels map[string]string

	Python string // python with ray installed
	RayDir string // the ray package directory; default: asked from Python
	// WorkerEnv is added to every worker's environment (KEY=VALUE).
	WorkerEnv []string
	// WorkerDir is the workers' working directory ("" = this process's).
	WorkerDir string

	IsHead             bool
	NumPrestartWorkers int
	IdleWorkerTimeout  time.Duration // default 60s
	// WorkerRegisterTimeout kills a started worker that has not registered
	// (default 60s).
	WorkerRegisterTimeout time.Duration
	// MaxStartingWorkers bounds concurrent worker start-ups (default: CPUs, at least 1).
	MaxStartingWorkers int
	// KillGrace is how long an Exit/KillActor request may take before the
	// process is killed (default 5s).
	KillGrace time.Duration
	// SystemConfig overrides keys of the GetSystemConfig JSON (nil value
	// deletes a default key).
	SystemConfig map[string]any
	// LogPollInterval is how often worker log files are tailed (default
	// 200ms; negative disables log forwarding).
	LogPollInterval time.Duration
	// OnShutdown is called (once, in its own goroutine) when the GCS asks
	// this raylet to shut down.
	OnShutdown func(graceful bool)

	Store  ObjectStore
	Logger *slog.Logger
	// WrapListener, when set, wraps the NodeManagerService listener (the
	// head uses it to keep a local-only node to local peers).
	WrapListener func(net.Listener) net.Listener
	// Dial, when set, opens the raylet's connections to the GCS, to core
	// workers and to other raylets (a provider's raylet dials through
	// gray's tunnel); nil dials TCP directly.
	Dial DialFunc
	// ListenHost is the host NodeManagerService listens on ("" = NodeIP).
	// A provider's raylet advertises its pool address (NodeIP) and listens
	// on loopback, where gray's tunnel delivers its connections.
	ListenHost string
}

// Raylet is one node manager.
type Raylet struct {
	cfg    Config
	log    *slog.Logger
	nodeID WorkerID // same shape as a worker id (28 bytes)

	grpcSrv *grpc.Server
	lis     net.Listener
	unixLis net.Listener
	port    int

	gcs     *gcsClient
	workers *clientPool
	pkgs    *pkgCache      // runtime_env working_dir / py_modules packages
	pyenvs  *pyenv.Builder // runtime_env pip / uv environments
	view    clusterView    // the other nodes, for spillback
	pulls   *puller        // objects being fetched from other nodes

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	start  time.Time

	mu        sync.Mutex
	closed    bool
	res       *resledger.Member // the node's resources
	bundles   map[BundleKey]*bundleState
	byID      map[WorkerID]*worker
	queue     []*lease
	leases    map[string]*lease // granted, by lease id
	failures  map[string]*failureCause
	dead      map[WorkerID]time.Time // recently dead workers and drivers
	usedPorts map[int]bool
	nextPort  int
	starting  int
	// consecutive workers that died before registering, and when the next
	// start may happen
	startFailures int
	startAfter    time.Time
	firstDrive    bool
	jobs          map[string]*jobInfo
	pins          map[ObjectID]*pin
	shutdownOnce  sync.Once
	lastBusy      time.Time
	// changed is closed and replaced after every scheduling pass (tests
	// wait on it).
	changed chan struct{}

	owners *ownerNotifier

	// spawnHook replaces exec of default_worker.py (tests).
	spawnHook func(w *worker)
}

// WorkerID is a Ray WorkerID (28 bytes).
type WorkerID [28]byte

func (id WorkerID) String() string { return hex.EncodeToString(id[:]) }

func workerIDFrom(b []byte) (WorkerID, bool) {
	var id WorkerID
	if len(b) != len(id) {
		return id, false
	}
	copy(id[:], b)
	return id, true
}

// New checks cfg and builds a raylet; Start serves it.
func New(cfg Config) (*Raylet, error) {
	if len(cfg.NodeID) != 28 {
		return nil, fmt.Errorf("%w: NodeID must be 28 bytes, got %d", ErrConfig, len(cfg.NodeID))
	}
	if cfg.NodeIP == "" || cfg.GCSAddress == "" {
		return nil, fmt.Errorf("%w: NodeIP and GCSAddress are required", ErrConfig)
	}
	if cfg.SessionDir == "" {
		if cfg.TempDir == "" || cfg.SessionName == "" {
			return nil, fmt.Errorf("%w: SessionDir or TempDir+SessionName required", ErrConfig)
		}
		cfg.SessionDir = filepath.Join(cfg.TempDir, cfg.SessionName)
	}
	if cfg.SessionName == "" {
		cfg.SessionName = filepath.Base(cfg.SessionDir)
	}
	if cfg.TempDir == "" {
		cfg.TempDir = filepath.Dir(cfg.SessionDir)
	}
	if cfg.RayletSocket == "" {
		cfg.RayletSocket = filepath.Join(cfg.SessionDir, "sockets", "raylet")
	}
	if cfg.PlasmaSocket == "" {
		cfg.PlasmaSocket = filepath.Join(cfg.SessionDir, "sockets", "plasma_store")
	}
	if len(cfg.RayletSocket) > 107 {
		return nil, fmt.Errorf("%w: raylet socket path longer than 107 bytes: %s", ErrConfig, cfg.RayletSocket)
	}
	if cfg.MinWorkerPort < 0 || cfg.MaxWorkerPort < cfg.MinWorkerPort || cfg.MaxWorkerPort > 65535 {
		return nil, fmt.Errorf("%w: worker port range %d-%d", ErrConfig, cfg.MinWorkerPort, cfg.MaxWorkerPort)
	}
	if cfg.Store == nil {
		return nil, fmt.Errorf("%w: Store is required", ErrConfig)
	}
	if cfg.NodeName == "" {
		cfg.NodeName = cfg.NodeIP
	}
	if cfg.IdleWorkerTimeout <= 0 {
		cfg.IdleWorkerTimeout = 60 * time.Second
	}
	if cfg.WorkerRegisterTimeout <= 0 {
		cfg.WorkerRegisterTimeout = 60 * time.Second
	}
	if cfg.KillGrace <= 0 {
		cfg.KillGrace = 5 * time.Second
	}
	if cfg.LogPollInterval == 0 {
		cfg.LogPollInterval = 200 * time.Millisecond
	}
	if cfg.MaxStartingWorkers <= 0 {
		cfg.MaxStartingWorkers = int(cfg.Resources["CPU"])
		if cfg.MaxStartingWorkers < 1 {
			cfg.MaxStartingWorkers = 1
		}
	}
	if cfg.Python == "" {
		cfg.Python = "python3"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	r := &Raylet{
		cfg:       cfg,
		log:       cfg.Logger.With("component", "raylet"),
		bundles:   map[BundleKey]*bundleState{},
		byID:      map[WorkerID]*worker{},
		leases:    map[string]*lease{},
		failures:  map[string]*failureCause{},
		dead:      map[WorkerID]time.Time{},
		usedPorts: map[int]bool{},
		nextPort:  cfg.MinWorkerPort,
		jobs:      map[string]*jobInfo{},
		pins:      map[ObjectID]*pin{},
		start:     time.Now(),
	}
	r.lastBusy = r.start
	ledger := cfg.Ledger
	if ledger == nil {
		ledger = resledger.New(cfg.Resources, cfg.GPUIDs)
	} else {
		ledger.AddMissing(cfg.Resources) // node:<ip> and the like
	}
	r.res = ledger.Join("native")
	r.changed = make(chan struct{})
	copy(r.nodeID[:], cfg.NodeID)
	return r, nil
}

// Port is the NodeManagerService port (after Start).
func (r *Raylet) Port() int { return r.port }

// NodeID returns the node id.
func (r *Raylet) NodeID() []byte { return append([]byte(nil), r.cfg.NodeID...) }

// Start serves gRPC on NodeIP:NodeManagerPort and the unix socket, then
// registers the node with the GCS.
func (r *Raylet) Start(ctx context.Context) error {
	r.ctx, r.cancel = context.WithCancel(context.Background())
	for _, d := range []string{filepath.Join(r.cfg.SessionDir, "logs"), filepath.Dir(r.cfg.RayletSocket)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("nodemanager: %w", err)
		}
	}
	gc, err := newGCSClient(r.cfg.GCSAddress, r.cfg.ClusterIDHex, r.cfg.Dial)
	if err != nil {
		return err
	}
	r.gcs = gc
	r.workers = newClientPool(r.cfg.Dial)
	if r.pkgs == nil {
		r.pkgs = newPkgCache(filepath.Join(r.cfg.SessionDir, "runtime_resources"), func(ctx context.Context, uri string) ([]byte, error) {
			return gc.kvGet(ctx, nil, []byte(uri))
		}, r.log)
	}
	if r.pyenvs == nil {
		if r.pyenvs, err = pyenv.NewBuilder(filepath.Join(r.cfg.SessionDir, "runtime_resources", "pip"), r.cfg.Python, r.log); err != nil {
			r.cleanupStart()
			return fmt.Errorf("nodemanager: %w", err)
		}
	}
	r.owners = newOwnerNotifier(r)
	r.pulls = newPuller(r)

	host := r.cfg.ListenHost
	if host == "" {
		host = r.cfg.NodeIP
	}
	lis, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(r.cfg.NodeManagerPort)))
	if err == nil && r.cfg.WrapListener != nil {
		lis = r.cfg.WrapListener(lis)
	}
	if err != nil {
		r.cleanupStart()
		return fmt.Errorf("nodemanager: listen: %w", err)
	}
	r.lis = lis
	r.port = lis.Addr().(*net.TCPAddr).Port
	_ = os.Remove(r.cfg.RayletSocket)
	ul, err := net.Listen("unix", r.cfg.RayletSocket)
	if err != nil {
		r.cleanupStart()
		return fmt.Errorf("nodemanager: listen unix: %w", err)
	}
	r.unixLis = ul

	r.grpcSrv = grpc.NewServer()
	raypb.RegisterNodeManagerServiceServer(r.grpcSrv, &nodeManagerService{r: r})
	nodepb.RegisterNativeObjectsServer(r.grpcSrv, &objectService{r: r})
	r.wg.Add(4)
	go func() { defer r.wg.Done(); _ = r.grpcSrv.Serve(lis) }()
	go func() { defer r.wg.Done(); r.viewLoop(r.ctx) }()
	go func() { defer r.wg.Done(); r.acceptLoop(ul) }()
	go func() { defer r.wg.Done(); r.housekeeping() }()
	r.wg.Add(1)
	go r.watchLedger()
	if r.cfg.LogPollInterval > 0 {
		r.wg.Add(1)
		go func() { defer r.wg.Done(); r.tailLogs() }()
	}

	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := r.gcs.registerNode(rctx, r.nodeInfo()); err != nil {
		r.Close()
		return fmt.Errorf("nodemanager: RegisterNode: %w", err)
	}
	r.log.Info("raylet started", "node_id", r.nodeID.String(), "port", r.port, "socket", r.cfg.RayletSocket)
	return nil
}

func (r *Raylet) cleanupStart() {
	if r.lis != nil {
		r.lis.Close()
	}
	if r.gcs != nil {
		r.gcs.close()
	}
	r.cancel()
}

// Close kills every worker, unregisters the node and stops serving.
func (r *Raylet) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	var all []*worker
	for _, w := range r.byID {
		all = append(all, w)
	}
	queued := r.queue
	r.queue = nil
	r.mu.Unlock()

	for _, l := range queued {
		l.finish(leaseResult{canceled: true, failureType: raypb.RequestWorkerLeaseReply_SCHEDULING_CANCELLED_INTENDED, message: "raylet is shutting down"})
	}
	for _, w := range all {
		w.kill()
	}
	if r.gcs != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := r.gcs.unregisterNode(ctx, r.cfg.NodeID); err != nil {
			r.log.Warn("UnregisterNode failed", "err", err)
		}
		cancel()
	}
	if r.unixLis != nil {
		r.unixLis.Close()
	}
	r.cancel()
	if r.grpcSrv != nil {
		stopped := make(chan struct{})
		go func() { r.grpcSrv.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(2 * time.Second):
			r.grpcSrv.Stop()
		}
	}
	for _, w := range all {
		w.waitGone(r.cfg.KillGrace)
	}
	r.wg.Wait()
	if r.workers != nil {
		r.workers.close()
	}
	if r.gcs != nil {
		r.gcs.close()
	}
	_ = os.Remove(r.cfg.RayletSocket)
	return nil
}

// go runs fn in a tracked goroutine unless the raylet is stopping.
func (r *Raylet) goTracked(fn func()) {
	r.wg.Add(1)
	go func() { defer r.wg.Done(); fn() }()
}

func (r *Raylet) housekeeping() {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case now := <-t.C:
			r.reapWorkers(now)
			r.pruneHistory(now)
			r.mu.Lock()
			if len(r.queue) > 0 {
				r.scheduleLocked() // retries starts held back by the backoff
			}
			r.mu.Unlock()
		}
	}
}

// historyKeep is how long dead workers and lease failure causes are
// remembered.
const historyKeep = 10 * time.Minute

func (r *Raylet) pruneHistory(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, at := range r.dead {
		if now.Sub(at) > historyKeep {
			delete(r.dead, id)
		}
	}
	for id, f := range r.failures {
		if now.Sub(f.at) > historyKeep {
			delete(r.failures, id)
		}
	}
}

// ServesPort reports whether port is this raylet's gRPC port or the port a
// core worker or driver registered with it listens on: the targets on this
// node other nodes' core workers may need to reach.
func (r *Raylet) ServesPort(port int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if port == r.port {
		return true
	}
	for _, w := range r.byID {
		if int(w.port) == port {
			return true
		}
	}
	return false
}

// Package head wires a gray pool: the GCS tables, the Ray Client front end
// and (for a single-machine pool) a local provider raylet, plus a small HTTP
// status endpoint used by `gray status`.
package head

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gray-cluster/gray/auth"
	"github.com/gray-cluster/gray/clientproxy"
	"github.com/gray-cluster/gray/clientserver"
	"github.com/gray-cluster/gray/cluster"
	"github.com/gray-cluster/gray/gcs"
	"github.com/gray-cluster/gray/gpu"
	"github.com/gray-cluster/gray/gpu/verify"
	"github.com/gray-cluster/gray/gpu/watch"
	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/internal/noderes"
	"github.com/gray-cluster/gray/jobs"
	"github.com/gray-cluster/gray/membership"
	"github.com/gray-cluster/gray/native/node"
	"github.com/gray-cluster/gray/nodeserver"
	"github.com/gray-cluster/gray/objectstore"
	"github.com/gray-cluster/gray/raylet"
	"github.com/gray-cluster/gray/resledger"
	"github.com/gray-cluster/gray/taskhistory"
)

// Config configures a pool head.
type Config struct {
	// ClientAddr is the Ray Client listen address (default 127.0.0.1:10001).
	ClientAddr string
	// StatusAddr is the HTTP status/dashboard address ("" disables it).
	StatusAddr string
	NodeIP     string
	// Python runs the workers; it needs ray installed.
	Python  string
	NumCPUs float64
	// NumGPUs overrides the detected GPU count when >= 0 (like ray start
	// --num-gpus); -1 means use what NVML reports.
	NumGPUs float64
	// GPUMock inventories one of go-nvml's mock machines instead of NVML.
	GPUMock           string
	Memory            float64
	ObjectStoreMemory int64
	Resources         map[string]float64
	SessionDir        string
	PrestartWorkers   int
	IdleWorkerTimeout time.Duration
	RayVersion        string
	Logger            *slog.Logger
	// NodeAddr is the UDP (QUIC) address providers join at ("" disables
	// providers; ":0" picks a port).
	NodeAddr string
	// StateDir keeps the pool CA and join secret across restarts.
	StateDir string
	// GCSStorage is where the GCS tables are kept: "bolt", "memory", a
	// redis:// URL, or "" for bolt under StateDir when it can be used.
	GCSStorage string
	// GCSLeaseTTL is the leader lease's time to live on a Redis store (0:
	// gcs.DefaultLeaseTTL): a standby head takes over this long after the
	// active one stops renewing it.
	GCSLeaseTTL time.Duration
	// OnLeaseLost runs when the active head loses the lease (nil: the
	// process exits, so that two heads never serve at once).
	OnLeaseLost func(error)
	// JoinSecret is the secret part of the join token (default: generated
	// once and kept in StateDir).
	JoinSecret string
	// Labels are the head node's labels (e.g. ray.io/availability-region).
	Labels map[string]string
	// GossipAddr is the memberlist (UDP+TCP) address ("" disables gossip;
	// port 0 picks one).
	GossipAddr string
	// VerifyGPUs runs the CUDA verification kernels before offering GPUs.
	VerifyGPUs bool
	// GPUChecker verifies the GPUs (nil: the CUDA driver); tests fake it.
	GPUChecker verify.Checker
	// GPUVerifyInterval is how often the GPUs are verified again (0: only
	// at start); GPUSampleInterval how often NVML is read for live numbers
	// (0: never).
	GPUVerifyInterval time.Duration
	GPUSampleInterval time.Duration
	// GPUVerifyTick and GPUSampleTick, when set, drive them instead (tests).
	GPUVerifyTick, GPUSampleTick <-chan time.Time
	// SpillDir is where objects go when the store is full (default: under
	// the session dir); NoSpill turns spilling off (a full store refuses
	// puts with ObjectStoreFullError).
	SpillDir string
	NoSpill  bool
	// Billing meters providers' work into a ledger and pays them out.
	Billing BillingConfig
	// SuspectAfter and DeadAfter tune provider failure detection.
	SuspectAfter time.Duration
	DeadAfter    time.Duration
	// Native runs Ray's own protocols on the head machine too.
	Native NativeConfig
	// NativeClientSessions serves each ray:// session with a stock Ray
	// Client server process on the native GCS (see package clientproxy);
	// gray's own front end then listens on loopback only, for its workers.
	NativeClientSessions bool
	// Auth is token authentication, TLS and the metrics listener.
	Auth AuthConfig
	// Sandbox runs the local provider's workers in sandboxes (nil: plain
	// processes, only for trusted single-user pools).
	Sandbox *raylet.SandboxConfig
}

// Head is a running pool head with its local raylet.
type Head struct {
	cfg    Config
	log    *slog.Logger
	Store  *objectstore.Store
	KV     gcs.KV
	Jobs   *gcs.Jobs
	Actors *gcs.Actors
	Raylet *raylet.Raylet
	Client *clientserver.Server
	// Proxy serves ray:// in the native-sessions mode (nil otherwise).
	Proxy   *clientproxy.Proxy
	Cluster *cluster.Cluster
	Nodes   *nodeserver.Server
	// nodesUp is closed once the node port (and the node table) is set
	// up, or found to be off.
	nodesUp chan struct{}
	http    *http.Server
	addr    net.Addr
	GPUs    []gpu.Device
	local   localGPUs
	cancel  context.CancelFunc
	nodes   nodeListener
	pool    *nativePool // native Ray's tunnels to providers (nil without a node port)
	gossip  *membership.Membership
	billing *billing
	// gcsStore keeps the durable GCS tables (KV, job counter).
	gcsStore gcs.Store
	lease    *gcs.Lease
	// Native is the native Ray node (nil unless Config.Native.Enabled).
	Native *node.Node

	auth       *auth.Authenticator
	poolSecret string
	tlsConf    *tls.Config
	metricsLn  net.Listener
	metricsSrv *http.Server
	// jobs runs Jobs API submissions (nil without a status port); set
	// once the pool is up, read by Ray Client sessions as they start.
	jobs     atomic.Pointer[jobs.Manager]
	statusLn net.Listener
	// tasks is the recent ray:// task history (for the State API).
	tasks *taskhistory.History
}

// New validates the configuration and builds the components.
func New(cfg Config) (*Head, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.ClientAddr == "" {
		cfg.ClientAddr = "127.0.0.1:10001"
	}
	if cfg.NodeIP == "" {
		cfg.NodeIP = "127.0.0.1"
	}
	if cfg.Python == "" {
		cfg.Python = "python3"
	}
	if cfg.ObjectStoreMemory <= 0 {
		cfg.ObjectStoreMemory = noderes.DefaultObjectStoreMemory()
	}
	if cfg.SessionDir == "" {
		cfg.SessionDir = filepath.Join(os.TempDir(), "gray", fmt.Sprintf("session_%s_%d", time.Now().Format("20060102_150405"), os.Getpid()))
	}
	if cfg.PrestartWorkers < 0 {
		cfg.PrestartWorkers = 0
	}
	return &Head{cfg: cfg, log: cfg.Logger, nodesUp: make(chan struct{})}, nil
}

// Start brings up the front end, the raylet and the status endpoint.
func (h *Head) Start(ctx context.Context) error {
	pyVersion, err := pythonVersion(h.cfg.Python)
	if err != nil {
		return err
	}
	ctx, h.cancel = context.WithCancel(ctx)
	// First: a standby head waits here for the lease, before it binds any
	// port or reads any table.
	if err := h.openGCS(ctx); err != nil {
		return err
	}
	if err := h.startBilling(ctx); err != nil {
		return err
	}
	if err := h.startAuth(); err != nil {
		return err
	}
	if h.tlsConf, err = h.serverTLS(); err != nil {
		return err
	}
	if h.cfg.NoSpill {
		h.Store = objectstore.New(h.cfg.ObjectStoreMemory)
	} else {
		if h.cfg.SpillDir == "" {
			h.cfg.SpillDir = filepath.Join(h.cfg.SessionDir, "spill")
		}
		h.Store = objectstore.NewWithSpill(h.cfg.ObjectStoreMemory, h.cfg.SpillDir)
	}
	h.tasks = taskhistory.New(taskhistory.DefaultLimit, nil)
	// The head is one node in both worlds: its ray:// raylet and its
	// native raylet share the node id (the CLI's, which stock drivers read
	// off the command line), as they share the resource ledger.
	nodeID := ids.NewNodeID()
	if h.cfg.Native.Enabled {
		if id, err := ids.NodeFromBytes(h.cfg.Native.NodeID); err == nil {
			nodeID = id
		} else {
			h.cfg.Native.NodeID = append([]byte(nil), nodeID[:]...)
		}
	}
	res, rep, err := noderes.DetectVerified(ctx, noderes.Options{
		NumCPUs: h.cfg.NumCPUs, NumGPUs: h.cfg.NumGPUs, GPUMock: h.cfg.GPUMock, Memory: h.cfg.Memory,
		ObjectStoreMemory: h.cfg.ObjectStoreMemory, Custom: h.cfg.Resources, Verify: h.cfg.VerifyGPUs,
		Checker: h.cfg.GPUChecker, VerifyEvery: h.cfg.GPUVerifyInterval, SampleEvery: h.cfg.GPUSampleInterval,
		VerifyTick: h.cfg.GPUVerifyTick, SampleTick: h.cfg.GPUSampleTick,
	}, h.log)
	if err != nil {
		return err
	}
	devs := rep.GPUs
	if len(rep.Labels) > 0 {
		labels := map[string]string{}
		for k, v := range h.cfg.Labels {
			labels[k] = v
		}
		for k, v := range rep.Labels {
			labels[k] = v
		}
		h.cfg.Labels = labels
	}
	h.GPUs = devs
	summary := noderes.Summary(devs)
	if rep.Watch != nil {
		res = rep.Watch.Base() // every GPU a slot; the failed ones withdrawn below
		st := rep.Watch.Status()
		h.local.set(st)
		summary = watch.Summary(st.Devices)
	}
	// The front end needs the raylet and the raylet needs the front end's
	// address, so bind the listener first.
	var cs *clientserver.Server
	callbacks := h.callbacks(&cs)
	// One ledger for the machine: the ray:// raylet and the native one
	// (when on) both grant from it.
	ledger := resledger.New(res, nil)
	rl, err := raylet.New(raylet.Config{
		NodeID: nodeID, NodeIP: h.cfg.NodeIP, Resources: res, Ledger: ledger, Store: h.Store,
		Python: h.cfg.Python, SessionDir: filepath.Join(h.cfg.SessionDir, "raylet"),
		Sandbox:         h.cfg.Sandbox.Protecting(h.cfg.StateDir, h.cfg.SessionDir),
		PrestartWorkers: h.cfg.PrestartWorkers, IdleWorkerTimeout: h.cfg.IdleWorkerTimeout, Logger: h.log,
		OnActorDead: callbacks.actorDead, OnActorRef: callbacks.actorRef, OnHolderGone: callbacks.holderGone,
		OnActorReady: callbacks.actorReady, Logs: callbacks.logs, WorkerKey: h.workerKey(nodeID),
	})
	if err != nil {
		return err
	}
	if st := h.local.get(); st != nil {
		rl.SetGPUOffer(st.Off, st.Total)
	}
	h.Cluster = cluster.New(cluster.Config{
		Store: h.Store, Logger: h.log, OnActorDead: callbacks.actorDead, OnHolderGone: callbacks.holderGone,
		Warn:   func(job ids.JobID, msg string) { callbacks.logs(job, msg, true) },
		Locate: h.locate,
		Nodes:  gcs.NewNodeTable(h.gcsStore), Groups: gcs.NewGroupTable(h.gcsStore), OnActorPlaced: h.actorPlaced,
	})
	rl.SetPlacementGroups(h.Cluster)
	host, _ := os.Hostname()
	h.Cluster.AddLocal(rl, gcs.NodeInfo{IP: h.cfg.NodeIP, Hostname: host, Labels: h.cfg.Labels, GPUs: summary})
	if err := h.listenStatus(); err != nil {
		return err
	}
	dashboard := h.DashboardAddr()
	csAddr := h.cfg.ClientAddr
	if h.cfg.NativeClientSessions {
		if h.auth.Enabled() {
			return fmt.Errorf("native ray:// sessions: %w", errNativeSessionsAuth)
		}
		csAddr = "127.0.0.1:0"
	}
	cs, err = clientserver.New(clientserver.Config{
		Addr: csAddr, RayVersion: h.cfg.RayVersion, PythonVersion: pyVersion,
		NodeIP: h.cfg.NodeIP, DashboardURL: dashboard, Store: h.Store, KV: h.KV, Jobs: h.Jobs, Actors: h.Actors, Node: h.Cluster,
		PackagesDir: filepath.Join(h.cfg.SessionDir, "packages"), Logger: h.log, Billing: h.sessionBilling(),
		Auth: h.auth, WorkerKey: h.workerKey, TLS: h.tlsConf,
		JobOrigin:     h.jobOrigin,
		Tasks:         h.tasks,
		Sessions:      gcs.NewSessionTable(h.gcsStore),
		AwaitRestored: h.awaitRestored,
	})
	if err != nil {
		return err
	}
	if n, err := cs.Restore(ctx); err != nil {
		return err
	} else if n > 0 {
		h.log.Info("driver sessions wait for their clients", "sessions", n)
	}
	if err := os.MkdirAll(filepath.Join(h.cfg.SessionDir, "packages"), 0o755); err != nil {
		return err
	}
	addr, err := cs.Listen()
	if err != nil {
		return err
	}
	h.addr = addr
	if h.lease != nil {
		// Standby heads forward their Ray Client port here.
		if err := h.lease.PublishClientAddr(ctx, dialableAddr(addr, h.cfg.NodeIP)); err != nil {
			h.log.Warn("cannot publish the Ray Client address for standby heads", "err", err)
		}
	}
	rl.SetClientAddress(addr.String())
	if err := cs.Start(ctx); err != nil {
		return err
	}
	if err := rl.Start(ctx); err != nil {
		cs.Close()
		return err
	}
	h.Raylet, h.Client = rl, cs
	h.watchGPUs(ctx, rep.Watch, nodeID)
	go h.Cluster.Run(ctx)
	if h.cfg.NodeAddr != "" {
		err = h.startNodes(ctx, callbacks) // restores the GCS tables too
	} else {
		err = h.restoreTables(ctx)
	}
	close(h.nodesUp)
	if err != nil {
		h.Close()
		return err
	}
	if h.cfg.Native.Enabled {
		if err := h.startNative(ctx, res, ledger, pyVersion); err != nil {
			if h.cfg.Native.Required {
				h.Close()
				return err
			}
			// The default port may be another program's (Redis, a stock
			// Ray): the pool still serves ray://.
			h.log.Warn("native Ray is off: it could not start (give --gcs-port to choose a port, or -1 to silence this)", "err", err)
		}
	}
	if h.cfg.NativeClientSessions {
		if err := h.startProxy(); err != nil {
			h.Close()
			return err
		}
	}
	if h.cfg.StatusAddr != "" {
		if err := h.startJobs(ctx); err != nil {
			h.Close()
			return err
		}
		if err := h.startStatus(); err != nil {
			h.Close()
			return err
		}
	}
	h.log.Info("gray pool started", "ray_client", h.ClientAddr(), "python", pyVersion, "cpus", h.cfg.NumCPUs, "session_dir", h.cfg.SessionDir)
	return nil
}

// ClientAddr is the bound Ray Client address.
func (h *Head) ClientAddr() string {
	if h.addr == nil {
		return ""
	}
	return h.addr.String()
}

// Close stops everything.
func (h *Head) Close() error {
	if h.cancel != nil {
		h.cancel()
	}
	if h.gossip != nil {
		_ = h.gossip.Close()
	}
	h.nodes.close()
	if h.pool != nil {
		h.pool.close()
	}
	if h.billing != nil {
		if h.billing.outbox != nil {
			_ = h.billing.outbox.Close()
		}
		_ = h.billing.ledger.Close()
	}
	if m := h.jobs.Load(); m != nil {
		_ = m.Close() // ends running entrypoints
	}
	if h.http != nil {
		_ = h.http.Close()
	} else if h.statusLn != nil {
		_ = h.statusLn.Close()
	}
	if h.metricsSrv != nil {
		_ = h.metricsSrv.Close()
	}
	_ = h.auth.Close()
	if h.Proxy != nil {
		_ = h.Proxy.Close()
	}
	if h.Native != nil {
		_ = h.Native.Close()
	}
	if h.Client != nil {
		_ = h.Client.Close()
	}
	if h.Raylet != nil {
		_ = h.Raylet.Close()
	}
	if h.Store != nil {
		_ = h.Store.Close()
	}
	h.closeGCS()
	return nil
}

func pythonVersion(python string) (string, error) {
	out, err := exec.Command(python, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])").Output()
	if err != nil {
		return "", fmt.Errorf("worker python %q does not run: %w", python, err)
	}
	return strings.TrimSpace(string(out)), nil
}

// locate reports an object's size and the providers holding a copy (they
// pulled or produced it). The head holds every object, but it is already the
// preferred node of the hybrid policy, so it is not listed.
func (h *Head) locate(oid ids.ObjectID) (int64, []ids.NodeID) {
	if h.Nodes == nil {
		return 0, nil
	}
	holders := h.Nodes.Holders(oid)
	if len(holders) == 0 {
		return 0, nil
	}
	// Size, not Get: placement must not read a spilled value back.
	size, _ := h.Store.Size(oid)
	return size, holders
}

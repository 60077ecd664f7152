package node

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/gray-cluster/gray/native/nodemanager"
	"github.com/gray-cluster/gray/native/plasma"
	"github.com/gray-cluster/gray/native/session"
	"github.com/gray-cluster/gray/proto/ray/raypb"
	"github.com/gray-cluster/gray/resledger"
)

// WorkerConfig configures a native worker node: a raylet and a plasma store
// that join a GCS elsewhere (the head's), as `ray start --address` does.
type WorkerConfig struct {
	// GCSAddress is the head's GCS (host:port) as Ray's tables name it.
	GCSAddress string
	// Dial opens every connection the raylet makes (to the GCS, to other
	// raylets and core workers); a provider dials through gray's tunnel.
	Dial nodemanager.DialFunc
	// NodeIP is the node's address in Ray's tables; ListenHost is where
	// its raylet listens ("" = NodeIP).
	NodeIP, ListenHost string
	// NodeManagerPort is the raylet's gRPC port; workers get ports
	// MinWorkerPort..MaxWorkerPort (all 0: any free port).
	NodeManagerPort              int
	MinWorkerPort, MaxWorkerPort int
	// WorkerEnv is added to every core worker's environment.
	WorkerEnv []string
	// TempDir is Ray's temp dir on this machine ("" = /tmp/ray).
	TempDir   string
	NodeID    []byte
	Python    string
	Resources map[string]float64
	Labels    map[string]string
	GPUIDs    []int
	// Ledger, when set, is the machine's resource ledger shared with the
	// provider's ray:// raylet; nil: the raylet's own.
	Ledger            *resledger.Ledger
	ObjectStoreMemory int64
	PrestartWorkers   int
	IdleWorkerTimeout time.Duration
	Logger            *slog.Logger
}

// Worker is a running native worker node.
type Worker struct {
	cfg    WorkerConfig
	log    *slog.Logger
	layout session.Layout
	store  *plasma.Store
	raylet *nodemanager.Raylet
	cancel context.CancelFunc
}

// ErrJoin is returned when the GCS cannot be reached or read.
var ErrJoin = errors.New("node: cannot join the GCS")

// StartWorker joins cfg.GCSAddress: it reads the cluster id and session
// name from the GCS, lays out the session directory under the same name
// and starts the plasma store and the raylet, which registers the node.
func StartWorker(ctx context.Context, cfg WorkerConfig) (*Worker, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.NodeID == nil {
		cfg.NodeID = randomID(28)
	}
	if cfg.ObjectStoreMemory <= 0 {
		cfg.ObjectStoreMemory = 512 << 20
	}
	w := &Worker{cfg: cfg, log: cfg.Logger.With("part", "native")}
	cid, name, err := readCluster(ctx, cfg.GCSAddress, cfg.Dial)
	if err != nil {
		return nil, err
	}
	if w.layout, err = session.New(cfg.TempDir, name); err != nil {
		return nil, err
	}
	if err := w.layout.Create(); err != nil {
		return nil, fmt.Errorf("node: session dir: %w", err)
	}
	ctx, w.cancel = context.WithCancel(ctx)
	ok := false
	defer func() {
		if !ok {
			w.Close()
		}
	}()
	if w.store, err = startPlasma(ctx, w.layout, cfg.ObjectStoreMemory, w.log); err != nil {
		return nil, err
	}
	res := nodeResources(cfg.Resources, cfg.ObjectStoreMemory, cfg.NodeIP)
	w.raylet, err = nodemanager.New(nodemanager.Config{
		NodeID: cfg.NodeID, NodeIP: cfg.NodeIP, ListenHost: cfg.ListenHost, GCSAddress: cfg.GCSAddress, Dial: cfg.Dial,
		ClusterIDHex: hex.EncodeToString(cid), SessionName: name,
		TempDir: w.layout.TempDir, SessionDir: w.layout.Dir,
		RayletSocket: w.layout.RayletSocket, PlasmaSocket: w.layout.PlasmaSocket,
		NodeManagerPort: cfg.NodeManagerPort, MinWorkerPort: cfg.MinWorkerPort, MaxWorkerPort: cfg.MaxWorkerPort,
		Resources: res, GPUIDs: cfg.GPUIDs, Ledger: cfg.Ledger, Labels: cfg.Labels, Python: cfg.Python, WorkerEnv: cfg.WorkerEnv,
		NumPrestartWorkers: cfg.PrestartWorkers, IdleWorkerTimeout: cfg.IdleWorkerTimeout,
		Store: nodemanager.PlasmaStore(w.store), Logger: w.log.With("part", "raylet"),
	})
	if err != nil {
		return nil, err
	}
	if err := w.raylet.Start(ctx); err != nil {
		return nil, err
	}
	ok = true
	w.log.Info("native worker node up", "gcs", cfg.GCSAddress, "node_ip", cfg.NodeIP, "session_dir", w.layout.Dir,
		"node_id", hex.EncodeToString(cfg.NodeID), "raylet_port", w.raylet.Port())
	return w, nil
}

// readCluster asks the GCS for the cluster id and the session name.
func readCluster(ctx context.Context, addr string, dial nodemanager.DialFunc) (cid []byte, name string, err error) {
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if dial != nil {
		opts = append(opts, grpc.WithContextDialer(dial))
	}
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, "", fmt.Errorf("%w %s: %w", ErrJoin, addr, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	ci, err := raypb.NewNodeInfoGcsServiceClient(conn).GetClusterId(ctx, &raypb.GetClusterIdRequest{}, grpc.WaitForReady(true))
	if err != nil {
		return nil, "", fmt.Errorf("%w %s: %w", ErrJoin, addr, err)
	}
	kv, err := raypb.NewInternalKVGcsServiceClient(conn).InternalKVGet(ctx, &raypb.InternalKVGetRequest{Namespace: []byte("session"), Key: []byte("session_name")})
	if err != nil {
		return nil, "", fmt.Errorf("%w %s: %w", ErrJoin, addr, err)
	}
	name = string(kv.GetValue())
	if name == "" {
		name = session.Name(time.Now(), os.Getpid())
	}
	return ci.GetClusterId(), name, nil
}

// Raylet is the node's raylet.
func (w *Worker) Raylet() *nodemanager.Raylet { return w.raylet }

// NodeID is the node's id.
func (w *Worker) NodeID() []byte { return w.cfg.NodeID }

// SessionDir is the node's session directory.
func (w *Worker) SessionDir() string { return w.layout.Dir }

// Close stops the raylet (and its workers) and the store.
func (w *Worker) Close() error {
	if w.cancel != nil {
		w.cancel()
	}
	var errs []error
	if w.raylet != nil {
		errs = append(errs, w.raylet.Close())
	}
	if w.store != nil {
		errs = append(errs, w.store.Close())
	}
	return errors.Join(errs...)
}

// startPlasma starts the node's plasma store in its session directory.
func startPlasma(ctx context.Context, layout session.Layout, capacity int64, log *slog.Logger) (*plasma.Store, error) {
	st, err := plasma.New(plasma.Config{
		SocketPath: layout.PlasmaSocket, Capacity: capacity,
		SpillDir: layout.SpillDir, Logger: log.With("part", "plasma"),
	})
	if err != nil {
		return nil, err
	}
	if err := st.Start(ctx); err != nil {
		return nil, err
	}
	return st, nil
}

// nodeResources is what a raylet offers: the configured resources, the
// object store, and the implicit node:<ip> resource stock Ray gives every
// node.
func nodeResources(cfg map[string]float64, objectStore int64, nodeIP string) map[string]float64 {
	res := map[string]float64{}
	for k, v := range cfg {
		res[k] = v
	}
	if _, ok := res["object_store_memory"]; !ok {
		res["object_store_memory"] = float64(objectStore)
	}
	res["node:"+nodeIP] = 1
	return res
}

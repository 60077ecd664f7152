// Package node runs a native Ray node on gray: the GCS gRPC services (on the
// head), a plasma store and a raylet that stock Ray 2.60.0 core workers and
// `ray.init(address=...)` drivers use unmodified. It lays out the session
// directory a stock driver expects and wires the three parts together; each
// part talks to the others through Ray's own protocols (GCS and
// NodeManagerService gRPC), as they will across machines.
package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"time"

	"google.golang.org/grpc"

	"github.com/gray-cluster/gray/gcs"
	"github.com/gray-cluster/gray/native/gcsserver"
	"github.com/gray-cluster/gray/native/localpeer"
	"github.com/gray-cluster/gray/native/nodemanager"
	"github.com/gray-cluster/gray/native/plasma"
	"github.com/gray-cluster/gray/native/session"
	"github.com/gray-cluster/gray/proto/ray/raypb"
	"github.com/gray-cluster/gray/resledger"
)

// RayVersion is the Ray version native drivers and workers must run.
const RayVersion = "2.60.0"

// Config configures a native node.
type Config struct {
	// GCSPort is the GCS gRPC port (Ray's --port; 0 picks one). The GCS
	// listens on the node IP and on 127.0.0.1.
	GCSPort int
	// NodeIP is the address workers and drivers reach this node at
	// ("" = the address Ray itself would pick).
	NodeIP string
	// TempDir is Ray's temp dir ("" = /tmp/ray).
	TempDir string
	// NodeID is the node's 28-byte id (nil = random).
	NodeID []byte
	// Python runs default_worker.py; it needs ray==2.60.0. PythonVersion
	// is its version (x.y.z), which drivers must match, as on stock Ray.
	Python        string
	PythonVersion string
	Resources     map[string]float64
	Labels        map[string]string
	GPUIDs        []int
	// Ledger, when set, is the machine's resource ledger the node's raylet
	// shares with another raylet (the head's ray:// one); nil: its own.
	Ledger            *resledger.Ledger
	ObjectStoreMemory int64
	PrestartWorkers   int
	IdleWorkerTimeout time.Duration
	// LocalOnly serves the GCS and raylet ports to peers on this machine
	// only (they listen on the node IP, which drivers dial).
	LocalOnly bool
	// KV is the internal KV shared with the Ray Client front end.
	KV gcs.KV
	// Tables, when set, keeps the GCS's actor, job and node tables and the
	// cluster id durable, so that the node restarted on them serves the
	// same cluster (nil: memory only, a new cluster id per start).
	Tables *gcs.NativeTables
	// NextJobID allocates job numbers shared with the Ray Client front end
	// (nil: the GCS counts on its own).
	NextJobID func(context.Context) (uint32, error)
	Logger    *slog.Logger
}

// Node is a running native node.
type Node struct {
	cfg       Config
	log       *slog.Logger
	layout    session.Layout
	clusterID []byte
	gcs       *gcsserver.Server
	grpc      *grpc.Server
	lis       []net.Listener
	store     *plasma.Store
	raylet    *nodemanager.Raylet
	gcsAddr   string
	cancel    context.CancelFunc
}

// New checks cfg and lays out the session; nothing listens until Start.
func New(cfg Config) (*Node, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.NodeIP == "" {
		cfg.NodeIP = session.NodeIP()
	}
	if cfg.KV == nil {
		cfg.KV = gcs.NewMemKV()
	}
	if cfg.NodeID == nil {
		cfg.NodeID = randomID(28)
	}
	if len(cfg.NodeID) != 28 {
		return nil, fmt.Errorf("node: node id must be 28 bytes, got %d", len(cfg.NodeID))
	}
	if cfg.ObjectStoreMemory <= 0 {
		cfg.ObjectStoreMemory = 512 << 20
	}
	layout, err := session.New(cfg.TempDir, session.Name(time.Now(), os.Getpid()))
	if err != nil {
		return nil, err
	}
	return &Node{cfg: cfg, log: cfg.Logger.With("part", "native"), layout: layout, clusterID: randomID(28)}, nil
}

func randomID(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return b
}

// Start serves the GCS, starts the plasma store and the raylet, and writes
// ray_current_cluster.
func (n *Node) Start(ctx context.Context) (err error) {
	ctx, n.cancel = context.WithCancel(ctx)
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	if err := n.layout.Create(); err != nil {
		return fmt.Errorf("node: session dir: %w", err)
	}
	// The session name is what a connecting driver reads first; the
	// cluster metadata is what it checks its Ray and Python versions with.
	meta, _ := json.Marshal(map[string]any{"ray_version": RayVersion, "python_version": n.cfg.PythonVersion, "ray_init_cluster": false})
	for _, e := range []struct{ ns, key, value string }{
		{"session", "session_name", n.layout.Name},
		{"cluster", "CLUSTER_METADATA", string(meta)},
		// The GCS serves the autoscaler v2 state (GetClusterStatus); this
		// key tells `ray status` and the libraries to read it.
		{"__autoscaler", "__autoscaler_v2_enabled", "1"},
	} {
		if _, err := n.cfg.KV.Put(ctx, []byte(e.ns), []byte(e.key), []byte(e.value), true); err != nil {
			return fmt.Errorf("node: %w", err)
		}
	}

	if n.cfg.Tables != nil {
		if n.clusterID, err = n.cfg.Tables.ClusterID(ctx); err != nil {
			return fmt.Errorf("node: %w", err)
		}
	}
	n.gcs, err = gcsserver.New(gcsserver.Config{
		KV: n.cfg.KV, Tables: n.cfg.Tables, ClusterID: n.clusterID, NextJobID: n.cfg.NextJobID,
		SystemConfig: nodemanager.SystemConfigJSON(nil), Logger: n.log.With("part", "gcs"),
	})
	if err != nil {
		return err
	}
	if err := n.listenGCS(); err != nil {
		return err
	}
	n.grpc = n.gcs.NewGRPCServer()
	for _, l := range n.lis {
		go n.grpc.Serve(l)
	}
	if err := n.gcs.Start(ctx); err != nil {
		return err
	}

	if n.store, err = startPlasma(ctx, n.layout, n.cfg.ObjectStoreMemory, n.log); err != nil {
		return err
	}

	// The head also has the implicit resource libraries pin work to it
	// with (Serve's controller asks for node:__internal_head__).
	res := nodeResources(n.cfg.Resources, n.cfg.ObjectStoreMemory, n.cfg.NodeIP)
	res["node:__internal_head__"] = 1
	n.raylet, err = nodemanager.New(nodemanager.Config{
		NodeID: n.cfg.NodeID, NodeIP: n.cfg.NodeIP, GCSAddress: n.gcsAddr,
		ClusterIDHex: hex.EncodeToString(n.clusterID), SessionName: n.layout.Name,
		TempDir: n.layout.TempDir, SessionDir: n.layout.Dir,
		RayletSocket: n.layout.RayletSocket, PlasmaSocket: n.layout.PlasmaSocket,
		Resources: res, GPUIDs: n.cfg.GPUIDs, Ledger: n.cfg.Ledger, Labels: n.cfg.Labels, Python: n.cfg.Python,
		IsHead: true, NumPrestartWorkers: n.cfg.PrestartWorkers, IdleWorkerTimeout: n.cfg.IdleWorkerTimeout,
		Store: nodemanager.PlasmaStore(n.store), Logger: n.log.With("part", "raylet"),
		WrapListener: n.wrap,
	})
	if err != nil {
		return err
	}
	if err := n.raylet.Start(ctx); err != nil {
		return err
	}
	if err := n.layout.WriteCurrentCluster(n.gcsAddr); err != nil {
		n.log.Warn("cannot write ray_current_cluster", "err", err)
	}
	n.log.Info("native Ray node up", "gcs", n.gcsAddr, "session_dir", n.layout.Dir,
		"node_id", hex.EncodeToString(n.cfg.NodeID), "raylet_port", n.raylet.Port())
	return nil
}

// listenGCS binds the GCS port on the node IP and on loopback: a stock
// driver given 127.0.0.1 dials the node IP instead.
func (n *Node) listenGCS() error {
	first, err := net.Listen("tcp", net.JoinHostPort(n.cfg.NodeIP, strconv.Itoa(n.cfg.GCSPort)))
	if err != nil {
		return fmt.Errorf("node: GCS port: %w", err)
	}
	n.lis = append(n.lis, n.wrap(first))
	port := first.Addr().(*net.TCPAddr).Port
	n.gcsAddr = net.JoinHostPort(n.cfg.NodeIP, strconv.Itoa(port))
	if ip := net.ParseIP(n.cfg.NodeIP); ip != nil && !ip.IsLoopback() {
		lo, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			return fmt.Errorf("node: GCS port on loopback: %w", err)
		}
		n.lis = append(n.lis, lo)
	}
	return nil
}

// wrap applies LocalOnly to a listener.
func (n *Node) wrap(l net.Listener) net.Listener {
	if !n.cfg.LocalOnly {
		return l
	}
	return localpeer.Wrap(l, n.log)
}

// GCSAddress is host:port of the GCS, what `ray.init(address=...)` takes.
func (n *Node) GCSAddress() string { return n.gcsAddr }

// SessionDir is the node's session directory.
func (n *Node) SessionDir() string { return n.layout.Dir }

// NodeID is the node's id.
func (n *Node) NodeID() []byte { return n.cfg.NodeID }

// Jobs is a snapshot of the native GCS job table (nil before Start).
func (n *Node) Jobs() []*raypb.JobTableData {
	if n.gcs == nil {
		return nil
	}
	return n.gcs.Jobs()
}

// Close stops the raylet (and its workers), the store and the GCS.
func (n *Node) Close() error {
	if n.cancel != nil {
		n.cancel()
	}
	var errs []error
	if n.raylet != nil {
		errs = append(errs, n.raylet.Close())
	}
	if n.store != nil {
		errs = append(errs, n.store.Close())
	}
	if n.gcs != nil {
		n.gcs.Close()
	}
	if n.grpc != nil {
		n.grpc.Stop()
	}
	for _, l := range n.lis {
		_ = l.Close()
	}
	if n.gcsAddr != "" {
		n.layout.RemoveCurrentCluster(n.gcsAddr)
	}
	return errors.Join(errs...)
}

// GCS is the node's GCS server (read its tables through its snapshot
// accessors); nil before Start.
func (n *Node) GCS() *gcsserver.Server { return n.gcs }

// Plasma is the node's object store; nil before Start.
func (n *Node) Plasma() *plasma.Store { return n.store }

// ServesPort reports whether port on the node IP is one of the node's Ray
// services: the GCS, the raylet, or a registered core worker or driver.
func (n *Node) ServesPort(port int) bool {
	if _, p, err := net.SplitHostPort(n.gcsAddr); err == nil && p == strconv.Itoa(port) {
		return true
	}
	return n.raylet != nil && n.raylet.ServesPort(port)
}

// NodeIP is the node's address in Ray's tables.
func (n *Node) NodeIP() string { return n.cfg.NodeIP }

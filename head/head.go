// Package head wires a gray pool: the GCS tables, the Ray Client front end
// and (for a single-machine pool) a local provider raylet, plus a small HTTP
// status endpoint used by `gray status`.
package head

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/gray-cluster/gray/clientserver"
	"github.com/gray-cluster/gray/gcs"
	"github.com/gray-cluster/gray/gpu"
	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/objectstore"
	"github.com/gray-cluster/gray/raylet"
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
}

// Head is a running pool head with its local raylet.
type Head struct {
	cfg    Config
	log    *slog.Logger
	Store  *objectstore.Store
	KV     *gcs.MemKV
	Jobs   *gcs.Jobs
	Actors *gcs.Actors
	Raylet *raylet.Raylet
	Client *clientserver.Server
	http   *http.Server
	addr   net.Addr
	GPUs   []gpu.Device
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
	if cfg.NumCPUs <= 0 {
		cfg.NumCPUs = float64(runtime.NumCPU())
	}
	if cfg.ObjectStoreMemory <= 0 {
		cfg.ObjectStoreMemory = defaultObjectStoreMemory()
	}
	if cfg.Memory <= 0 {
		cfg.Memory = float64(totalMemory()) * 0.7
	}
	if cfg.SessionDir == "" {
		cfg.SessionDir = filepath.Join(os.TempDir(), "gray", fmt.Sprintf("session_%s_%d", time.Now().Format("20060102_150405"), os.Getpid()))
	}
	if cfg.PrestartWorkers < 0 {
		cfg.PrestartWorkers = 0
	}
	return &Head{cfg: cfg, log: cfg.Logger}, nil
}

// Start brings up the front end, the raylet and the status endpoint.
func (h *Head) Start(ctx context.Context) error {
	pyVersion, err := pythonVersion(h.cfg.Python)
	if err != nil {
		return err
	}
	h.Store = objectstore.New(h.cfg.ObjectStoreMemory)
	h.KV = gcs.NewMemKV()
	h.Jobs = gcs.NewJobs()
	h.Actors = gcs.NewActors()
	nodeID := ids.NewNodeID()
	res := map[string]float64{
		"CPU":                 h.cfg.NumCPUs,
		"memory":              h.cfg.Memory,
		"object_store_memory": float64(h.cfg.ObjectStoreMemory),
	}
	if err := h.detectGPUs(res); err != nil {
		return err
	}
	for k, v := range h.cfg.Resources {
		res[k] = v
	}
	// The front end needs the raylet and the raylet needs the front end's
	// address, so bind the listener first.
	var cs *clientserver.Server
	rl, err := raylet.New(raylet.Config{
		NodeID: nodeID, NodeIP: h.cfg.NodeIP, Resources: res, Store: h.Store,
		Python: h.cfg.Python, SessionDir: filepath.Join(h.cfg.SessionDir, "raylet"),
		PrestartWorkers: h.cfg.PrestartWorkers, IdleWorkerTimeout: h.cfg.IdleWorkerTimeout, Logger: h.log,
		OnActorDead: func(id ids.ActorID) {
			if cs != nil {
				cs.ActorDead(id)
			}
		},
		OnActorRef: func(id ids.ActorID, holder string, retain bool) {
			if cs != nil {
				cs.ActorRef(id, holder, retain)
			}
		},
		OnHolderGone: func(holder string) {
			if cs != nil {
				cs.HolderGone(holder)
			}
		},
		OnActorReady: func(id ids.ActorID, info []byte) {
			if cs != nil {
				cs.ActorReady(id, info)
			}
		},
		Logs: func(job ids.JobID, line string, stderr bool) {
			if cs != nil {
				cs.PublishWorkerLog(job, line, stderr)
			}
		},
	})
	if err != nil {
		return err
	}
	dashboard := ""
	if h.cfg.StatusAddr != "" {
		dashboard = h.cfg.StatusAddr
	}
	cs, err = clientserver.New(clientserver.Config{
		Addr: h.cfg.ClientAddr, RayVersion: h.cfg.RayVersion, PythonVersion: pyVersion,
		NodeIP: h.cfg.NodeIP, DashboardURL: dashboard, Store: h.Store, KV: h.KV, Jobs: h.Jobs, Actors: h.Actors, Node: rl,
		PackagesDir: filepath.Join(h.cfg.SessionDir, "packages"), Logger: h.log,
	})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(h.cfg.SessionDir, "packages"), 0o755); err != nil {
		return err
	}
	addr, err := cs.Listen()
	if err != nil {
		return err
	}
	h.addr = addr
	rl.SetClientAddress(addr.String())
	if err := cs.Start(ctx); err != nil {
		return err
	}
	if err := rl.Start(ctx); err != nil {
		cs.Close()
		return err
	}
	h.Raylet, h.Client = rl, cs
	if h.cfg.StatusAddr != "" {
		if err := h.startStatus(); err != nil {
			h.Close()
			return err
		}
	}
	h.log.Info("gray pool started", "ray_client", addr.String(), "python", pyVersion, "cpus", h.cfg.NumCPUs, "session_dir", h.cfg.SessionDir)
	return nil
}

// detectGPUs adds GPU and accelerator_type resources from NVML (or a mock
// machine), honouring a --num-gpus override.
func (h *Head) detectGPUs(res map[string]float64) error {
	var devs []gpu.Device
	var err error
	if h.cfg.GPUMock != "" {
		devs, err = gpu.DetectMock(h.cfg.GPUMock)
		if err != nil {
			return err
		}
	} else if h.cfg.NumGPUs != 0 {
		devs, err = gpu.Detect()
		if err != nil {
			h.log.Warn("GPU detection failed; offering no GPUs", "err", err)
			devs = nil
		}
	}
	h.GPUs = devs
	for k, v := range gpu.Resources(devs) {
		res[k] = v
	}
	if h.cfg.NumGPUs >= 0 {
		if h.cfg.NumGPUs == 0 {
			for k := range res {
				if k == "GPU" || strings.HasPrefix(k, "accelerator_type:") {
					delete(res, k)
				}
			}
		} else {
			res["GPU"] = h.cfg.NumGPUs
		}
	}
	if res["GPU"] > 0 {
		h.log.Info("GPUs offered", "count", res["GPU"], "devices", len(devs))
	}
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
	if h.http != nil {
		_ = h.http.Close()
	}
	if h.Client != nil {
		_ = h.Client.Close()
	}
	if h.Raylet != nil {
		_ = h.Raylet.Close()
	}
	return nil
}

// Status is what `gray status` shows.
type Status struct {
	ClientAddress string                       `json:"client_address"`
	Nodes         []NodeStatus                 `json:"nodes"`
	Sessions      []clientserver.SessionInfo   `json:"sessions"`
	GPUs          []gpu.Device                 `json:"gpus,omitempty"`
	Workers       []raylet.WorkerInfo          `json:"workers"`
	Objects       int                          `json:"objects"`
	ObjectBytes   int64                        `json:"object_bytes"`
	Extra         map[string]map[string]string `json:"extra,omitempty"`
}

// NodeStatus is one node's line in the status.
type NodeStatus struct {
	NodeID    string             `json:"node_id"`
	Address   string             `json:"address"`
	Alive     bool               `json:"alive"`
	Total     map[string]float64 `json:"total"`
	Available map[string]float64 `json:"available"`
}

// Snapshot returns the pool's status.
func (h *Head) Snapshot() Status {
	return Status{
		ClientAddress: h.ClientAddr(),
		Nodes: []NodeStatus{{
			NodeID: h.Raylet.NodeID().Hex(), Address: h.cfg.NodeIP, Alive: true,
			Total: h.Raylet.Total(), Available: h.Raylet.Available(),
		}},
		Sessions:    h.Client.Sessions(),
		GPUs:        h.GPUs,
		Workers:     h.Raylet.Workers(),
		Objects:     h.Store.Len(),
		ObjectBytes: h.Store.Used(),
	}
}

func (h *Head) startStatus() error {
	ln, err := net.Listen("tcp", h.cfg.StatusAddr)
	if err != nil {
		return fmt.Errorf("status endpoint: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/api/gray/status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(h.Snapshot())
	})
	h.http = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = h.http.Serve(ln) }()
	return nil
}

func pythonVersion(python string) (string, error) {
	out, err := exec.Command(python, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])").Output()
	if err != nil {
		return "", fmt.Errorf("worker python %q does not run: %w", python, err)
	}
	return strings.TrimSpace(string(out)), nil
}

func totalMemory() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err == nil {
		var kb int64
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "MemTotal:") {
				fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(line, "MemTotal:")), "%d", &kb)
				return kb * 1024
			}
		}
	}
	return 8 << 30
}

// defaultObjectStoreMemory follows Ray: 30% of memory.
func defaultObjectStoreMemory() int64 { return totalMemory() * 3 / 10 }

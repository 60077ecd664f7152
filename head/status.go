package head

import (
	"crypto/tls"
	"encoding/json"
	"net/http"
	"time"

	"github.com/gray-cluster/gray/clientserver"
	"github.com/gray-cluster/gray/dashboard"
	"github.com/gray-cluster/gray/gcs"
	"github.com/gray-cluster/gray/gpu"
	"github.com/gray-cluster/gray/raylet"
	"github.com/gray-cluster/gray/stateapi"
)

// Status is what `gray status` shows.
type Status struct {
	ClientAddress string                       `json:"client_address"`
	NodeAddress   string                       `json:"node_address,omitempty"`
	Nodes         []NodeStatus                 `json:"nodes"`
	Sessions      []clientserver.SessionInfo   `json:"sessions"`
	GPUs          []gpu.Device                 `json:"gpus,omitempty"`
	Workers       []raylet.WorkerInfo          `json:"workers"`
	Objects       int                          `json:"objects"`
	ObjectBytes   int64                        `json:"object_bytes"`
	SpilledBytes  int64                        `json:"spilled_bytes"`
	Spilled       int                          `json:"spilled_objects"`
	Extra         map[string]map[string]string `json:"extra,omitempty"`
	// Demands are the resource shapes waiting for room.
	Demands []Demand `json:"demands,omitempty"`
}

// NodeStatus is one node's line in the status.
type NodeStatus struct {
	NodeID   string            `json:"node_id"`
	Address  string            `json:"address"`
	Hostname string            `json:"hostname,omitempty"`
	Head     bool              `json:"head"`
	State    string            `json:"state"`
	Alive    bool              `json:"alive"`
	Region   string            `json:"region,omitempty"`
	GPUs     string            `json:"gpus,omitempty"`
	Labels   map[string]string `json:"labels,omitempty"`
	// RTTms is the gossip round-trip estimate from the head (0: unknown).
	RTTms     float64            `json:"rtt_ms,omitempty"`
	Total     map[string]float64 `json:"total"`
	Available map[string]float64 `json:"available"`
	// GPUDevices are the node's GPUs as last sampled, withdrawn ones marked.
	GPUDevices []gpu.Device `json:"gpu_devices,omitempty"`
}

// Snapshot returns the pool's status.
func (h *Head) Snapshot() Status {
	return Status{
		ClientAddress: h.ClientAddr(),
		Nodes:         h.nodeStatus(),
		NodeAddress:   h.NodeAddr(),
		Sessions:      h.Client.Sessions(),
		GPUs:          h.NodeGPUs(h.Raylet.NodeID()),
		Workers:       h.Raylet.Workers(),
		Objects:       h.Store.Len(),
		ObjectBytes:   h.Store.Used(),
		SpilledBytes:  h.Store.SpilledBytes(),
		Spilled:       h.Store.Spilled(),
		Demands:       h.demands(),
	}
}

func (h *Head) nodeStatus() []NodeStatus {
	var out []NodeStatus
	rtt := h.GossipRTT()
	for _, n := range h.Cluster.Nodes() {
		out = append(out, NodeStatus{
			NodeID: n.ID.Hex(), Address: n.IP, Hostname: n.Hostname, Head: n.IsHead, State: string(n.State),
			Alive: n.State != gcs.NodeDead, Region: n.Labels[RegionLabel], GPUs: n.GPUs, Labels: n.Labels,
			Total: n.Total, Available: n.Available, RTTms: rtt[n.ID.Hex()],
		})
		if n.State != gcs.NodeDead {
			out[len(out)-1].GPUDevices = h.NodeGPUs(n.ID)
		}
	}
	return out
}

// RegionLabel is Ray's node label for a node's region.
const RegionLabel = "ray.io/availability-region"

func (h *Head) startStatus() error {
	ln := h.statusLn
	if h.tlsConf != nil {
		ln = tls.NewListener(ln, h.tlsConf)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/api/gray/status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(h.snapshotFor(r.Context()))
	})
	h.billingHandlers(mux)
	if h.cfg.Auth.MetricsAddr != "" {
		if err := h.startMetrics(h.cfg.Auth.MetricsAddr); err != nil {
			ln.Close()
			return err
		}
	} else {
		mux.Handle("/metrics", h.metricsHandler())
	}
	h.jobsAPI(mux)
	mux.Handle(stateapi.Prefix, h.stateHandler())
	mux.Handle(dashboard.PagePath, dashboard.Handler())
	h.http = &http.Server{Handler: h.httpHandler(mux), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = h.http.Serve(ln) }()
	return nil
}

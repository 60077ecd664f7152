package nodemanager

import (
	"time"

	raypb "github.com/gray-cluster/gray/proto/ray/raypb"
)

// labels are the node labels, with Ray's ray.io/node-id.
func (r *Raylet) labels() map[string]string {
	out := map[string]string{}
	for k, v := range r.cfg.Labels {
		out[k] = v
	}
	out["ray.io/node-id"] = r.nodeID.String()
	return out
}

// nodeInfo is the GcsNodeInfo registered with the GCS.
func (r *Raylet) nodeInfo() *raypb.GcsNodeInfo {
	c := r.cfg
	return &raypb.GcsNodeInfo{
		NodeId:                   c.NodeID,
		NodeManagerAddress:       c.NodeIP,
		NodeManagerHostname:      c.NodeName,
		RayletSocketName:         c.RayletSocket,
		ObjectStoreSocketName:    c.PlasmaSocket,
		NodeManagerPort:          int32(r.port),
		ObjectManagerPort:        int32(c.ObjectManagerPort),
		MetricsExportPort:        int32(c.MetricsExportPort),
		RuntimeEnvAgentPort:      int32(c.RuntimeEnvAgentPort),
		MetricsAgentPort:         int32(c.MetricsAgentPort),
		DashboardAgentListenPort: int32(c.DashboardAgentListenPort),
		State:                    raypb.GcsNodeInfo_ALIVE,
		ResourcesTotal:           r.res.Total(),
		NodeName:                 c.NodeName,
		StartTimeMs:              uint64(r.start.UnixMilli()),
		IsHeadNode:               c.IsHead,
		Labels:                   r.labels(),
		TempDir:                  c.TempDir,
		SessionDir:               c.SessionDir,
	}
}

// touchBusyLocked records activity for the idle duration reported to the GCS.
func (r *Raylet) touchBusyLocked() { r.lastBusy = time.Now() }

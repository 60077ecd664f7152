package nodemanager

import (
	"bytes"
	"context"
	"encoding/hex"
	"sort"
	"sync"
	"time"

	commonpb "github.com/gray-cluster/gray/proto/ray/commonpb"
	raypb "github.com/gray-cluster/gray/proto/ray/raypb"
	"github.com/gray-cluster/gray/resledger"
)

// A lease that cannot run on this node now is sent on ("spilled back") to
// a node that can take it, as Ray's raylets do: the reply names the other
// raylet and the core worker asks that one with grant_or_reject set. The
// raylet learns the other nodes from the GCS (node table and resource
// usage), refreshed every viewPeriod while more than one node is alive.

// viewPeriod is how often the cluster view is refreshed from the GCS.
const viewPeriod = 250 * time.Millisecond

// remoteNode is another alive node as this raylet last saw it.
type remoteNode struct {
	id     []byte
	addr   *commonpb.Address // its raylet: node id, ip, port
	total  map[string]float64
	avail  map[string]float64
	labels map[string]string
}

// fits reports whether req fits n's available (or, with total, ever).
func (n *remoteNode) fits(req map[string]float64, total bool) bool {
	have := n.avail
	if total {
		have = n.total
	}
	for k, v := range req {
		if v > 0 && resledger.HaveOf(have, k)+1e-9 < v {
			return false
		}
	}
	return true
}

// utilisation is the largest used fraction over the resources req asks for.
func (n *remoteNode) utilisation(req map[string]float64) float64 {
	u := 0.0
	for k := range req {
		if t := n.total[k]; t > 0 {
			if f := 1 - n.avail[k]/t; f > u {
				u = f
			}
		}
	}
	return u
}

// clusterView is the other nodes, newest first refresh wins.
type clusterView struct {
	mu    sync.Mutex
	nodes []*remoteNode
}

func (v *clusterView) set(nodes []*remoteNode) {
	v.mu.Lock()
	v.nodes = nodes
	v.mu.Unlock()
}

func (v *clusterView) snapshot() []*remoteNode {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.nodes
}

// take subtracts req from n's available resources in the view, so that a
// burst of spilled leases spreads instead of piling on one node.
func (v *clusterView) take(n *remoteNode, req map[string]float64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for k, x := range req {
		n.avail[k] = resledger.HaveOf(n.avail, k) - x
	}
}

// spillChoice is where a lease should go.
type spillChoice struct {
	// local: queue (or run) it here.
	local bool
	node  *remoteNode
}

// chooseNode is the spillback policy, pure: given whether the lease can
// ever / now run here and the other nodes, it keeps the lease here when it
// fits now (or when no other node could do better), else picks the least
// utilised other node where it fits now, else one where it could ever
// fit while this node never can. Nodes the lease's affinity or label
// selector excludes are skipped.
func chooseNode(req map[string]float64, spec *commonpb.LeaseSpec, localFits, localFeasible, localExcluded bool, nodes []*remoteNode) spillChoice {
	spread := spec.GetSchedulingStrategy().GetSpreadSchedulingStrategy() != nil
	if localFits && !localExcluded && !spread {
		return spillChoice{local: true}
	}
	var now, ever []*remoteNode
	for _, n := range nodes {
		if excludesNode(spec, n.id, n.labels) {
			continue
		}
		if n.fits(req, false) {
			now = append(now, n)
		} else if n.fits(req, true) {
			ever = append(ever, n)
		}
	}
	byLoad := func(ns []*remoteNode) *remoteNode {
		sort.SliceStable(ns, func(i, j int) bool {
			ui, uj := ns[i].utilisation(req), ns[j].utilisation(req)
			if ui != uj {
				return ui < uj
			}
			return bytes.Compare(ns[i].id, ns[j].id) < 0
		})
		return ns[0]
	}
	if spread && localFits && !localExcluded {
		// SPREAD: here only if no other node is less busy.
		if len(now) == 0 {
			return spillChoice{local: true}
		}
		return spillChoice{node: byLoad(now)}
	}
	if len(now) > 0 {
		return spillChoice{node: byLoad(now)}
	}
	if localFeasible && !localExcluded {
		return spillChoice{local: true}
	}
	if len(ever) > 0 {
		return spillChoice{node: byLoad(ever)}
	}
	// Infeasible everywhere: it waits here, reported as infeasible demand.
	return spillChoice{local: true}
}

// refreshView reads the alive nodes and their resources from the GCS.
func (r *Raylet) refreshView(ctx context.Context) error {
	ni, err := r.gcs.node.GetAllNodeInfo(ctx, &raypb.GetAllNodeInfoRequest{})
	if err != nil {
		return err
	}
	addrs := map[string]*raypb.GcsNodeInfo{}
	for _, n := range ni.GetNodeInfoList() {
		if n.GetState() == raypb.GcsNodeInfo_ALIVE && !bytes.Equal(n.GetNodeId(), r.cfg.NodeID) {
			addrs[string(n.GetNodeId())] = n
		}
	}
	if len(addrs) == 0 {
		r.view.set(nil)
		return nil
	}
	ru, err := r.gcs.res.GetAllResourceUsage(ctx, &raypb.GetAllResourceUsageRequest{})
	if err != nil {
		return err
	}
	var nodes []*remoteNode
	for _, d := range ru.GetResourceUsageData().GetBatch() {
		info, ok := addrs[string(d.GetNodeId())]
		if !ok || d.GetIsDraining() {
			continue
		}
		n := &remoteNode{
			id:     d.GetNodeId(),
			addr:   &commonpb.Address{NodeId: d.GetNodeId(), IpAddress: info.GetNodeManagerAddress(), Port: info.GetNodeManagerPort()},
			total:  d.GetResourcesTotal(),
			avail:  map[string]float64{},
			labels: info.GetLabels(),
		}
		for k, v := range d.GetResourcesAvailable() {
			n.avail[k] = v
		}
		nodes = append(nodes, n)
	}
	r.view.set(nodes)
	return nil
}

// viewLoop keeps the cluster view fresh and spills queued leases that a
// now-free node can take while this one cannot.
func (r *Raylet) viewLoop(ctx context.Context) {
	t := time.NewTicker(viewPeriod)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := r.refreshView(rctx)
		cancel()
		if err != nil {
			r.log.Debug("cluster view refresh failed", "err", err)
			continue
		}
		if len(r.view.snapshot()) > 0 {
			r.mu.Lock()
			r.spillQueuedLocked()
			r.mu.Unlock()
		}
	}
}

// spillLocked decides for a new lease: a non-nil address sends it on.
func (r *Raylet) spillLocked(l *lease) *commonpb.Address {
	nodes := r.view.snapshot()
	if len(nodes) == 0 {
		return nil
	}
	c := chooseNode(l.placement, l.spec, r.res.Fits(l.placement), r.res.Feasible(l.placement), l.elsewhere, nodes)
	if c.local {
		return nil
	}
	r.view.take(c.node, l.placement)
	r.log.Debug("lease spilled back", "lease", hex.EncodeToString([]byte(l.id)), "to", hex.EncodeToString(c.node.id))
	return c.node.addr
}

// spillQueuedLocked sends on queued leases that do not fit here now but
// fit on another node now.
func (r *Raylet) spillQueuedLocked() {
	kept := r.queue[:0]
	for _, l := range r.queue {
		if l.noSpill && !r.res.Fits(l.placement) {
			// Spilled here, it fitted when it came but something else took
			// the resources while its worker started: back to the sender.
			l.finish(leaseResult{rejected: true})
			continue
		}
		if !l.noSpill && (!r.res.Fits(l.placement) || l.elsewhere) {
			if to := r.spillLocked(l); to != nil {
				l.finish(leaseResult{retryAt: to})
				continue
			}
		}
		kept = append(kept, l)
	}
	for i := len(kept); i < len(r.queue); i++ {
		r.queue[i] = nil
	}
	r.queue = kept
}

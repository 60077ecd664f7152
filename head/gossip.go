package head

import (
	"context"
	"net"
	"strconv"

	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/membership"
)

// startGossip joins the head to the pool's memberlist (WAN profile, key
// derived from the join secret). Gossip pauses providers it stops reaching;
// the control channel decides when they are dead.
func (h *Head) startGossip(ctx context.Context, secret string) (*membership.Membership, error) {
	host, port, err := net.SplitHostPort(h.cfg.GossipAddr)
	if err != nil {
		return nil, err
	}
	p, _ := strconv.Atoi(port)
	m, err := membership.New(membership.Config{
		Name: h.Raylet.NodeID().Hex(), BindAddr: host, BindPort: p, AdvertiseAddr: h.cfg.NodeIP,
		Meta: membership.Meta{
			NodeID: h.Raylet.NodeID().Hex(), Role: membership.RoleHead, Region: h.cfg.Labels[RegionLabel],
			ControlAddr: h.nodes.addr,
		},
		SecretKey: membership.KeyFromSecret(secret), Profile: membership.ProfileWAN, Logger: h.log,
		OnEvent: func(ev membership.Event) {
			if ev.Member.Meta.Role != membership.RoleRaylet || h.Nodes == nil {
				return
			}
			id, err := ids.NodeFromHex(ev.Member.Meta.NodeID)
			if err != nil {
				return
			}
			switch ev.Type {
			case membership.EventSuspect:
				h.Nodes.GossipSuspect(id, true)
			case membership.EventAlive, membership.EventJoined:
				h.Nodes.GossipSuspect(id, false)
			}
		},
	})
	if err != nil {
		return nil, err
	}
	if err := m.Start(ctx); err != nil {
		return nil, err
	}
	return m, nil
}

// GossipRTT reports the gossip round-trip estimate to each node.
func (h *Head) GossipRTT() map[string]float64 {
	out := map[string]float64{}
	if h.gossip == nil {
		return out
	}
	for _, m := range h.gossip.Members() {
		if m.RTT > 0 {
			out[m.Meta.NodeID] = float64(m.RTT.Microseconds()) / 1000
		}
	}
	return out
}

package provider

import (
	"net"
	"strconv"

	"github.com/gray-cluster/gray/membership"
)

// startGossip joins the pool's memberlist at the head's gossip address, once.
// Gossip is a hint (liveness, RTT, metadata): a provider whose UDP the head
// cannot reach (NAT) keeps working over its control channel.
func (p *Provider) startGossip(headGossip string) {
	p.mu.Lock()
	started := p.gossip != nil
	p.mu.Unlock()
	if started || headGossip == "" || p.cfg.GossipPort < 0 {
		return
	}
	advHost, advPort := p.cfg.NodeIP, 0
	if a := p.cfg.GossipAdvertise; a != "" {
		host, port, err := net.SplitHostPort(a)
		n, perr := strconv.Atoi(port)
		if err != nil || perr != nil {
			p.log.Warn("gossip off: bad --gossip-advertise", "addr", a)
			return
		}
		advHost, advPort = host, n
	}
	secret, _, err := ParseToken(p.cfg.Token)
	if err != nil {
		p.log.Info("gossip off: no join token to derive its key from")
		return
	}
	m, err := membership.New(membership.Config{
		Name: p.nodeID.Hex(), BindAddr: p.cfg.GossipBind, BindPort: p.cfg.GossipPort,
		AdvertiseAddr: advHost, AdvertisePort: advPort,
		Meta: membership.Meta{
			NodeID: p.nodeID.Hex(), Role: membership.RoleRaylet, Region: p.cfg.Labels["ray.io/availability-region"],
			GPUs: p.cfg.GPUs,
		},
		SecretKey: membership.KeyFromSecret(secret), Profile: membership.ProfileWAN, Logger: p.log,
	})
	if err != nil {
		p.log.Warn("gossip off", "err", err)
		return
	}
	if err := m.Start(p.ctx); err != nil {
		p.log.Warn("gossip off", "err", err)
		return
	}
	if _, err := m.Join([]string{headGossip}); err != nil {
		p.log.Warn("gossip join failed; continuing without", "head", headGossip, "err", err)
	}
	p.mu.Lock()
	p.gossip = m
	p.mu.Unlock()
}

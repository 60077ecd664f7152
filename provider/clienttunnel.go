package provider

import (
	"context"
	"net"
	"sync"

	"github.com/gray-cluster/gray/tunnel"
)

// A provider's workers reach the head's Ray Client port through the pool's
// tunnel: a listener on 127.0.0.1 forwards each of their connections over
// the provider's QUIC link (mutual TLS) to whichever head is active. So a
// provider needs no TCP path to the head, and after a failover to a standby
// head its workers' reconnects reach the new head at the same local address.

// clientTunnelKey is the forwarder's key for the one local listener.
const clientTunnelKey = "127.0.0.1:0"

type clientTunnel struct {
	fw *tunnel.Forwarder

	mu     sync.Mutex
	addr   string                   // the local listener workers connect to
	agents map[string]*tunnel.Agent // by head address (dial-only agents)
}

// clientAddress starts the tunnel (once) towards the head's advertised
// client address and returns the local address workers should use; later
// calls re-point it (a head's address after a failover).
func (p *Provider) clientAddress(ctx context.Context, headClient string) (string, error) {
	ct := &p.clientTun
	ct.mu.Lock()
	if ct.fw == nil {
		ct.agents = map[string]*tunnel.Agent{}
		ct.fw = tunnel.NewForwarder(func(ctx context.Context, target string) (net.Conn, error) {
			return p.headAgent(p.currentHead()).Dial(ctx, target)
		}, p.log)
	}
	fw := ct.fw
	ct.mu.Unlock()
	addr, err := fw.Forward(ctx, clientTunnelKey, headClient)
	if err != nil {
		return "", err
	}
	ct.mu.Lock()
	ct.addr = addr
	ct.mu.Unlock()
	return addr, nil
}

// headAgent is a dial-only tunnel agent for one head address.
func (p *Provider) headAgent(head string) *tunnel.Agent {
	ct := &p.clientTun
	ct.mu.Lock()
	defer ct.mu.Unlock()
	a, ok := ct.agents[head]
	if !ok {
		a = tunnel.NewAgent(p.tr, head, tunnel.AgentConfig{Logger: p.log})
		ct.agents[head] = a
	}
	return a
}

func (p *Provider) closeClientTunnel() {
	ct := &p.clientTun
	ct.mu.Lock()
	fw, agents := ct.fw, ct.agents
	ct.fw, ct.agents = nil, nil
	ct.mu.Unlock()
	if fw != nil {
		_ = fw.Close()
	}
	for _, a := range agents {
		_ = a.Close()
	}
}

// retargetClient re-points an existing tunnel at the head's client address
// (it differs after a failover to a standby head on another machine).
func (p *Provider) retargetClient(headClient string) {
	ct := &p.clientTun
	ct.mu.Lock()
	started := ct.fw != nil
	ct.mu.Unlock()
	if !started || p.cfg.ClientAddress != "" || headClient == "" {
		return
	}
	if _, err := p.clientAddress(p.ctx, headClient); err != nil {
		p.log.Warn("cannot re-point the workers' tunnel to the head", "err", err)
	}
}

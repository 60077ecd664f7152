package nodeserver

import (
	"context"
	"fmt"
	"time"

	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/transport"
)

// PeerProbeTimeout bounds the head's check that a provider's peer object
// service can be reached.
var PeerProbeTimeout = 3 * time.Second

// probeIdentity is the certificate name the head probes peers with.
const probeIdentity = "head-peer-probe"

// probePeer checks, from the head, that the peer address a provider
// announced answers with that provider's certificate. Only then does the
// head name the provider as a holder to others: a provider behind NAT (no
// inbound UDP) announces an address nobody can reach, and every puller
// would otherwise spend a dial timeout on it before falling back to the
// relay. The head's view stands in for the others': a provider the head
// cannot reach is relayed even if some peers could reach it.
func (s *Server) probePeer(ctx context.Context, nc *nodeConn, gen int, addr string) {
	err := s.dialPeer(ctx, nc.r.id.Hex(), addr)
	s.mu.Lock()
	current := nc.gen == gen && nc.peerAddr == addr
	if current {
		nc.peerProbed, nc.peerReachable = true, err == nil
	}
	s.mu.Unlock()
	switch {
	case !current:
	case err != nil:
		s.log.Info("provider's peer service unreachable from the head; its objects go through the head",
			"node", nc.r.id.Hex(), "addr", addr, "err", err)
	default:
		s.log.Debug("provider's peer service reachable", "node", nc.r.id.Hex(), "addr", addr)
	}
}

// dialPeer opens one stream to addr and checks who answered.
func (s *Server) dialPeer(ctx context.Context, node, addr string) error {
	if s.cfg.CA == nil {
		return fmt.Errorf("no pool CA to probe with")
	}
	cert, err := s.cfg.CA.NewNodeCert(probeIdentity)
	if err != nil {
		return err
	}
	tr, err := transport.NewQUIC(transport.Config{Certificate: &cert, CA: s.cfg.CA.Pool(), Logger: s.log})
	if err != nil {
		return err
	}
	defer tr.Close()
	ctx, cancel := context.WithTimeout(ctx, PeerProbeTimeout)
	defer cancel()
	conn, err := tr.Dial(ctx, addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if info, ok := transport.PeerOf(conn); !ok || info.NodeID != node {
		return fmt.Errorf("%s answered as %q, want %s", addr, info.NodeID, node)
	}
	return nil
}

// PeerProbe reports whether the head has checked a provider's peer address
// yet, and whether it reached the provider there.
func (s *Server) PeerProbe(id ids.NodeID) (probed, reachable bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if nc := s.remotes[id]; nc != nil {
		return nc.peerProbed, nc.peerReachable
	}
	return false, false
}

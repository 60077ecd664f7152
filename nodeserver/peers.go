package nodeserver

import (
	"context"
	"net"
	"slices"
	"sync/atomic"

	"google.golang.org/grpc/peer"

	"github.com/gray-cluster/gray/internal/ids"
	pb "github.com/gray-cluster/gray/proto/nodepb"
)

// regionLabel is the node label that names a provider's region; holders in
// the puller's region are offered first.
const regionLabel = "ray.io/availability-region"

// maxHolders bounds how many holders of one object the head offers.
const maxHolders = 3

// Transfer counts the object bytes one provider pulled, directly from other
// providers and relayed through the head, as the provider reported them.
type Transfer struct {
	Direct, Relayed int64
}

// transferCounters is a provider's running Transfer.
type transferCounters struct {
	direct, relayed atomic.Int64
}

// peerAddress completes the peer address a provider announced: a host left
// empty or unspecified ("0.0.0.0", "::") becomes the IP the head sees the
// provider's control channel come from.
func peerAddress(ctx context.Context, announced string) string {
	if announced == "" {
		return ""
	}
	host, port, err := net.SplitHostPort(announced)
	if err != nil {
		return ""
	}
	if ip := net.ParseIP(host); host != "" && (ip == nil || !ip.IsUnspecified()) {
		return announced
	}
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return ""
	}
	seen, _, err := net.SplitHostPort(p.Addr.String())
	if err != nil {
		return ""
	}
	return net.JoinHostPort(seen, port)
}

// locate lists, for each object in deps, the connected providers other
// than node that hold a copy and serve peers, same region first. Objects
// without such holders, and small ones, are left out.
func (s *Server) locate(node ids.NodeID, deps []ids.ObjectID) []*pb.PeerLocation {
	if len(deps) == 0 {
		return nil
	}
	type holder struct {
		id     ids.NodeID
		addr   string
		region string
	}
	var out []*pb.PeerLocation
	for _, oid := range deps {
		if size, ok := s.cfg.Store.Size(oid); ok && size < PeerRedirectMin {
			continue // cheaper from the head than over a connection to a peer
		}
		nodes := s.dir.holders(oid)
		if len(nodes) == 0 {
			continue
		}
		s.mu.Lock()
		region := ""
		if nc := s.remotes[node]; nc != nil {
			region = nc.info.Labels[regionLabel]
		}
		var hs []holder
		for _, n := range nodes {
			nc := s.remotes[n]
			if n == node || nc == nil || !nc.connected || nc.suspect || nc.peerAddr == "" || !nc.peerReachable {
				continue
			}
			hs = append(hs, holder{id: n, addr: nc.peerAddr, region: nc.info.Labels[regionLabel]})
		}
		s.mu.Unlock()
		if len(hs) == 0 {
			continue
		}
		// Stable: among equals the first holder (the producer) stays first.
		slices.SortStableFunc(hs, func(a, b holder) int {
			return rank(a.region, region) - rank(b.region, region)
		})
		loc := &pb.PeerLocation{ObjectId: oid.Bytes()}
		for _, h := range hs[:min(len(hs), maxHolders)] {
			loc.Holders = append(loc.Holders, &pb.PeerHolder{NodeId: h.id.Hex(), Address: h.addr})
		}
		out = append(out, loc)
	}
	return out
}

// rank orders a holder's region relative to the puller's: same first.
func rank(holder, puller string) int {
	if puller != "" && holder == puller {
		return 0
	}
	return 1
}

// peerTransfer records a provider's report of one finished pull: the
// counters, and that the provider now holds a copy.
func (s *Server) peerTransfer(r *remote, m *pb.PeerTransfer) error {
	oid, err := ids.ObjectFromBytes(m.ObjectId)
	if err != nil {
		return err
	}
	// Relayed bytes were counted as the head sent them (see relayed).
	r.transfers.direct.Add(m.DirectBytes)
	if m.DirectBytes > 0 {
		// Pulls relayed by the head are recorded by PullObject itself.
		s.dir.add(oid, r.id)
	}
	if m.FromNode != "" {
		s.log.Debug("object pulled from a peer", "object", oid.Hex(), "node", r.id.Hex(), "from", m.FromNode,
			"direct", m.DirectBytes, "relayed", m.RelayedBytes)
	}
	return nil
}

// Transfers returns each known provider's pulled bytes, direct and relayed.
func (s *Server) Transfers() map[ids.NodeID]Transfer {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[ids.NodeID]Transfer, len(s.remotes))
	for id, nc := range s.remotes {
		out[id] = Transfer{Direct: nc.r.transfers.direct.Load(), Relayed: nc.r.transfers.relayed.Load()}
	}
	return out
}

// PeerAddress is the peer address the head hands out for a provider ("" if
// it serves no peers or is unknown).
func (s *Server) PeerAddress(node ids.NodeID) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if nc := s.remotes[node]; nc != nil {
		return nc.peerAddr
	}
	return ""
}

// DirectPeerAddress is a provider's peer address once the head has reached
// it there and while it is connected and not suspect ("" otherwise): where
// other providers may dial it directly.
func (s *Server) DirectPeerAddress(node ids.NodeID) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if nc := s.remotes[node]; nc != nil && nc.connected && !nc.suspect && nc.peerReachable {
		return nc.peerAddr
	}
	return ""
}

// relayed counts n object bytes the head sent node.
func (s *Server) relayed(node ids.NodeID, n int64) {
	s.mu.Lock()
	nc := s.remotes[node]
	s.mu.Unlock()
	if nc != nil {
		nc.r.transfers.relayed.Add(n)
	}
}

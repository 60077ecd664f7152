package provider

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"

	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/objstream"
	pb "github.com/gray-cluster/gray/proto/nodepb"
	"github.com/gray-cluster/gray/transport"
	"github.com/gray-cluster/gray/tunnel"
)

// Sentinel errors of the direct (provider to provider) object path.
var (
	// ErrPeerIdentity: the provider at a holder's address is not the
	// holder the head named.
	ErrPeerIdentity = errors.New("provider: peer is not the expected node")
	// ErrPeerUnreachable: no connection to the holder within PeerDialTimeout.
	ErrPeerUnreachable = errors.New("provider: peer unreachable")
	// ErrPeerStalled: a holder stopped sending in the middle of a transfer.
	ErrPeerStalled = errors.New("provider: peer stalled")
)

// Bounds of the direct path: how long connecting to a holder may take, how
// long a holder may go silent in a transfer, how long a holder that failed
// is skipped, and how many streams one pull from a holder is striped over.
const (
	PeerDialTimeout = 2 * time.Second
	PeerStallTime   = 10 * time.Second
	peerBackoff     = 30 * time.Second
	peerStripes     = 4
)

// peerNet is the provider's side of the direct path: a QUIC transport with
// the node certificate (mutual TLS against the pool CA) that serves the
// PeerObjects service and dials other providers.
type peerNet struct {
	p   *Provider
	tr  transport.Transport
	ln  net.Listener
	srv *grpc.Server
	// advertise is the address announced to the head ("" when not serving).
	advertise string

	mu      sync.Mutex
	clients map[string]*peerClient // by node id + address
	failed  map[string]time.Time   // address -> when it last failed
}

// peerClient is a set of gRPC connections (QUIC streams of one QUIC
// connection) to one holder.
type peerClient struct {
	node, addr string
	conns      []*grpc.ClientConn
}

// startPeers brings up the peer transport and, unless disabled, the
// listener and its service.
func (p *Provider) startPeers(cert *tls.Certificate, pool *x509.CertPool) error {
	tr, err := transport.NewQUIC(transport.Config{
		Certificate: cert, CA: pool, Logger: p.log,
		// A holder that cannot be reached must fail fast: the head is
		// always there to fall back on.
		HandshakeTimeout: PeerDialTimeout / 2,
		MaxIdleTimeout:   30 * time.Second,
	})
	if err != nil {
		return err
	}
	pn := &peerNet{p: p, tr: tr, clients: map[string]*peerClient{}, failed: map[string]time.Time{}}
	p.peers = pn
	p.wg.Add(1)
	go p.logTransfers(time.Minute)
	if p.cfg.NoPeer {
		return nil
	}
	bind := p.cfg.PeerBind
	if bind == "" {
		bind = ":" + strconv.Itoa(p.cfg.PeerPort)
	}
	pn.ln, err = tr.Listen(p.ctx, bind)
	if err != nil {
		return fmt.Errorf("provider: peer listener: %w", err)
	}
	pn.advertise = advertiseAddr(p.cfg.PeerAdvertise, p.cfg.NodeIP, pn.ln.Addr())
	pn.srv = grpc.NewServer()
	pb.RegisterPeerObjectsServer(pn.srv, &peerService{o: p.objects})
	p.wg.Add(1)
	// Tunnel streams (other providers' direct connections to this one's
	// native Ray ports) share the listener with the peer object service.
	mux := tunnel.Mux(pn.ln, p.handleDirect, 10*time.Second)
	go func() {
		defer p.wg.Done()
		if err := transport.Serve(p.ctx, pn.srv, mux); err != nil && !errors.Is(err, net.ErrClosed) {
			p.log.Warn("peer service stopped", "err", err)
		}
	}()
	p.log.Info("serving peers", "listen", pn.ln.Addr().String(), "advertise", pn.advertise)
	return nil
}

// advertiseAddr is the peer address announced to the head: the configured
// one, else the node IP (unless loopback, which other machines cannot
// use) with the listener's port, else just the port (the head fills in the
// address it sees the provider at).
func advertiseAddr(configured, nodeIP string, ln net.Addr) string {
	if configured != "" {
		return configured
	}
	port := "0"
	if u, ok := ln.(*net.UDPAddr); ok {
		port = strconv.Itoa(u.Port)
	} else if _, pt, err := net.SplitHostPort(ln.String()); err == nil {
		port = pt
	}
	if ip := net.ParseIP(nodeIP); ip != nil && !ip.IsLoopback() && !ip.IsUnspecified() {
		return net.JoinHostPort(nodeIP, port)
	}
	return net.JoinHostPort("", port)
}

// PeerAddress is the address this provider announces for its peer service
// ("" when it serves no peers).
func (p *Provider) PeerAddress() string {
	if p.peers == nil {
		return ""
	}
	return p.peers.advertise
}

// PeerListenAddr is the local address the peer listener is bound to (nil
// when it serves no peers).
func (p *Provider) PeerListenAddr() net.Addr {
	if p.peers == nil || p.peers.ln == nil {
		return nil
	}
	return p.peers.ln.Addr()
}

// StopPeerService closes the peer listener (other providers then fall back
// to the head); the provider keeps pulling from peers itself.
func (p *Provider) StopPeerService() {
	if p.peers != nil && p.peers.srv != nil {
		p.peers.srv.Stop()
	}
}

// logTransfers logs the transfer counters every period while they change,
// and once more when the provider stops.
func (p *Provider) logTransfers(period time.Duration) {
	defer p.wg.Done()
	tick := time.NewTicker(period)
	defer tick.Stop()
	var last TransferStats
	for {
		select {
		case <-p.ctx.Done():
			if s := p.Transfers(); s != (TransferStats{}) {
				p.logStats(s)
			}
			return
		case <-tick.C:
			if s := p.Transfers(); s != last {
				p.logStats(s)
				last = s
			}
		}
	}
}

func (p *Provider) logStats(s TransferStats) {
	p.log.Info("object transfers", "direct_bytes", s.Direct, "relayed_bytes", s.Relayed, "served_bytes", s.Served,
		"direct_pulls", s.DirectPulls, "fallbacks", s.Fallbacks)
}

// close drops every peer connection and the listener.
func (pn *peerNet) close() {
	if pn.srv != nil {
		pn.srv.Stop()
	}
	pn.mu.Lock()
	for _, c := range pn.clients {
		for _, cc := range c.conns {
			cc.Close()
		}
	}
	pn.clients = map[string]*peerClient{}
	pn.mu.Unlock()
	pn.tr.Close()
}

// client returns (connecting when needed) the connections to holder h, or
// an error within PeerDialTimeout when it cannot be reached.
func (pn *peerNet) client(ctx context.Context, node, addr string) (*peerClient, error) {
	key := node + "@" + addr
	pn.mu.Lock()
	if at, ok := pn.failed[addr]; ok && time.Since(at) < peerBackoff {
		pn.mu.Unlock()
		return nil, fmt.Errorf("%w: %s failed %s ago", ErrPeerUnreachable, addr, time.Since(at).Round(time.Millisecond))
	}
	c := pn.clients[key]
	if c == nil {
		c = &peerClient{node: node, addr: addr}
		// Every connection checks that the holder is the node the head
		// named: an address may have been taken over by another provider.
		dial := func(ctx context.Context, a string) (net.Conn, error) {
			conn, err := pn.tr.Dial(ctx, a)
			if err != nil {
				return nil, err
			}
			if info, ok := transport.PeerOf(conn); !ok || info.NodeID != node {
				conn.Close()
				return nil, fmt.Errorf("%w: %s is %q, want %s", ErrPeerIdentity, a, info.NodeID, node)
			}
			return conn, nil
		}
		for range peerStripes {
			cc, err := transport.NewClient(pn.tr, addr, grpc.WithContextDialer(dial), grpc.WithIdleTimeout(time.Minute))
			if err != nil {
				pn.mu.Unlock()
				return nil, err
			}
			c.conns = append(c.conns, cc)
		}
		pn.clients[key] = c
	}
	pn.mu.Unlock()
	if err := ready(ctx, c.conns[0]); err != nil {
		pn.fail(c, err)
		return nil, err
	}
	return c, nil
}

// ready waits up to PeerDialTimeout for a connection to come up.
func ready(ctx context.Context, cc *grpc.ClientConn) error {
	ctx, cancel := context.WithTimeout(ctx, PeerDialTimeout)
	defer cancel()
	cc.Connect()
	for {
		st := cc.GetState()
		switch st {
		case connectivity.Ready:
			return nil
		case connectivity.TransientFailure, connectivity.Shutdown:
			return fmt.Errorf("%w: connection %s", ErrPeerUnreachable, st)
		}
		if !cc.WaitForStateChange(ctx, st) {
			return fmt.Errorf("%w: no connection within %s", ErrPeerUnreachable, PeerDialTimeout)
		}
	}
}

// fail forgets a holder's connections and skips its address for a while.
func (pn *peerNet) fail(c *peerClient, err error) {
	pn.mu.Lock()
	defer pn.mu.Unlock()
	now := time.Now()
	for a, at := range pn.failed {
		if now.Sub(at) >= peerBackoff {
			delete(pn.failed, a)
		}
	}
	pn.failed[c.addr] = now
	if pn.clients[c.node+"@"+c.addr] == c {
		delete(pn.clients, c.node+"@"+c.addr)
		for _, cc := range c.conns {
			cc.Close()
		}
	}
	pn.p.log.Info("peer unusable; using the head meanwhile", "peer", c.node, "addr", c.addr, "err", err)
}

// pullRange pulls [off, off+n) of id from the holder over stream i. A
// holder that goes silent for PeerStallTime is given up on.
func (c *peerClient) pullRange(ctx context.Context, i int, id ids.ObjectID, off, n int64) (*objstream.Range, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stall := time.AfterFunc(PeerStallTime, func() { cancel(ErrPeerStalled) })
	defer stall.Stop()
	stream, err := pb.NewPeerObjectsClient(c.conns[i%len(c.conns)]).PeerPull(ctx, &pb.PullRequest{ObjectId: id.Bytes(), Offset: off, Length: n})
	if err != nil {
		return nil, err
	}
	r, err := objstream.ReceiveRange(func() (*pb.ObjectChunk, error) {
		m, err := stream.Recv()
		stall.Reset(PeerStallTime)
		return m, err
	}, 0)
	if err != nil && context.Cause(ctx) != nil && !errors.Is(err, objstream.ErrMissing) {
		return nil, fmt.Errorf("%w: %w", context.Cause(ctx), err)
	}
	return r, err
}

// peerService serves ranged pulls of this provider's cached objects to
// other providers of the pool.
type peerService struct {
	pb.UnimplementedPeerObjectsServer
	o *objects
}

// PeerPull streams a range of a locally held object; an object not held
// here is answered missing at once (the caller falls back to the head).
func (s *peerService) PeerPull(r *pb.PullRequest, stream pb.PeerObjects_PeerPullServer) error {
	// The transport admits only callers with a pool certificate; insist.
	if info, ok := transport.PeerFromContext(stream.Context()); !ok || info.NodeID == "" {
		return status.Error(codes.Unauthenticated, "a node certificate is required")
	}
	id, err := ids.ObjectFromBytes(r.ObjectId)
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	obj := s.o.held(id)
	if obj == nil {
		return stream.Send(&pb.ObjectChunk{ObjectId: r.ObjectId, Missing: true})
	}
	off, n := r.Offset, r.Length
	if n == 0 || off+n > obj.Size {
		n = obj.Size - off
	}
	if err := objstream.SendRange(obj, off, n, stream.Send); err != nil {
		if errors.Is(err, objstream.ErrBadRange) {
			return status.Error(codes.InvalidArgument, err.Error())
		}
		return err
	}
	s.o.served.Add(n)
	return nil
}

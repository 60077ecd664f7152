package head

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"

	"github.com/gray-cluster/gray/clientserver"
	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/nodeserver"
	pb "github.com/gray-cluster/gray/proto/nodepb"
	"github.com/gray-cluster/gray/provider"
	"github.com/gray-cluster/gray/transport"
	"github.com/gray-cluster/gray/tunnel"
)

// callbacks route raylet and provider events to the front end (set once it
// exists).
type callbacks struct{ cs **clientserver.Server }

func (h *Head) callbacks(cs **clientserver.Server) callbacks { return callbacks{cs: cs} }

func (c callbacks) actorDead(id ids.ActorID) {
	if *c.cs != nil {
		(*c.cs).ActorDead(id)
	}
}

func (c callbacks) actorRef(id ids.ActorID, holder string, retain bool) {
	if *c.cs != nil {
		(*c.cs).ActorRef(id, holder, retain)
	}
}

func (c callbacks) holderGone(holder string) {
	if *c.cs != nil {
		(*c.cs).HolderGone(holder)
	}
}

func (c callbacks) actorReady(id ids.ActorID, info []byte) {
	if *c.cs != nil {
		(*c.cs).ActorReady(id, info)
	}
}

func (c callbacks) claim(id ids.ObjectID) bool {
	return *c.cs != nil && (*c.cs).ClaimRestored(id)
}

// awaitRestored waits until the providers known from before a restart
// have reported what they hold (nodeserver.AwaitRestored), the node port
// being set up first.
func (h *Head) awaitRestored(ctx context.Context) error {
	select {
	case <-h.nodesUp:
	case <-ctx.Done():
		return ctx.Err()
	}
	if h.Nodes == nil {
		return nil
	}
	return h.Nodes.AwaitRestored(ctx)
}

func (c callbacks) logs(job ids.JobID, line string, stderr bool) {
	if *c.cs != nil {
		(*c.cs).PublishWorkerLog(job, line, stderr)
	}
}

// nodeListener is the QUIC side of the head.
type nodeListener struct {
	tr    transport.Transport
	grpc  *grpc.Server
	addr  string
	token string
}

func (n *nodeListener) close() {
	if n.grpc != nil {
		n.grpc.Stop()
	}
	if n.tr != nil {
		_ = n.tr.Close()
	}
}

// loadCA reads the pool CA from the state dir, creating it the first time.
func loadCA(dir string) (*transport.CA, error) {
	certPath, keyPath := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")
	certPEM, err1 := os.ReadFile(certPath)
	keyPEM, err2 := os.ReadFile(keyPath)
	if err1 == nil && err2 == nil {
		return transport.ParseCA(certPEM, keyPEM)
	}
	if !errors.Is(err1, os.ErrNotExist) && err1 != nil {
		return nil, err1
	}
	ca, err := transport.NewCA("gray pool")
	if err != nil {
		return nil, err
	}
	certPEM, keyPEM, err = ca.MarshalPEM()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := os.WriteFile(keyPath, keyPEM, 0o600); err != nil {
		return nil, err
	}
	return ca, os.WriteFile(certPath, certPEM, 0o644)
}

// joinSecret returns the configured secret or the one kept in the state dir.
func joinSecret(dir, configured string) (string, error) {
	if configured != "" {
		if strings.Contains(configured, ".") {
			return "", fmt.Errorf("head: join secret must not contain '.'")
		}
		return configured, nil
	}
	path := filepath.Join(dir, "join-secret")
	if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b)), nil
	}
	buf := make([]byte, 16)
	if _, err := rand.Read(buf); err != nil {
		return "", err
	}
	secret := hex.EncodeToString(buf)
	return secret, os.WriteFile(path, []byte(secret+"\n"), 0o600)
}

// startNodes opens the QUIC port providers join and connect at.
func (h *Head) startNodes(ctx context.Context, cb callbacks) error {
	dir := h.cfg.StateDir
	if dir == "" {
		dir = filepath.Join(h.cfg.SessionDir, "state")
	}
	ca, err := loadCA(dir)
	if err != nil {
		return fmt.Errorf("head: pool CA: %w", err)
	}
	secret, err := joinSecret(dir, h.cfg.JoinSecret)
	if err != nil {
		return fmt.Errorf("head: join secret: %w", err)
	}
	leaf, err := ca.NewNodeCert(h.Raylet.NodeID().Hex())
	if err != nil {
		return err
	}
	// The CA goes after the leaf so that joining providers can check it
	// against the pin in their token.
	cert := tls.Certificate{Certificate: [][]byte{leaf.Certificate[0], ca.Cert.Raw}, PrivateKey: leaf.PrivateKey, Leaf: leaf.Leaf}
	tr, err := transport.NewQUIC(transport.Config{
		Certificate: &cert, CA: ca.Pool(), AllowUnauthenticated: true, Logger: h.log,
		// The head's leaf is new with every process; the CA's key is kept.
		ResetKeyFrom: ca.Key,
	})
	if err != nil {
		return err
	}
	l, err := tr.Listen(ctx, h.cfg.NodeAddr)
	if err != nil {
		tr.Close()
		return fmt.Errorf("head: node port %s: %w", h.cfg.NodeAddr, err)
	}
	h.nodes = nodeListener{tr: tr, addr: l.Addr().String()}
	gossipAddr := ""
	if h.cfg.GossipAddr != "" {
		if h.gossip, err = h.startGossip(ctx, secret); err != nil {
			tr.Close()
			return fmt.Errorf("head: gossip: %w", err)
		}
		gossipAddr = h.gossip.Addr()
	}
	h.Nodes = nodeserver.New(nodeserver.Config{
		GossipAddress: gossipAddr, Billing: h.nodeBilling(),
		Cluster: h.Cluster, Store: h.Store, CA: ca, JoinSecret: secret,
		ClientAddress: advertised(h.addr.String(), h.cfg.NodeIP),
		SuspectAfter:  h.cfg.SuspectAfter, DeadAfter: h.cfg.DeadAfter, Logger: h.log,
		OnActorReady: cb.actorReady, OnActorDead: cb.actorDead, OnActorRef: cb.actorRef,
		OnHolderGone: cb.holderGone, Logs: cb.logs, Claim: cb.claim, OnGPUStatus: func(ids.NodeID) { h.local.notify() },
		Native: func(node ids.NodeID, reg *pb.Register, remote net.Addr) (string, string) {
			return h.nativeJoin(ctx, node, reg, remote)
		},
	})
	// The providers known from before a restart are in place before any
	// can reconnect, so that each is recognised.
	if err := h.restoreTables(ctx); err != nil {
		tr.Close()
		return err
	}
	g := grpc.NewServer(grpc.MaxRecvMsgSize(8<<20), grpc.MaxSendMsgSize(8<<20))
	h.Nodes.Register(g)
	// Tunnel streams (native Ray's TCP between nodes) share the QUIC
	// listener with the providers' gRPC.
	clientAddr := advertised(h.addr.String(), h.cfg.NodeIP)
	h.pool = newNativePool(h.log.With("part", "tunnel"), func(addr string) string {
		if addr == clientAddr && h.Client != nil {
			// Provider workers' Ray Client connections.
			return h.Client.TunnelAddr()
		}
		return addr
	}, func(addr string) bool {
		// Providers reach the head's Ray Client port and its native
		// node's services on the node IP (GCS, raylet, core workers and
		// drivers), nothing else of the head machine.
		if addr == clientAddr {
			return true
		}
		host, p, err := net.SplitHostPort(addr)
		port, perr := strconv.Atoi(p)
		return err == nil && perr == nil && h.Native != nil && host == h.Native.NodeIP() && h.Native.ServesPort(port)
	}, func(node string) string {
		id, err := ids.NodeFromHex(node)
		if err != nil {
			return ""
		}
		return h.Nodes.DirectPeerAddress(id)
	})
	gl := tunnel.Mux(l, h.pool.hub.Handle, 10*time.Second)
	go func() { _ = transport.Serve(ctx, g, gl) }()
	go h.Nodes.Run(ctx)
	token := provider.Token(secret, ca.Cert)
	h.nodes = nodeListener{tr: tr, grpc: g, addr: l.Addr().String(), token: token}
	if err := os.WriteFile(filepath.Join(dir, "join-token"), []byte(token+"\n"), 0o600); err != nil {
		return err
	}
	h.log.Info("providers join with", "command", fmt.Sprintf("gray start --address=%s --token=%s", advertised(h.nodes.addr, h.cfg.NodeIP), token))
	return nil
}

// nativeJoin answers a provider that offers to host native Ray: the GCS
// address and its pool address ("", "" when the head serves no native Ray
// or cannot forward the provider's ports).
func (h *Head) nativeJoin(ctx context.Context, node ids.NodeID, reg *pb.Register, remote net.Addr) (gcsAddr, ip string) {
	if !reg.GetNative() || h.pool == nil {
		return "", ""
	}
	gcsAddr = h.GCSAddress()
	if gcsAddr == "" {
		return "", ""
	}
	ip, err := h.pool.join(ctx, node, reg, sameMachine(remote))
	if err != nil {
		h.log.Warn("provider cannot join native Ray", "node", node.Hex(), "err", err)
		return "", ""
	}
	return gcsAddr, ip
}

// advertised replaces a wildcard or loopback host with the node IP.
func advertised(addr, nodeIP string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || nodeIP == "" {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = nodeIP
	}
	return net.JoinHostPort(host, port)
}

// NodeAddr is the bound provider (QUIC) address, "" when disabled.
func (h *Head) NodeAddr() string { return h.nodes.addr }

// JoinToken is the token providers join with.
func (h *Head) JoinToken() string { return h.nodes.token }

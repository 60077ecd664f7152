// Package provider is the provider daemon: it joins a gray pool with a join
// token (getting a node certificate), keeps a control channel to the head
// over QUIC, runs the head's tasks and actors on its own raylet and Python
// workers, pulls their arguments from the head and pushes their results
// back. It reconnects after network trouble and tells the head what it still
// runs, so nothing is lost or run twice without need.
package provider

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"github.com/gray-cluster/gray/billing/metering"
	"github.com/gray-cluster/gray/gpu/watch"
	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/membership"
	pb "github.com/gray-cluster/gray/proto/nodepb"
	"github.com/gray-cluster/gray/raylet"
	"github.com/gray-cluster/gray/resledger"
	"github.com/gray-cluster/gray/transport"
)

// Sentinel errors.
var (
	ErrBadToken = errors.New("provider: malformed join token (want SECRET.CA_SHA256)")
	ErrClosed   = errors.New("provider: closed")
)

// Config configures a provider.
type Config struct {
	// HeadAddr is the head's node (QUIC) address, host:port, or several
	// comma-separated: an active head and its standbys (see heads.go).
	HeadAddr string
	// Token is the pool's join token, SECRET.CA_SHA256_HEX.
	Token string
	// StateDir keeps the node's key and certificate across restarts.
	StateDir  string
	NodeIP    string
	Hostname  string
	Python    string
	Resources map[string]float64
	Labels    map[string]string
	GPUs      string
	// ObjectStoreMemory bounds the local object cache.
	ObjectStoreMemory int64
	SessionDir        string
	PrestartWorkers   int
	IdleWorkerTimeout time.Duration
	// ClientAddress overrides the Ray Client address the head advertises
	// for workers (e.g. a proxy in front of the head).
	ClientAddress string
	// Prices are what the provider charges (micro-USD per resource-hour)
	// and PayoutAddress the Solana wallet it is paid to.
	Prices        metering.PriceList
	PayoutAddress string
	// TransferConns is how many QUIC connections the provider uses to the
	// head (default 17): one for the control channel and the rest for object
	// data, striped; each has its own congestion window, which is what
	// bounds one connection on a long, lossy path. Bulk connections open on
	// the first large transfer and close after a minute idle.
	TransferConns int
	// UsageFlush is how often open leases are billed (default 30 s).
	UsageFlush time.Duration
	// GossipBind is the local address gossip binds ("" = 0.0.0.0).
	GossipBind string
	// GossipPort is the port gossip binds (0: any free one; -1: no gossip).
	GossipPort int
	// GossipAdvertise is the HOST:PORT others reach this node's gossip at,
	// when not NodeIP and the bound port (a port forward, or the WAN
	// harness's link).
	GossipAdvertise string
	// Heartbeat is how often the provider speaks when idle (default 1 s).
	Heartbeat time.Duration
	// GPUWatch, when set, owns the GPUs: the raylet's GPU slots are its
	// Base resources, and it withdraws GPUs that fail re-verification (and
	// offers them again) and samples them; the head hears of each change.
	GPUWatch *watch.Watcher
	// Native hosts stock core workers for the head's native Ray.
	Native NativeConfig
	// PeerPort is the UDP port the peer object service listens on (0: any
	// free port); PeerBind, when set, is the whole listen address instead.
	// Other providers pull objects this one holds from it directly.
	PeerPort int
	PeerBind string
	// PeerAdvertise is the host:port announced for the peer service (for
	// NAT setups); default the node IP (unless loopback) or the address
	// the head sees, with the listener's port.
	PeerAdvertise string
	// NoPeer disables the peer service: other providers get this one's
	// objects through the head. It still pulls from other providers.
	NoPeer bool
	// Sandbox runs workers in sandboxes (nil: plain processes, only for
	// trusted single-user pools); the raylet adds the state dir and the
	// session dir to what they must not see.
	Sandbox *raylet.SandboxConfig
	Logger  *slog.Logger
}

// Provider is a running provider daemon.
type Provider struct {
	cfg Config
	log *slog.Logger
	// heads are the head addresses of Config.HeadAddr; head (a string) the
	// one last connected to.
	heads []string
	head  atomic.Value
	ctx   context.Context

	cancel context.CancelFunc
	tr     transport.Transport
	conn   *grpc.ClientConn
	nodeID ids.NodeID
	raylet *raylet.Raylet
	// ledger is the machine's resources, shared by the ray:// raylet and
	// the native one (with --native).
	ledger  *resledger.Ledger
	objects *objects

	mu      sync.Mutex
	events  chan *pb.NodeMessage
	closed  bool
	unblock map[string][]func()
	pg      pgCalls
	gossip  *membership.Membership
	wg      sync.WaitGroup

	meter    *metering.Meter
	meterKey ed25519.PrivateKey

	// gpu is the GPU status last applied (nil without GPUWatch).
	gpu *watch.Status
	// peers is the direct provider-to-provider object path.
	peers *peerNet

	// extra are the additional connections objects are striped over.
	extra     []*grpc.ClientConn
	extraTrs  []transport.Transport
	native    nativeSide
	clientTun clientTunnel
}

// stripes is how many connections objects are striped over.
func (p *Provider) stripes() int { return max(1, len(p.extra)) }

// stripe returns bulk connection i (mod their number). Bulk data keeps off
// the control connection when there are others: gRPC runs over one QUIC
// stream per connection, so a lost packet of a large transfer would hold up
// the heartbeats and tasks behind it.
func (p *Provider) stripe(i int) *grpc.ClientConn {
	if len(p.extra) == 0 {
		return p.conn
	}
	return p.extra[i%len(p.extra)]
}

// New validates the configuration.
func New(cfg Config) (*Provider, error) {
	heads := headAddrs(cfg.HeadAddr)
	if len(heads) == 0 {
		return nil, errors.New("provider: head address is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = time.Second
	}
	if cfg.TransferConns <= 0 {
		// The control connection and 48 for bulk data: one NewReno flow
		// moves MSS/RTT·1.22/√loss, 0.2 MiB/s at 80 ms and 1% loss; 48 of
		// them fill about two thirds of a 100 Mbit/s link there (16: a
		// third). They are dialled on first use and closed after a minute
		// idle.
		cfg.TransferConns = 49
	}
	if cfg.UsageFlush <= 0 {
		cfg.UsageFlush = 30 * time.Second
	}
	if cfg.ObjectStoreMemory <= 0 {
		cfg.ObjectStoreMemory = 1 << 30
	}
	if cfg.Hostname == "" {
		cfg.Hostname, _ = os.Hostname()
	}
	if cfg.StateDir == "" {
		return nil, errors.New("provider: state dir is required")
	}
	return &Provider{cfg: cfg, log: cfg.Logger.With("component", "provider"), events: make(chan *pb.NodeMessage, 1<<16), heads: heads}, nil
}

// NodeID is the node id the head issued.
func (p *Provider) NodeID() ids.NodeID { return p.nodeID }

// Raylet is the provider's raylet (after Start).
func (p *Provider) Raylet() *raylet.Raylet { return p.raylet }

// ParseToken splits a join token into its secret and CA pin.
func ParseToken(tok string) (secret string, pin []byte, err error) {
	secret, pinHex, ok := strings.Cut(tok, ".")
	if !ok || secret == "" {
		return "", nil, ErrBadToken
	}
	pin, err = hex.DecodeString(pinHex)
	if err != nil || len(pin) != sha256.Size {
		return "", nil, ErrBadToken
	}
	return secret, pin, nil
}

// Token makes a join token from a secret and the pool CA.
func Token(secret string, ca *x509.Certificate) string {
	sum := sha256.Sum256(ca.Raw)
	return secret + "." + hex.EncodeToString(sum[:])
}

// credentials loads the node's certificate, joining the pool first if it
// has none.
func (p *Provider) credentials(ctx context.Context) (*tls.Certificate, *x509.CertPool, error) {
	certPath := filepath.Join(p.cfg.StateDir, "node.pem")
	keyPath := filepath.Join(p.cfg.StateDir, "node-key.pem")
	caPath := filepath.Join(p.cfg.StateDir, "ca.pem")
	if cert, err := tls.LoadX509KeyPair(certPath, keyPath); err == nil {
		if caPEM, err := os.ReadFile(caPath); err == nil {
			if pool, err := transport.PoolFromPEM(caPEM); err == nil {
				return &cert, pool, nil
			}
		}
	}
	var cert *tls.Certificate
	var ca *x509.Certificate
	var err error
	for _, head := range p.heads { // a standby head does not answer: try the next
		if cert, ca, err = Join(ctx, head, p.cfg.Token, p.cfg.Hostname, p.log); err == nil {
			p.head.Store(head)
			break
		}
	}
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err := transport.EncodeKeyPEM(cert.PrivateKey)
	if err != nil {
		return nil, nil, err
	}
	if err := os.MkdirAll(p.cfg.StateDir, 0o700); err != nil {
		return nil, nil, err
	}
	for path, data := range map[string][]byte{
		certPath: transport.EncodeCertPEM(cert.Leaf), keyPath: keyPEM, caPath: transport.EncodeCertPEM(ca),
	} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return nil, nil, err
		}
	}
	p.log.Info("joined pool", "node", cert.Leaf.Subject.CommonName, "head", p.currentHead())
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return cert, pool, nil
}

// Start joins (when needed), connects to the head and starts the raylet.
// It returns once the provider is registered with the head.
func (p *Provider) Start(ctx context.Context) error {
	p.ctx, p.cancel = context.WithCancel(ctx)
	cert, pool, err := p.credentials(p.ctx)
	if err != nil {
		return err
	}
	p.nodeID, err = ids.NodeFromHex(cert.Leaf.Subject.CommonName)
	if err != nil {
		return err
	}
	var idle time.Duration
	if len(p.heads) > 1 {
		idle = failoverIdleTimeout
	}
	p.tr, err = transport.NewQUIC(transport.Config{Certificate: cert, CA: pool, Logger: p.log, MaxIdleTimeout: idle})
	if err != nil {
		return err
	}
	p.conn, err = transport.NewClient(p.tr, p.heads[0], grpc.WithContextDialer(p.dialHeads(p.tr)))
	if err != nil {
		return err
	}
	for range p.cfg.TransferConns - 1 {
		// Each transport has its own UDP socket, hence its own QUIC
		// connection and congestion controller.
		tr, err := transport.NewQUIC(transport.Config{Certificate: cert, CA: pool, Logger: p.log, MaxIdleTimeout: idle})
		if err != nil {
			return err
		}
		c, err := transport.NewClient(tr, p.heads[0], grpc.WithIdleTimeout(time.Minute), grpc.WithContextDialer(p.dialHeads(tr)))
		if err != nil {
			tr.Close()
			return err
		}
		p.extraTrs, p.extra = append(p.extraTrs, tr), append(p.extra, c)
	}
	if p.meterKey, err = meterKey(p.cfg.StateDir); err != nil {
		return err
	}
	if err := p.cfg.Prices.Validate(); err != nil {
		return err
	}
	p.meter = metering.NewMeter(p.nodeID.Hex(), uint64(time.Now().UnixNano()))
	p.objects = newObjects(p, p.cfg.ObjectStoreMemory/4)
	if err := p.startPeers(cert, pool); err != nil {
		p.Close()
		return err
	}
	resources := p.cfg.Resources
	if p.cfg.GPUWatch != nil {
		resources = p.cfg.GPUWatch.Base()
	}
	p.ledger = resledger.New(resources, nil)
	p.raylet, err = raylet.New(raylet.Config{
		NodeID: p.nodeID, NodeIP: p.cfg.NodeIP, Resources: resources, Ledger: p.ledger, Store: p.objects,
		Python: p.cfg.Python, SessionDir: p.cfg.SessionDir, PrestartWorkers: p.cfg.PrestartWorkers,
		Sandbox:           p.cfg.Sandbox.Protecting(p.cfg.StateDir),
		IdleWorkerTimeout: p.cfg.IdleWorkerTimeout, Logger: p.log, Logs: p.forwardLog, WorkerKey: p.workerKey(),
		OnActorDead: func(id ids.ActorID) {
			p.sendEvent(&pb.NodeMessage{Msg: &pb.NodeMessage_ActorDead{ActorDead: &pb.ActorDead{ActorId: id.Bytes()}}})
		},
		OnActorReady: func(id ids.ActorID, table []byte) {
			p.sendEvent(&pb.NodeMessage{Msg: &pb.NodeMessage_ActorReady{ActorReady: &pb.ActorReady{ActorId: id.Bytes(), MethodTable: table}}})
		},
		OnActorRef: func(id ids.ActorID, holder string, retain bool) {
			p.sendEvent(&pb.NodeMessage{Msg: &pb.NodeMessage_ActorRef{ActorRef: &pb.ActorRef{ActorId: id.Bytes(), Holder: holder, Retain: retain}}})
		},
		OnHolderGone: func(holder string) {
			p.sendEvent(&pb.NodeMessage{Msg: &pb.NodeMessage_HolderGone{HolderGone: &pb.HolderGone{Holder: holder}}})
		},
		OnLease: p.lease, OnLeaseEnd: p.leaseEnd, PlacementGroups: p,
		OnWorkerJob: func(worker string, job ids.JobID) {
			p.sendEvent(&pb.NodeMessage{Msg: &pb.NodeMessage_WorkerJob{WorkerJob: &pb.WorkerJob{WorkerId: worker, JobId: job.Bytes()}}})
		},
	})
	if err != nil {
		return err
	}
	p.startGPUs()
	registered := make(chan string, 1)
	refused := make(chan error, 1)
	p.wg.Add(2)
	go p.run(registered, refused)
	go p.flushUsage(p.cfg.UsageFlush)
	select {
	case err := <-refused:
		p.Close()
		return fmt.Errorf("provider: the head refused this provider: %w", err)
	case addr := <-registered:
		if p.cfg.ClientAddress != "" {
			addr = p.cfg.ClientAddress
		} else if local, err := p.clientAddress(p.ctx, addr); err == nil {
			addr = local
		} else {
			p.log.Warn("workers reach the head's Ray Client port directly: no tunnel listener", "err", err)
		}
		p.raylet.SetClientAddress(addr)
	case <-ctx.Done():
		p.Close()
		return ctx.Err()
	}
	if err := p.raylet.Start(p.ctx); err != nil {
		p.Close()
		return err
	}
	p.log.Info("provider started", "node", p.nodeID.Hex(), "head", p.currentHead(), "resources", p.cfg.Resources)
	return nil
}

func (p *Provider) client() (pb.HeadClient, error) {
	if p.conn == nil {
		return nil, ErrClosed
	}
	return pb.NewHeadClient(p.conn), nil
}

func (p *Provider) forwardLog(job ids.JobID, line string, stderr bool) {
	p.sendEvent(&pb.NodeMessage{Msg: &pb.NodeMessage_Log{Log: &pb.Log{JobId: job.Bytes(), Line: line, Stderr: stderr}}})
}

// sendEvent queues a message for the head; queued messages survive a
// reconnect and go out in order.
func (p *Provider) sendEvent(m *pb.NodeMessage) {
	select {
	case p.events <- m:
	default:
		p.log.Error("event queue full; dropping", "type", fmt.Sprintf("%T", m.Msg))
	}
}

// waitReconnect waits before another try; false when the provider closed.
func (p *Provider) waitReconnect(attempt int) bool {
	d := min(time.Duration(1<<min(attempt, 6))*100*time.Millisecond, 5*time.Second)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Close stops the raylet and leaves the pool's connection.
func (p *Provider) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	p.closeNative()
	p.closeClientTunnel()
	if p.raylet != nil {
		p.raylet.Close()
	}
	p.mu.Lock()
	g := p.gossip
	p.mu.Unlock()
	if g != nil {
		_ = g.Leave(2 * time.Second)
		_ = g.Close()
	}
	if p.cancel != nil {
		p.cancel()
	}
	p.wg.Wait()
	if p.peers != nil {
		p.peers.close()
	}
	if p.conn != nil {
		p.conn.Close()
	}
	for i, c := range p.extra {
		c.Close()
		p.extraTrs[i].Close()
	}
	if p.tr != nil {
		p.tr.Close()
	}
	return nil
}

func (p *Provider) register() *pb.Register {
	reg := &pb.Register{
		Total: &pb.Resources{Values: maps.Clone(p.cfg.Resources)}, Labels: p.labels(),
		Hostname: p.cfg.Hostname, NodeIp: p.cfg.NodeIP, Gpus: p.gpuSummary(),
		Available:     &pb.Resources{Values: maps.Clone(p.cfg.Resources)},
		PayoutAddress: p.cfg.PayoutAddress, GpuStatus: p.gpuStatus(), PeerAddress: p.PeerAddress(),
	}
	reg.Native, reg.NativePortMin, reg.NativePortMax = p.nativePorts()
	if p.meterKey != nil {
		reg.MeterKey = p.meterKey.Public().(ed25519.PublicKey)
	}
	for _, pr := range p.cfg.Prices {
		reg.Prices = append(reg.Prices, &pb.Price{Resource: pr.Resource, MicroUsdPerHour: pr.MicroUSDPerHour})
	}
	if p.raylet != nil {
		reg.Total.Values = p.raylet.Total()
		reg.Available.Values = p.raylet.Available()
		for _, id := range p.raylet.TaskIDs() {
			reg.RunningTasks = append(reg.RunningTasks, id.Bytes())
		}
		for _, id := range p.raylet.ActorIDs() {
			reg.LiveActors = append(reg.LiveActors, id.Bytes())
		}
		for _, id := range p.raylet.PendingReturns() {
			reg.RunningReturns = append(reg.RunningReturns, id.Bytes())
		}
	}
	if p.objects != nil {
		for _, id := range p.objects.heldIDs() {
			reg.HeldObjects = append(reg.HeldObjects, id.Bytes())
		}
	}
	return reg
}

// Objects is the provider's object store as its raylet sees it.
func (p *Provider) Objects() raylet.Objects { return p.objects }

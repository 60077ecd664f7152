// Package nodeserver is the head's side of the head<->provider protocol: it
// admits providers with a join token (issuing node certificates), keeps one
// control channel per provider, moves objects between the head's store and
// providers, and turns provider silence into suspect and then dead nodes
// whose work the cluster recovers.
package nodeserver

import (
	"context"
	"crypto/subtle"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/gray-cluster/gray/billing/metering"
	"github.com/gray-cluster/gray/cluster"
	"github.com/gray-cluster/gray/gcs"
	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/internal/nodewire"
	"github.com/gray-cluster/gray/objectstore"
	"github.com/gray-cluster/gray/objstream"
	pb "github.com/gray-cluster/gray/proto/nodepb"
	"github.com/gray-cluster/gray/transport"
)

// Config configures the node server.
type Config struct {
	Cluster *cluster.Cluster
	Store   *objectstore.Store
	CA      *transport.CA
	// JoinSecret is the secret part of the join token.
	JoinSecret string
	// ClientAddress is the Ray Client address providers' workers use.
	ClientAddress string
	// GossipAddress is the head's memberlist address ("" without gossip).
	GossipAddress string
	// Billing meters providers' work (nil: not billed).
	Billing Billing
	// SuspectAfter is how long a provider may be silent before its node is
	// suspect (no new work); DeadAfter how long before it is dead (its work
	// recovered elsewhere). Defaults 5 s and 30 s.
	SuspectAfter time.Duration
	DeadAfter    time.Duration
	Logger       *slog.Logger
	Now          func() time.Time

	OnActorReady func(ids.ActorID, []byte)
	OnActorDead  func(ids.ActorID)
	OnActorRef   func(id ids.ActorID, holder string, retain bool)
	OnHolderGone func(holder string)
	Logs         func(job ids.JobID, line string, stderr bool)
	// OnGPUStatus is told when a provider's GPU status (or sample) arrived.
	OnGPUStatus func(ids.NodeID)
	// Native, when set, answers a provider that offers to host native Ray:
	// the GCS address and the provider's pool address ("" = no).
	// remote is the provider's address as the head sees it.
	Native func(node ids.NodeID, reg *pb.Register, remote net.Addr) (gcsAddr, ip string)
	// Claim gives an object a restored provider holds (or will produce)
	// an owner after a head restart: it makes it a pending entry of Store
	// held by the resumed session of its job, false when there is none
	// (see reclaim.go).
	Claim func(ids.ObjectID) bool
}

// Billing is what the node server tells the pool's accounting.
type Billing interface {
	// AddNode registers a provider's metering key, prices and wallet; an
	// error refuses the provider.
	AddNode(node string, key []byte, prices metering.PriceList, payoutAddress string) error
	// Leased records that node was given a task's (or actor's) leases.
	Leased(node, lease string)
	// Usage accepts one signed usage record sent by node.
	Usage(node string, sr metering.SignedRecord) error
}

// Server implements the Head service.
type Server struct {
	pb.UnimplementedHeadServer
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	remotes map[ids.NodeID]*nodeConn
	dir     *directory
	parts   objstream.Assembly
	// awaiting are the restored providers that have not reported yet;
	// awaitDone is closed when none is left (see AwaitRestored).
	awaiting  map[ids.NodeID]bool
	awaitDone chan struct{}
}

// Holders lists the providers that hold a copy of an object (a hint).
func (s *Server) Holders(oid ids.ObjectID) []ids.NodeID { return s.dir.holders(oid) }

// nodeConn is a provider and the state of its control channel.
type nodeConn struct {
	r          *remote
	info       gcs.NodeInfo
	connected  bool
	suspect    bool
	lastHeard  time.Time
	cancelConn context.CancelFunc
	gen        int
	// peerAddr is where other providers reach its peer object service;
	// peerReachable is set once the head reached it there (see probePeer).
	peerAddr                  string
	peerProbed, peerReachable bool
	// gossipSuspect is set while gossip cannot reach a provider it reached
	// before; the node gets no new work until it can again.
	gossipSuspect bool
	// restored is set for a provider known from the node table of a head
	// that restarted, until it reconnects (see Restore).
	restored bool
}

// New builds a node server.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.SuspectAfter <= 0 {
		cfg.SuspectAfter = 5 * time.Second
	}
	if cfg.DeadAfter <= 0 {
		cfg.DeadAfter = 30 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Server{cfg: cfg, log: cfg.Logger.With("component", "nodeserver"), remotes: map[ids.NodeID]*nodeConn{},
		dir: newDirectory(1 << 18)}
}

// Register adds the service to a gRPC server.
func (s *Server) Register(g *grpc.Server) { pb.RegisterHeadServer(g, s) }

// Join admits a provider holding the join token.
func (s *Server) Join(_ context.Context, r *pb.JoinRequest) (*pb.JoinReply, error) {
	if s.cfg.JoinSecret == "" || subtle.ConstantTimeCompare([]byte(r.Token), []byte(s.cfg.JoinSecret)) != 1 {
		s.log.Warn("join refused: bad token", "hostname", r.Hostname)
		return nil, status.Error(codes.PermissionDenied, "invalid join token")
	}
	pub, err := x509.ParsePKIXPublicKey(r.PublicKey)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "public key: %v", err)
	}
	id := ids.NewNodeID()
	cert, err := s.cfg.CA.IssueNodeCert(id.Hex(), pub)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "issue certificate: %v", err)
	}
	s.log.Info("provider joined", "node", id.Hex(), "hostname", r.Hostname)
	return &pb.JoinReply{NodeId: id.Hex(), Certificate: cert.Raw, CaCertificate: s.cfg.CA.Cert.Raw}, nil
}

// peerNode is the authenticated node id of the caller.
func peerNode(ctx context.Context) (ids.NodeID, error) {
	p, ok := transport.PeerFromContext(ctx)
	if !ok || p.NodeID == "" {
		return ids.NodeID{}, status.Error(codes.Unauthenticated, "a node certificate is required")
	}
	id, err := ids.NodeFromHex(p.NodeID)
	if err != nil {
		return ids.NodeID{}, status.Errorf(codes.Unauthenticated, "certificate names no node id: %v", err)
	}
	return id, nil
}

// Connect runs one provider's control channel.
func (s *Server) Connect(stream pb.Head_ConnectServer) error {
	id, err := peerNode(stream.Context())
	if err != nil {
		return err
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	reg := first.GetRegister()
	if reg == nil {
		return status.Error(codes.InvalidArgument, "the first message must be Register")
	}
	if b := s.cfg.Billing; b != nil {
		prices := make(metering.PriceList, 0, len(reg.Prices))
		for _, p := range reg.Prices {
			prices = append(prices, metering.Price{Resource: p.Resource, MicroUSDPerHour: p.MicroUsdPerHour})
		}
		if err := b.AddNode(id.Hex(), reg.MeterKey, prices, reg.PayoutAddress); err != nil {
			s.log.Warn("provider refused", "node", id.Hex(), "err", err)
			return status.Errorf(codes.InvalidArgument, "provider refused: %v", err)
		}
	}
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	out := newSendQueue()
	peerAddr := peerAddress(stream.Context(), reg.PeerAddress)
	nc, gen, reconnect, restored := s.attach(id, reg, peerAddr, out, cancel)
	registered := &pb.Registered{ClientAddress: s.cfg.ClientAddress, GossipAddress: s.cfg.GossipAddress}
	if reg.GetNative() && s.cfg.Native != nil {
		var remote net.Addr
		if p, ok := peer.FromContext(stream.Context()); ok {
			remote = p.Addr
		}
		registered.NativeGcsAddress, registered.NativeIp = s.cfg.Native(id, reg, remote)
	}
	if err := stream.Send(&pb.HeadMessage{Msg: &pb.HeadMessage_Registered{Registered: registered}}); err != nil {
		s.detach(id, gen)
		return err
	}
	if reconnect {
		s.reconcile(nc, reg, restored)
	}
	if peerAddr != "" {
		go s.probePeer(ctx, nc, gen, peerAddr)
	}
	go func() {
		for {
			batch, err := out.take(ctx)
			if err != nil {
				return
			}
			for _, m := range batch {
				if err := stream.Send(m); err != nil {
					cancel()
					return
				}
			}
		}
	}()
	err = s.receive(ctx, nc, stream)
	s.detach(id, gen)
	return err
}

// attach makes out the provider's current control channel.
func (s *Server) attach(id ids.NodeID, reg *pb.Register, peerAddr string, out *sendQueue, cancel context.CancelFunc) (nc *nodeConn, gen int, reconnect, restored bool) {
	info := gcs.NodeInfo{
		ID: id, IP: reg.NodeIp, Hostname: reg.Hostname, Labels: reg.Labels, GPUs: reg.Gpus,
	}
	s.mu.Lock()
	nc = s.remotes[id]
	reconnect = nc != nil
	if nc == nil {
		nc = &nodeConn{r: newRemote(id, s.cfg.Store)}
		nc.r.billing = s.cfg.Billing
		nc.r.locate = func(deps []ids.ObjectID) []*pb.PeerLocation { return s.locate(id, deps) }
		s.remotes[id] = nc
	} else if nc.cancelConn != nil {
		nc.cancelConn() // a newer channel replaces the old one
	}
	nc.gen++
	gen = nc.gen
	restored = nc.restored
	nc.restored = false
	nc.info, nc.connected, nc.suspect, nc.lastHeard, nc.cancelConn = info, true, false, s.cfg.Now(), cancel
	nc.peerAddr, nc.peerProbed, nc.peerReachable = peerAddr, false, false
	s.mu.Unlock()

	r := nc.r
	r.mu.Lock()
	r.out = out
	r.sendReleasesLocked()
	r.total = valuesOf(reg.Total)
	r.available = valuesOf(reg.Available)
	r.gpus = nil
	if reg.GpuStatus != nil {
		r.gpus = nodewire.GPUDevices(reg.GpuStatus)
	}
	r.mu.Unlock()
	s.cfg.Cluster.Add(r, info)
	if reg.GpuStatus != nil && s.cfg.OnGPUStatus != nil {
		s.cfg.OnGPUStatus(id)
	}
	if restored {
		s.log.Info("provider reconnected after a head restart", "node", id.Hex(),
			"running_tasks", len(reg.RunningTasks), "live_actors", len(reg.LiveActors))
	}
	return nc, gen, reconnect, restored
}

func valuesOf(r *pb.Resources) map[string]float64 {
	out := map[string]float64{}
	if r != nil {
		for k, v := range r.Values {
			out[k] = v
		}
	}
	return out
}

// reconcile recovers the work a reconnecting provider no longer has (it
// restarted, or work was sent while it was away).
func (s *Server) reconcile(nc *nodeConn, reg *pb.Register, restored bool) {
	keepTasks := map[ids.TaskID]bool{}
	for _, b := range reg.RunningTasks {
		if id, err := ids.TaskFromBytes(b); err == nil {
			keepTasks[id] = true
		}
	}
	keepActors := map[ids.ActorID]bool{}
	for _, b := range reg.LiveActors {
		if id, err := ids.ActorFromBytes(b); err == nil {
			keepActors[id] = true
		}
	}
	lost, unpin := nc.r.takeLost(keepTasks, keepActors)
	if len(lost.Tasks)+len(lost.Actors)+len(lost.Calls) > 0 {
		s.log.Warn("provider reconnected without some of its work", "node", nc.r.id.Hex(),
			"tasks", len(lost.Tasks), "actors", len(lost.Actors), "calls", len(lost.Calls))
		s.cfg.Cluster.Recover(nc.r.id, "the provider restarted", lost)
	}
	s.cfg.Store.Unpin(unpin)
	if restored {
		s.reattach(nc.r, keepTasks, keepActors)
		s.reclaim(nc.r, reg)
		s.restoredReported(nc.r.id)
	}
}

// detach marks the provider disconnected if gen is still its channel.
func (s *Server) detach(id ids.NodeID, gen int) {
	s.mu.Lock()
	nc := s.remotes[id]
	if nc == nil || nc.gen != gen {
		s.mu.Unlock()
		return
	}
	nc.connected = false
	nc.suspect = true
	s.mu.Unlock()
	nc.r.mu.Lock()
	nc.r.out = nil
	nc.r.failReservationsLocked()
	nc.r.mu.Unlock()
	s.cfg.Cluster.SetState(id, gcs.NodeSuspect)
	s.log.Warn("provider disconnected", "node", id.Hex())
}

func (s *Server) receive(ctx context.Context, nc *nodeConn, stream pb.Head_ConnectServer) error {
	for {
		m, err := stream.Recv()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		s.heard(nc)
		if x, ok := m.Msg.(*pb.NodeMessage_PgRequest); ok {
			go s.pgRequest(ctx, nc.r, x.PgRequest)
			continue
		}
		if err := s.handle(nc.r, m); err != nil {
			s.log.Warn("bad message from provider", "node", nc.r.id.Hex(), "err", err)
		}
	}
}

func (s *Server) heard(nc *nodeConn) {
	s.mu.Lock()
	nc.lastHeard = s.cfg.Now()
	wasSuspect := nc.suspect && nc.connected
	nc.suspect = false
	gossip := nc.gossipSuspect
	s.mu.Unlock()
	if wasSuspect && !gossip {
		s.cfg.Cluster.SetState(nc.r.id, gcs.NodeAlive)
	}
}

// GossipSuspect records what gossip says of a provider: suspect pauses its
// work (as silence on the control channel does); dead is decided by the
// control channel alone, so a provider gossip cannot reach (behind NAT)
// still works.
func (s *Server) GossipSuspect(id ids.NodeID, suspect bool) {
	s.mu.Lock()
	nc := s.remotes[id]
	if nc == nil || nc.gossipSuspect == suspect {
		s.mu.Unlock()
		return
	}
	nc.gossipSuspect = suspect
	state := gcs.NodeAlive
	if suspect || nc.suspect {
		state = gcs.NodeSuspect
	}
	s.mu.Unlock()
	s.log.Info("gossip", "node", id.Hex(), "suspect", suspect)
	s.cfg.Cluster.SetState(id, state)
}

var errBadMessage = errors.New("nodeserver: malformed message")

func (s *Server) handle(r *remote, m *pb.NodeMessage) error {
	switch x := m.Msg.(type) {
	case *pb.NodeMessage_Available:
		r.mu.Lock()
		r.available = valuesOf(x.Available)
		r.mu.Unlock()
	case *pb.NodeMessage_ActorReady:
		id, err := ids.ActorFromBytes(x.ActorReady.ActorId)
		if err != nil {
			return fmt.Errorf("%w: %v", errBadMessage, err)
		}
		if s.cfg.OnActorReady != nil {
			s.cfg.OnActorReady(id, x.ActorReady.MethodTable)
		}
	case *pb.NodeMessage_ActorDead:
		id, err := ids.ActorFromBytes(x.ActorDead.ActorId)
		if err != nil {
			return fmt.Errorf("%w: %v", errBadMessage, err)
		}
		r.actorDead(id)
		if s.cfg.OnActorDead != nil {
			s.cfg.OnActorDead(id)
		}
	case *pb.NodeMessage_ActorRef:
		id, err := ids.ActorFromBytes(x.ActorRef.ActorId)
		if err != nil {
			return fmt.Errorf("%w: %v", errBadMessage, err)
		}
		r.mu.Lock()
		r.holders[x.ActorRef.Holder] = true
		r.mu.Unlock()
		if s.cfg.OnActorRef != nil {
			s.cfg.OnActorRef(id, x.ActorRef.Holder, x.ActorRef.Retain)
		}
	case *pb.NodeMessage_HolderGone:
		h := x.HolderGone.Holder
		s.cfg.Store.ReleaseAll(h)
		r.mu.Lock()
		delete(r.holders, h)
		r.mu.Unlock()
		if s.cfg.OnHolderGone != nil {
			s.cfg.OnHolderGone(h)
		}
	case *pb.NodeMessage_WorkerJob:
		job, err := ids.JobFromBytes(x.WorkerJob.JobId)
		if err != nil {
			return fmt.Errorf("%w: %v", errBadMessage, err)
		}
		r.mu.Lock()
		r.workers[x.WorkerJob.WorkerId] = job
		r.mu.Unlock()
	case *pb.NodeMessage_Log:
		job, err := ids.JobFromBytes(x.Log.JobId)
		if err != nil {
			return fmt.Errorf("%w: %v", errBadMessage, err)
		}
		if s.cfg.Logs != nil {
			s.cfg.Logs(job, x.Log.Line, x.Log.Stderr)
		}
	case *pb.NodeMessage_Result:
		if x.Result.Missing {
			id, err := ids.ObjectFromBytes(x.Result.ObjectId)
			if err != nil {
				return fmt.Errorf("%w: %v", errBadMessage, err)
			}
			s.reclaimMissing(r, id)
			return nil
		}
		sent := false
		obj, err := objstream.ReceiveObject(func() (*pb.ObjectChunk, error) {
			if sent {
				return nil, fmt.Errorf("%w: inline result spans messages", errBadMessage)
			}
			sent = true
			return x.Result, nil
		}, InlineResultMax)
		if err != nil {
			return fmt.Errorf("%w: result: %v", errBadMessage, err)
		}
		s.cfg.Store.Seal(obj)
		s.dir.add(obj.ID, r.id)
		r.resultArrived(obj.ID)
	case *pb.NodeMessage_Refs:
		r.refs(x.Refs)
	case *pb.NodeMessage_BundleReserved:
		r.reserved(x.BundleReserved)
	case *pb.NodeMessage_Usage:
		if s.cfg.Billing == nil {
			return nil
		}
		for _, raw := range x.Usage.Records {
			var sr metering.SignedRecord
			if err := json.Unmarshal(raw, &sr); err != nil {
				return fmt.Errorf("%w: usage record: %v", errBadMessage, err)
			}
			if err := s.cfg.Billing.Usage(r.id.Hex(), sr); err != nil {
				s.log.Warn("usage record refused", "node", r.id.Hex(), "record", sr.Record.ID, "err", err)
			}
		}
	case *pb.NodeMessage_GpuStatus:
		s.gpuStatus(r, x.GpuStatus)
	case *pb.NodeMessage_PeerTransfer:
		if err := s.peerTransfer(r, x.PeerTransfer); err != nil {
			return fmt.Errorf("%w: peer transfer: %v", errBadMessage, err)
		}
	case *pb.NodeMessage_Heartbeat, *pb.NodeMessage_TaskDone:
	default:
		return fmt.Errorf("%w: unexpected %T", errBadMessage, m.Msg)
	}
	return nil
}

// Run marks silent providers suspect and then dead until ctx ends.
func (s *Server) Run(ctx context.Context) {
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			s.checkLiveness()
			s.parts.Sweep(s.cfg.Now(), 10*time.Minute)
		}
	}
}

func (s *Server) checkLiveness() {
	now := s.cfg.Now()
	var suspect []ids.NodeID
	var dead []*nodeConn
	s.mu.Lock()
	for id, nc := range s.remotes {
		silent := now.Sub(nc.lastHeard)
		switch {
		case silent > s.cfg.DeadAfter:
			dead = append(dead, nc)
			delete(s.remotes, id)
			if nc.cancelConn != nil {
				nc.cancelConn()
			}
		case silent > s.cfg.SuspectAfter && !nc.suspect:
			nc.suspect = true
			suspect = append(suspect, id)
		}
	}
	s.mu.Unlock()
	for _, id := range suspect {
		s.log.Warn("provider silent: suspect", "node", id.Hex())
		s.cfg.Cluster.SetState(id, gcs.NodeSuspect)
	}
	for _, nc := range dead {
		s.reclaimFailed(nc.r, "the node died")
		s.restoredReported(nc.r.id)
		s.dir.forget(nc.r.id)
		lost, unpin := nc.r.takeLost(nil, nil)
		s.cfg.Cluster.NodeDead(nc.r.id, fmt.Sprintf("no word from it for %s", s.cfg.DeadAfter), lost)
		s.cfg.Store.Unpin(unpin)
		nc.r.mu.Lock()
		nc.r.out = nil
		nc.r.failReservationsLocked()
		nc.r.mu.Unlock()
	}
}

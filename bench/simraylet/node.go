package simraylet

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/gray-cluster/gray/internal/ids"
	pb "github.com/gray-cluster/gray/proto/nodepb"
	"github.com/gray-cluster/gray/provider"
	"github.com/gray-cluster/gray/transport"
)

// node is one simulated provider.
type node struct {
	f        *Fleet
	i        int
	hostname string
	labels   map[string]string
	total    map[string]float64

	tr     *transport.QUIC
	conn   *grpc.ClientConn
	client pb.HeadClient

	// kick asks the send loop for an Available update; events carries
	// other messages for the head (actor deaths).
	kick   chan struct{}
	events chan *pb.NodeMessage

	tasks    sync.WaitGroup // runTask goroutines
	mu       sync.Mutex
	inflight map[ids.TaskID]map[string]float64 // running tasks' resources
}

func newNode(f *Fleet, i int) *node {
	return &node{
		f: f, i: i, hostname: fmt.Sprintf("%s-%06d", f.cfg.Hostname, i),
		labels: map[string]string{RegionLabel: f.cfg.Regions[i%len(f.cfg.Regions)]},
		total: map[string]float64{
			"CPU": f.cfg.CPUsPerNode, "memory": f.cfg.MemoryPerNode, "object_store_memory": f.cfg.ObjectStorePerNode,
		},
		kick: make(chan struct{}, 1), events: make(chan *pb.NodeMessage, 64),
		inflight: map[ids.TaskID]map[string]float64{},
	}
}

// run joins, connects and keeps the node's control channel up until ctx
// ends. The fleet's join slot is held from the join until the first
// registration, so at most JoinConcurrency nodes handshake at once.
func (n *node) run(ctx context.Context) {
	select {
	case n.f.joinSem <- struct{}{}:
	case <-ctx.Done():
		return
	}
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { <-n.f.joinSem }) }
	defer release()

	var cert *tls.Certificate
	var pool *x509.CertPool
	for attempt := 0; ; attempt++ {
		var err error
		if cert, pool, err = n.join(ctx); err == nil {
			break
		}
		n.f.fail(n.i, "join", err)
		if !backoff(ctx, attempt) {
			return
		}
	}
	n.f.c.joined.Add(1)
	if err := n.dial(cert, pool); err != nil {
		n.f.fail(n.i, "transport", err)
		return
	}
	defer n.close()

	first := true
	for attempt := 0; ; attempt++ {
		err := n.session(ctx, func() {
			attempt = 0
			if first {
				first = false
				n.f.nodeRegistered()
				release()
			}
		})
		release() // a node that failed its first try no longer blocks others
		if ctx.Err() != nil {
			return
		}
		n.f.fail(n.i, "control channel", err)
		if !backoff(ctx, attempt) {
			return
		}
	}
}

// join trades the join token for a node certificate, as a provider does.
func (n *node) join(ctx context.Context) (*tls.Certificate, *x509.CertPool, error) {
	cert, ca, err := provider.Join(ctx, n.f.cfg.HeadAddr, n.f.cfg.Token, n.hostname, n.f.log)
	if err != nil {
		return nil, nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return cert, pool, nil
}

// dial sets up the node's own mutual-TLS transport (one UDP socket) and its
// gRPC client; nothing connects until the first RPC.
func (n *node) dial(cert *tls.Certificate, pool *x509.CertPool) error {
	tr, err := transport.NewQUIC(transport.Config{Certificate: cert, CA: pool, Logger: n.f.log})
	if err != nil {
		return err
	}
	conn, err := transport.NewClient(tr, n.f.cfg.HeadAddr)
	if err != nil {
		tr.Close()
		return err
	}
	n.tr, n.conn, n.client = tr, conn, pb.NewHeadClient(conn)
	return nil
}

// close waits for the node's task goroutines (they stop with the run's
// context) and closes its connection.
func (n *node) close() {
	n.tasks.Wait()
	_ = n.conn.Close()
	_ = n.tr.Close()
}

// register is the node's Register message, listing the tasks it still runs
// so that a reconnect does not make the head recover them.
func (n *node) register() *pb.Register {
	reg := &pb.Register{
		Total: &pb.Resources{Values: maps.Clone(n.total)}, Available: &pb.Resources{Values: n.available()},
		Labels: n.labels, Hostname: n.hostname, NodeIp: "127.0.0.1",
	}
	n.mu.Lock()
	for id := range n.inflight {
		reg.RunningTasks = append(reg.RunningTasks, id.Bytes())
	}
	n.mu.Unlock()
	return reg
}

// available is the node's total less what its running tasks hold.
func (n *node) available() map[string]float64 {
	out := maps.Clone(n.total)
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, res := range n.inflight {
		for k, v := range res {
			if _, ok := out[k]; ok {
				out[k] -= v
			}
		}
	}
	return out
}

// session runs one control channel until it breaks or ctx ends.
func (n *node) session(ctx context.Context, onRegistered func()) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	n.f.c.sessions.Add(1)
	stream, err := n.client.Connect(sctx)
	if err != nil {
		return err
	}
	if err := stream.Send(&pb.NodeMessage{Msg: &pb.NodeMessage_Register{Register: n.register()}}); err != nil {
		return err
	}
	m, err := stream.Recv()
	if err != nil {
		return err
	}
	if m.GetRegistered() == nil {
		return errors.New("simraylet: head did not answer Register")
	}
	onRegistered()
	n.f.c.connected.Add(1)
	defer n.f.c.connected.Add(-1)

	sendErr := make(chan error, 1)
	go func() {
		sendErr <- n.sendLoop(sctx, stream)
		cancel()
	}()
	var recvErr error
	for {
		m, err := stream.Recv()
		if err != nil {
			recvErr = err
			break
		}
		n.handle(ctx, m)
	}
	cancel()
	if err := <-sendErr; err != nil && ctx.Err() == nil {
		return errors.Join(recvErr, err)
	}
	return recvErr
}

// sendLoop sends heartbeats, Available updates and queued events.
func (n *node) sendLoop(ctx context.Context, stream pb.Head_ConnectClient) error {
	beat := time.NewTicker(n.f.cfg.Heartbeat)
	defer beat.Stop()
	for {
		var m *pb.NodeMessage
		select {
		case <-ctx.Done():
			return nil
		case <-beat.C:
			m = &pb.NodeMessage{Msg: &pb.NodeMessage_Heartbeat{Heartbeat: []byte{}}}
			n.f.c.heartbeats.Add(1)
		case <-n.kick:
			m = &pb.NodeMessage{Msg: &pb.NodeMessage_Available{Available: &pb.Resources{Values: n.available()}}}
			n.f.c.available.Add(1)
		case m = <-n.events:
		}
		if err := stream.Send(m); err != nil {
			return err
		}
	}
}

// kickAvailable asks for an Available update (coalesced with a pending one).
func (n *node) kickAvailable() {
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

func (n *node) sendEvent(m *pb.NodeMessage) {
	select {
	case n.events <- m:
	default:
		n.f.fail(n.i, "event", errors.New("event queue full"))
	}
}

// handle carries out one command from the head.
func (n *node) handle(ctx context.Context, m *pb.HeadMessage) {
	switch x := m.Msg.(type) {
	case *pb.HeadMessage_Submit:
		n.f.c.submits.Add(1)
		id, err := ids.TaskFromBytes(x.Submit.TaskId)
		if err != nil {
			n.f.fail(n.i, "submit", err)
			return
		}
		n.mu.Lock()
		n.inflight[id] = maps.Clone(x.Submit.Resources)
		n.mu.Unlock()
		n.tasks.Go(func() { n.runTask(ctx, id, int(x.Submit.NumReturns)) })
	case *pb.HeadMessage_CreateActor:
		// No workers to host it: report it dead at once.
		n.f.c.unsupported.Add(1)
		n.sendEvent(&pb.NodeMessage{Msg: &pb.NodeMessage_ActorDead{ActorDead: &pb.ActorDead{ActorId: x.CreateActor.ActorId}}})
	case *pb.HeadMessage_ActorCall:
		n.f.c.unsupported.Add(1)
	case *pb.HeadMessage_KillActor:
		n.sendEvent(&pb.NodeMessage{Msg: &pb.NodeMessage_ActorDead{ActorDead: &pb.ActorDead{ActorId: x.KillActor.ActorId}}})
	case *pb.HeadMessage_Cancel, *pb.HeadMessage_WorkerBlocked:
		// Tasks finish at once; there is nothing to cancel or lend.
	default:
		n.f.fail(n.i, "control channel", fmt.Errorf("unexpected message %T", m.Msg))
	}
}

// runTask "runs" a task: it sends every return value (None) inline on the
// control channel, as a real provider does with small results, frees the
// task's resources and tells the head.
func (n *node) runTask(ctx context.Context, id ids.TaskID, numReturns int) {
	for _, oid := range id.ReturnIDs(numReturns) {
		n.sendEvent(&pb.NodeMessage{Msg: &pb.NodeMessage_Result{Result: &pb.ObjectChunk{
			ObjectId: oid.Bytes(), TotalSize: int64(len(NonePickle)), Data: NonePickle, EndOfChunk: true}}})
		n.f.c.pushes.Add(1)
	}
	n.finish(id)
}

func (n *node) finish(id ids.TaskID) {
	n.mu.Lock()
	delete(n.inflight, id)
	n.mu.Unlock()
	n.f.c.tasksRun.Add(1)
	n.kickAvailable()
}

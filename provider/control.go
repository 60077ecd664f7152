package provider

import (
	"context"
	"errors"
	"maps"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/internal/nodewire"
	pb "github.com/gray-cluster/gray/proto/nodepb"
)

// run keeps a control channel to the head up until the provider closes.
func (p *Provider) run(registered chan<- string, refused chan<- error) {
	defer p.wg.Done()
	first := true
	for attempt := 0; ; attempt++ {
		err := p.session(func(addr string) {
			attempt = 0
			if first {
				first = false
				registered <- addr
			}
		})
		p.failPGCalls()
		if p.ctx.Err() != nil {
			return
		}
		if first && refusal(err) {
			// The head will not take this provider (bad prices, key, or
			// certificate): retrying cannot help.
			refused <- err
			return
		}
		p.log.Warn("control channel to head lost; reconnecting", "err", err, "attempt", attempt)
		if !p.waitReconnect(attempt) {
			return
		}
	}
}

// session runs one control channel until it breaks.
func (p *Provider) session(onRegistered func(clientAddr string)) error {
	client, err := p.client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(p.ctx)
	defer cancel()
	stream, err := client.Connect(ctx)
	if err != nil {
		return err
	}
	if err := stream.Send(&pb.NodeMessage{Msg: &pb.NodeMessage_Register{Register: p.register()}}); err != nil {
		return err
	}
	m, err := stream.Recv()
	if err != nil {
		return err
	}
	reg := m.GetRegistered()
	if reg == nil {
		return errors.New("provider: head did not answer Register")
	}
	onRegistered(reg.ClientAddress)
	p.startNative(reg.NativeGcsAddress, reg.NativeIp)
	p.retargetClient(reg.ClientAddress)
	p.resendWorkerJobs()
	go p.startGossip(reg.GossipAddress)
	p.log.Info("connected to head", "head", p.currentHead(), "node", p.nodeID.Hex())

	var wg sync.WaitGroup
	wg.Add(1)
	sendErr := make(chan error, 1)
	go func() {
		defer wg.Done()
		sendErr <- p.sendLoop(ctx, stream)
		cancel()
	}()
	var recvErr error
	for {
		m, err := stream.Recv()
		if err != nil {
			recvErr = err
			break
		}
		p.handle(m)
	}
	cancel()
	wg.Wait()
	return errors.Join(recvErr, <-sendErr)
}

// sendLoop sends queued events, resource updates and heartbeats.
func (p *Provider) sendLoop(ctx context.Context, stream pb.Head_ConnectClient) error {
	beat := time.NewTicker(p.cfg.Heartbeat)
	defer beat.Stop()
	res := time.NewTicker(20 * time.Millisecond)
	defer res.Stop()
	var last map[string]float64
	for {
		var m *pb.NodeMessage
		select {
		case <-ctx.Done():
			return nil
		case m = <-p.events:
		case <-beat.C:
			m = &pb.NodeMessage{Msg: &pb.NodeMessage_Heartbeat{Heartbeat: []byte{}}}
		case <-res.C:
			avail := p.raylet.Available()
			if maps.Equal(avail, last) {
				continue
			}
			last = avail
			m = &pb.NodeMessage{Msg: &pb.NodeMessage_Available{Available: &pb.Resources{Values: avail}}}
		}
		if err := stream.Send(m); err != nil {
			return err
		}
	}
}

// handle runs one command from the head.
func (p *Provider) handle(m *pb.HeadMessage) {
	var err error
	switch x := m.Msg.(type) {
	case *pb.HeadMessage_Submit:
		spec, e := nodewire.FromTask(x.Submit)
		if err = e; err == nil {
			p.objects.hint(x.Submit.PeerLocations)
			err = p.raylet.Submit(spec)
		}
	case *pb.HeadMessage_CreateActor:
		spec, e := nodewire.FromActor(x.CreateActor)
		if err = e; err == nil {
			p.objects.hint(x.CreateActor.PeerLocations)
			err = p.raylet.CreateActor(spec)
		}
	case *pb.HeadMessage_ActorCall:
		call, e := nodewire.FromCall(x.ActorCall)
		if err = e; err == nil {
			err = p.raylet.SubmitActorTask(call)
		}
	case *pb.HeadMessage_Cancel:
		id, e := ids.TaskFromBytes(x.Cancel.TaskId)
		if err = e; err == nil {
			err = p.raylet.Cancel(id, x.Cancel.Force)
		}
	case *pb.HeadMessage_KillActor:
		id, e := ids.ActorFromBytes(x.KillActor.ActorId)
		if err = e; err == nil {
			err = p.raylet.KillActor(id, x.KillActor.NoRestart)
		}
	case *pb.HeadMessage_WorkerBlocked:
		p.workerBlocked(x.WorkerBlocked.WorkerId, x.WorkerBlocked.Blocked)
	case *pb.HeadMessage_BundleReserve:
		p.reserveBundles(x.BundleReserve)
	case *pb.HeadMessage_BundleRelease:
		err = p.raylet.ReleaseBundles(x.BundleRelease.PlacementGroup)
	case *pb.HeadMessage_PgReply:
		p.pgReply(x.PgReply)
	case *pb.HeadMessage_ReturnObjects:
		p.objects.returnObjects(x.ReturnObjects)
	default:
		p.log.Warn("unexpected message from head", "type", m.Msg)
	}
	if err != nil {
		p.log.Warn("command from head failed", "err", err)
	}
}

// workerBlocked lends a blocked worker's CPU (and takes it back).
func (p *Provider) workerBlocked(worker string, blocked bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.unblock == nil {
		p.unblock = map[string][]func(){}
	}
	if blocked {
		p.unblock[worker] = append(p.unblock[worker], p.raylet.WorkerBlocked(worker))
		return
	}
	if fs := p.unblock[worker]; len(fs) > 0 {
		fs[len(fs)-1]()
		p.unblock[worker] = fs[:len(fs)-1]
		if len(p.unblock[worker]) == 0 {
			delete(p.unblock, worker)
		}
	}
}

// refusal reports whether the head refused the provider for good.
func refusal(err error) bool {
	switch status.Code(err) {
	case codes.InvalidArgument, codes.PermissionDenied, codes.Unauthenticated:
		return true
	}
	return false
}

// resendWorkerJobs tells a (re)connected head the job of every worker, so
// that a head that restarted knows whose job its workers' requests act for.
func (p *Provider) resendWorkerJobs() {
	if p.raylet == nil {
		return
	}
	for _, w := range p.raylet.Workers() {
		if job, ok := p.raylet.WorkerJob(w.ID); ok {
			p.sendEvent(&pb.NodeMessage{Msg: &pb.NodeMessage_WorkerJob{WorkerJob: &pb.WorkerJob{WorkerId: w.ID, JobId: job.Bytes()}}})
		}
	}
}

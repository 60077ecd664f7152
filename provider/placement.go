package provider

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/gray-cluster/gray/internal/ids"
	pb "github.com/gray-cluster/gray/proto/nodepb"
	"github.com/gray-cluster/gray/raylet"
	"github.com/gray-cluster/gray/taskspec"
)

// ErrChannelLost fails a placement group request whose answer can no
// longer come (the control channel to the head broke).
var ErrChannelLost = errors.New("provider: control channel to the head lost")

// pgCalls are a provider's placement group requests waiting for the head.
type pgCalls struct {
	seq     uint64
	waiting map[uint64]chan *pb.PGReply
}

var _ raylet.PlacementGroups = (*Provider)(nil)

// PlacementGroupOp forwards a worker's placement group operation to the
// head's table over the control channel and waits for the answer.
func (p *Provider) PlacementGroupOp(ctx context.Context, job ids.JobID, req taskspec.PGRequest) (any, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	done := make(chan *pb.PGReply, 1)
	p.mu.Lock()
	p.pg.seq++
	id := p.pg.seq
	if p.pg.waiting == nil {
		p.pg.waiting = map[uint64]chan *pb.PGReply{}
	}
	p.pg.waiting[id] = done
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.pg.waiting, id)
		p.mu.Unlock()
	}()
	p.sendEvent(&pb.NodeMessage{Msg: &pb.NodeMessage_PgRequest{PgRequest: &pb.PGRequest{RequestId: id, JobId: job.Bytes(), Request: body}}})
	select {
	case reply := <-done:
		if reply == nil {
			return nil, ErrChannelLost
		}
		if reply.Error != "" {
			return nil, errors.New(reply.Error)
		}
		var result any
		if err := json.Unmarshal(reply.Result, &result); err != nil {
			return nil, fmt.Errorf("provider: placement group reply: %w", err)
		}
		return result, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// pgReply delivers the head's answer to a request.
func (p *Provider) pgReply(m *pb.PGReply) {
	p.mu.Lock()
	done := p.pg.waiting[m.RequestId]
	delete(p.pg.waiting, m.RequestId)
	p.mu.Unlock()
	if done != nil {
		done <- m
	}
}

// failPGCalls fails the requests in flight when the channel breaks (the
// head forgets them with it).
func (p *Provider) failPGCalls() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, done := range p.pg.waiting {
		done <- nil
		delete(p.pg.waiting, id)
	}
}

// reserveBundles reserves bundles the head placed here and answers it.
func (p *Provider) reserveBundles(m *pb.BundleReserve) {
	job, err := ids.JobFromBytes(m.JobId)
	if err == nil {
		bundles := make(map[int]map[string]float64, len(m.Bundles))
		for i, b := range m.Bundles {
			bundles[int(i)] = b.GetValues()
			if bundles[int(i)] == nil {
				bundles[int(i)] = map[string]float64{}
			}
		}
		err = p.raylet.ReserveBundles(m.PlacementGroup, job, bundles)
	}
	reply := &pb.BundleReserved{RequestId: m.RequestId}
	if err != nil {
		reply.Error = err.Error()
	}
	p.sendEvent(&pb.NodeMessage{Msg: &pb.NodeMessage_BundleReserved{BundleReserved: reply}})
}

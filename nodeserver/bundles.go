package nodeserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/gray-cluster/gray/internal/ids"
	pb "github.com/gray-cluster/gray/proto/nodepb"
	"github.com/gray-cluster/gray/taskspec"
)

// Placement group errors of a provider.
var (
	// ErrBundlesRefused is a provider's refusal to reserve bundles.
	ErrBundlesRefused = errors.New("nodeserver: provider refused bundles")
	// ErrReserveTimeout is returned when a provider does not answer a
	// reservation in time (its reservation, if it made one, is released by
	// the cluster's rollback, which goes down the channel after it).
	ErrReserveTimeout = errors.New("nodeserver: provider did not answer a reservation")
)

// reserveTimeout bounds how long ReserveBundles waits for a provider.
const reserveTimeout = 30 * time.Second

// ReserveBundles asks the provider to reserve bundles of a placement group
// and waits for its answer.
func (r *remote) ReserveBundles(pgID string, job ids.JobID, bundles map[int]map[string]float64) error {
	msg := &pb.BundleReserve{PlacementGroup: pgID, JobId: job.Bytes(), Bundles: map[int32]*pb.Resources{}}
	for i, b := range bundles {
		msg.Bundles[int32(i)] = &pb.Resources{Values: b}
	}
	done := make(chan error, 1)
	r.mu.Lock()
	if r.out == nil {
		r.mu.Unlock()
		return ErrNodeGone
	}
	r.reqSeq++
	msg.RequestId = r.reqSeq
	if r.reserving == nil {
		r.reserving = map[uint64]chan error{}
	}
	r.reserving[msg.RequestId] = done
	_ = r.sendLocked(&pb.HeadMessage{Msg: &pb.HeadMessage_BundleReserve{BundleReserve: msg}})
	r.mu.Unlock()
	t := time.NewTimer(reserveTimeout)
	defer t.Stop()
	var err error
	select {
	case err = <-done:
	case <-t.C:
		err = fmt.Errorf("%w: node %s", ErrReserveTimeout, r.id.Hex())
	}
	r.mu.Lock()
	delete(r.reserving, msg.RequestId)
	if err == nil {
		// Until the provider reports again; the release adds it back, so a
		// reserve and release between two reports leave no trace.
		if r.bundles == nil {
			r.bundles = map[string]map[string]float64{}
		}
		if r.bundles[pgID] == nil {
			r.bundles[pgID] = map[string]float64{}
		}
		for _, b := range bundles {
			for k, v := range b {
				r.available[k] -= v
				r.bundles[pgID][k] += v
			}
		}
	}
	r.mu.Unlock()
	return err
}

// ReleaseBundles tells the provider to give a group's bundles back; while
// it is disconnected, the release is sent first thing when it reconnects.
func (r *remote) ReleaseBundles(pgID string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, v := range r.bundles[pgID] {
		r.available[k] += v
	}
	delete(r.bundles, pgID)
	if r.out == nil {
		if r.releaseLater == nil {
			r.releaseLater = map[string]bool{}
		}
		r.releaseLater[pgID] = true
		return nil
	}
	return r.sendLocked(releaseMsg(pgID))
}

func releaseMsg(pgID string) *pb.HeadMessage {
	return &pb.HeadMessage{Msg: &pb.HeadMessage_BundleRelease{BundleRelease: &pb.BundleRelease{PlacementGroup: pgID}}}
}

// sendReleasesLocked sends the releases made while the provider was away.
func (r *remote) sendReleasesLocked() {
	for pgID := range r.releaseLater {
		_ = r.sendLocked(releaseMsg(pgID))
	}
	r.releaseLater = nil
}

// reserved delivers a provider's answer to a reservation.
func (r *remote) reserved(m *pb.BundleReserved) {
	r.mu.Lock()
	done := r.reserving[m.RequestId]
	delete(r.reserving, m.RequestId)
	r.mu.Unlock()
	if done == nil {
		return
	}
	if m.Error != "" {
		done <- fmt.Errorf("%w: %s", ErrBundlesRefused, m.Error)
		return
	}
	done <- nil
}

// failReservationsLocked fails the reservations waiting on a channel that broke.
func (r *remote) failReservationsLocked() {
	for id, done := range r.reserving {
		done <- ErrNodeGone
		delete(r.reserving, id)
	}
}

// pgRequest answers a provider worker's placement group operation from the
// cluster's table; the answer goes back down the control channel.
func (s *Server) pgRequest(ctx context.Context, r *remote, m *pb.PGRequest) {
	reply := &pb.PGReply{RequestId: m.RequestId}
	job, err := ids.JobFromBytes(m.JobId)
	var req taskspec.PGRequest
	if err == nil {
		err = json.Unmarshal(m.Request, &req)
	}
	var result any
	if err == nil {
		result, err = s.cfg.Cluster.PlacementGroupOp(ctx, job, req)
	}
	if ctx.Err() != nil {
		return // the channel is gone; the provider fails its waiter
	}
	if err == nil {
		reply.Result, err = json.Marshal(result)
	}
	if err != nil {
		reply.Error = err.Error()
	}
	_ = r.send(&pb.HeadMessage{Msg: &pb.HeadMessage_PgReply{PgReply: reply}})
}

package nodemanager

import (
	"context"
	"encoding/hex"
	"time"

	commonpb "github.com/gray-cluster/gray/proto/ray/commonpb"
	raypb "github.com/gray-cluster/gray/proto/ray/raypb"
)

// workerGone handles the end of a worker or driver: its process exited or
// its socket closed (whichever comes first; later calls are no-ops for
// the bookkeeping). It frees the lease, records the failure cause, reports
// the failure to the GCS, unpins the objects it owned, kills the workers
// leased by it, and for a driver finishes the job.
func (r *Raylet) workerGone(w *worker, exitType commonpb.WorkerExitType, detail string) {
	r.mu.Lock()
	if w.state == wsDead {
		r.mu.Unlock()
		if w.cmd != nil {
			w.kill() // the socket closed first; make sure the process goes too
		}
		return
	}
	var startupFailed []*lease
	if w.state == wsStarting {
		r.starting--
		startupFailed = r.workerStartFailedLocked()
	}
	prev := w.state
	w.state = wsDead
	w.setExit(exitType, detail)
	delete(r.byID, w.id)
	r.dead[w.id] = time.Now()
	if w.port > 0 {
		delete(r.usedPorts, int(w.port))
	}
	var failedLease *lease
	if l := w.lease; l != nil {
		failedLease = l
		r.releaseLeaseLocked(l)
		r.failures[l.id] = &failureCause{at: time.Now(), info: &commonpb.RayErrorInfo{
			ErrorType:    commonpb.ErrorType_WORKER_DIED,
			ErrorMessage: "The leased worker died: " + w.exitDetail,
		}}
	}
	// Workers leased by the dead process, and its queued leases, die with it.
	var orphans []*worker
	for _, o := range r.byID {
		if o.lease != nil && o.lease.owner == w.id && !(o.lease.isActor && o.detached) && !o.exiting {
			o.exiting = true
			orphans = append(orphans, o)
		}
	}
	var canceled []*lease
	kept := r.queue[:0]
	for _, l := range r.queue {
		if l.owner == w.id {
			canceled = append(canceled, l)
			continue
		}
		kept = append(kept, l)
	}
	r.queue = kept
	var jobWorkers []*worker
	isDriver := w.typ == workerTypeDriver
	jobAdded := false
	if isDriver {
		_, jobAdded = r.jobs[w.jobHex]
		delete(r.jobs, w.jobHex)
		for _, o := range r.byID {
			if o.jobHex == w.jobHex && o.typ != workerTypeDriver && !(o.actorID != nil && o.detached) && !o.exiting {
				o.exiting = true
				jobWorkers = append(jobWorkers, o)
			}
		}
	}
	unpinned := r.dropPinsOwnedByLocked(w.id)
	exitT, exitD, pid := w.exitType, w.exitDetail, w.pid
	graceful := w.exiting // it said goodbye (or was told to go): let it finish exiting
	r.scheduleLocked()
	r.mu.Unlock()

	if w.client != nil {
		w.client.close()
	}
	if w.cmd != nil {
		if graceful {
			r.killAfterGrace(w)
		} else {
			w.kill()
		}
	}
	if w.port > 0 {
		r.workers.drop(w.grpcAddr())
	}
	for _, l := range canceled {
		l.finish(leaseResult{canceled: true, failureType: raypb.RequestWorkerLeaseReply_SCHEDULING_CANCELLED_INTENDED,
			message: "the lease's owner died"})
	}
	for _, l := range startupFailed {
		l.finish(leaseResult{canceled: true, failureType: raypb.RequestWorkerLeaseReply_SCHEDULING_CANCELLED_WORKER_STARTUP_FAILED,
			message: "gray raylet: workers fail to start: " + exitD})
	}
	for _, o := range orphans {
		r.mu.Lock()
		o.setExit(commonpb.WorkerExitType_SYSTEM_ERROR, "Worker exits because its owner died.")
		r.mu.Unlock()
		o.kill()
	}
	for _, o := range jobWorkers {
		r.exitWorker(o, true, "Worker force exited because its job has finished")
	}
	r.log.Debug("worker gone", "worker_id", w.id.String(), "pid", pid, "state", prev.String(),
		"exit_type", exitT.String(), "detail", exitD, "unpinned", len(unpinned), "failed_lease", failedLease != nil)

	if prev == wsStarting && w.cmd == nil {
		return // never ran: nothing to report
	}
	r.goTracked(func() {
		ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
		defer cancel()
		if err := r.gcs.reportWorkerFailure(ctx, r.workerFailure(w, exitT, exitD)); err != nil && r.ctx.Err() == nil {
			r.log.Warn("ReportWorkerFailure failed", "worker_id", w.id.String(), "err", err)
		}
		if jobAdded {
			if err := r.gcs.markJobFinished(ctx, w.jobID); err != nil && r.ctx.Err() == nil {
				r.log.Warn("MarkJobFinished failed", "job", w.jobHex, "err", err)
			}
		}
	})
}

// killAfterGrace kills w's process unless it exits by itself within
// KillGrace.
func (r *Raylet) killAfterGrace(w *worker) {
	r.goTracked(func() {
		select {
		case <-w.gone:
			return
		case <-time.After(r.cfg.KillGrace):
		case <-r.ctx.Done():
		}
		w.kill()
	})
}

// maxStartFailures consecutive start-up failures fail the leases waiting
// for a worker; until then starts back off exponentially.
const maxStartFailures = 5

// workerStartFailedLocked counts a worker that died before registering and
// returns the queued leases to fail when too many did in a row.
func (r *Raylet) workerStartFailedLocked() []*lease {
	r.startFailures++
	backoff := 100 * time.Millisecond << min(r.startFailures, 7)
	r.startAfter = time.Now().Add(backoff)
	if r.startFailures < maxStartFailures {
		return nil
	}
	r.startFailures = 0
	r.startAfter = time.Time{}
	var failed []*lease
	kept := r.queue[:0]
	for _, l := range r.queue {
		if r.res.Feasible(l.placement) {
			failed = append(failed, l)
			continue
		}
		kept = append(kept, l)
	}
	r.queue = kept
	return failed
}

func (r *Raylet) workerFailure(w *worker, t commonpb.WorkerExitType, detail string) *raypb.WorkerTableData {
	now := uint64(time.Now().UnixMilli())
	wt := commonpb.WorkerType(w.typ)
	d := &raypb.WorkerTableData{
		IsAlive:            false,
		WorkerAddress:      w.address(r.cfg.NodeID),
		Timestamp:          int64(now),
		WorkerType:         wt,
		ExitType:           &t,
		ExitDetail:         &detail,
		Pid:                uint32(w.pid),
		EndTimeMs:          now,
		WorkerLaunchTimeMs: uint64(w.launched.UnixMilli()),
	}
	if jb := jobBytes(w.jobHex); jb != nil {
		d.JobId = jb
	}
	return d
}

func jobBytes(h string) []byte {
	if h == nilJobHex {
		return nil
	}
	b, err := hex.DecodeString(h)
	if err != nil || len(b) != 4 {
		return nil
	}
	return b
}

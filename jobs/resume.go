package jobs

import (
	"context"
	"fmt"
	"os"
)

// resume takes over the jobs a durable store still has as pending or
// running, left by a head process that stopped before they ended. A
// running entrypoint that is still alive (the same process: its pid and
// start time match) is adopted: it stays RUNNING, its log is followed
// from its file, stop works, and its exit code is read from its wrapper's
// status file when it ends. One that ended while the head was down ends
// with the code its status file holds; the rest end FAILED, as their
// supervisor died.
func (m *Manager) resume(ctx context.Context) error {
	recs, err := m.store.List(ctx)
	if err != nil {
		return fmt.Errorf("jobs: reading the job records: %w", err)
	}
	for _, r := range recs {
		if r.Status.Terminal() {
			continue
		}
		if r.Status == Running && r.DriverPID != 0 && r.StatusPath != "" {
			m.adopt(r)
			continue
		}
		if r.Status == Pending && r.StatusPath != "" && m.startedUnrecorded(ctx, &r) {
			m.adopt(r)
			continue
		}
		r.Message = "Job supervisor actor died: the head stopped while the job was pending, and a restarted head does not start it again."
		if r.Status == Running {
			r.Message = "Job supervisor actor died: the head stopped while the job ran, and its entrypoint cannot be taken over."
		}
		r.Status, r.ErrorType, r.EndTime = Failed, SupervisorDied, m.nowMs()
		if err := m.store.Put(ctx, r); err != nil {
			return fmt.Errorf("jobs: ending job %s of the previous head: %w", r.SubmissionID, err)
		}
		m.releaseCredential(r)
		m.log.Warn("job of the previous head run marked failed", "submission_id", r.SubmissionID)
	}
	return nil
}

// startedUnrecorded reports whether a pending job's entrypoint was started
// by the previous head run in the instant before its RUNNING record was
// written: its wrapper is alive (found by its command line), or its status
// file says it already ended. It then records the job RUNNING with that
// process, ready to adopt.
func (m *Manager) startedUnrecorded(ctx context.Context, r *Record) bool {
	pid, start, alive := findWrapper(r.StatusPath)
	if !alive {
		if _, err := os.Stat(r.StatusPath); err != nil {
			return false
		}
	}
	r.Status, r.Message, r.DriverPID, r.DriverStartTime = Running, "", pid, start
	if m.cfg.Addresses != nil {
		addrs := m.cfg.Addresses()
		r.DriverNodeID, r.DriverAgentHTTPAddress = addrs.NodeID, addrs.APIServer
	}
	if err := m.store.Put(ctx, *r); err != nil {
		m.log.Warn("job record lost", "submission_id", r.SubmissionID, "err", err)
	}
	m.log.Info("found the entrypoint of a job the previous head run started but did not record", "submission_id", r.SubmissionID, "pid", pid)
	return true
}

// adopt supervises a previous head run's running entrypoint.
func (m *Manager) adopt(r Record) {
	sid := r.SubmissionID
	lj := &liveJob{stop: make(chan struct{})}
	p, alive := adoptProcess(m.ctx, r.DriverPID, r.DriverStartTime, r.StatusPath, m.clock.After, m.cfg.PollInterval)
	if !alive {
		// It ended while the head was down: its status file (if its
		// wrapper wrote one) says how.
		p = &process{leader: r.DriverPID, statusPath: r.StatusPath, done: make(chan struct{})}
		close(p.done)
	} else if need := requestOf(r).resources(); len(need) > 0 && m.cfg.Resources != nil {
		// Its entrypoint resources are held again (best effort: what
		// others took meanwhile is not taken back).
		if m.cfg.Resources.TryHold(holdKey(sid), need) {
			lj.release = func() { m.cfg.Resources.Release(holdKey(sid)) }
		} else {
			m.log.Warn("adopted job's entrypoint resources are taken", "submission_id", sid)
		}
	}
	m.mu.Lock()
	m.live[sid] = lj
	m.mu.Unlock()
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer func() {
			m.mu.Lock()
			delete(m.live, sid)
			m.mu.Unlock()
		}()
		m.watch(sid, lj, r, p)
	}()
	m.log.Info("job of the previous head run adopted", "submission_id", sid, "pid", r.DriverPID, "alive", alive)
}

// requestOf is the part of a submission's request its record keeps.
func requestOf(r Record) Request {
	return Request{EntrypointNumCPUs: r.EntrypointNumCPUs, EntrypointNumGPUs: r.EntrypointNumGPUs,
		EntrypointMemory: r.EntrypointMemory, EntrypointResources: r.EntrypointResources}
}

// releaseCredential gives back the credential a job's entrypoint ran with.
func (m *Manager) releaseCredential(r Record) {
	if r.CredentialID != "" && m.cfg.ReleaseCredentials != nil {
		m.cfg.ReleaseCredentials(r.CredentialID)
	}
}

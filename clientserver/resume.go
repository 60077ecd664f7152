package clientserver

import (
	"context"
	"fmt"
	"time"

	"github.com/gray-cluster/gray/auth"
	"github.com/gray-cluster/gray/gcs"
	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/objectstore"
	"github.com/gray-cluster/gray/rayerr"
)

// A driver session outlives a head restart shorter than its reconnect grace
// period: its record (gcs.Sessions: job, namespace, runtime_env, account,
// grace) and its uploaded function and class pickles are stored while it is
// open, and a restarted head (Restore) sets the session up again, waiting
// for its client to reconnect. Objects of its job that providers hold,
// and results of its tasks still running on them, are claimed for it as
// the providers reconnect (ClaimRestored). What lived only in the old head
// is Ray's error for the resumed client: its other objects are lost
// (ObjectLostError) and its non-detached actors dead (ActorDiedError).

// persistSession stores a driver session's record once its Init has
// started its job. A session whose client does not reconnect (grace 0)
// cannot come back, and is not stored.
func (s *Server) persistSession(ss *session) {
	ss.mu.Lock()
	if ss.workerID != "" || !ss.initialized || ss.grace <= 0 || ss.ended {
		ss.mu.Unlock()
		return
	}
	rec := gcs.SessionRecord{
		ClientID: ss.clientID, Account: ss.account, Job: ss.job, Namespace: ss.namespace,
		RuntimeEnv: ss.runtimeEnv, Grace: ss.grace, Start: time.Now(),
	}
	ss.mu.Unlock()
	if info, ok := s.cfg.Jobs.Get(rec.Job); ok {
		rec.SubmissionID, rec.Start = info.SubmissionID, info.StartTime
	}
	if err := s.cfg.Sessions.Put(s.ctx, rec); err != nil {
		s.log.Warn("cannot store the session; it will not survive a head restart", "client", rec.ClientID, "err", err)
		return
	}
	ss.mu.Lock()
	ss.stored = true
	ss.mu.Unlock()
}

// persistPayload stores a function or class pickle a stored session put.
func (s *Server) persistPayload(ss *session, p gcs.SessionPayload) {
	ss.mu.Lock()
	stored := ss.stored && !ss.ended
	ss.mu.Unlock()
	if !stored {
		return
	}
	if err := s.cfg.Sessions.AddPayload(s.ctx, ss.clientID, p); err != nil {
		s.log.Warn("cannot store an uploaded function; the session's calls of it will fail after a head restart",
			"client", ss.clientID, "object", p.Object.Hex(), "err", err)
	}
}

// forgetSession deletes an ended session's record and payloads.
func (s *Server) forgetSession(ss *session) {
	ss.mu.Lock()
	stored := ss.stored
	ss.stored = false
	ss.mu.Unlock()
	if !stored {
		return
	}
	if err := s.cfg.Sessions.Delete(context.WithoutCancel(s.ctx), ss.clientID); err != nil {
		s.log.Warn("cannot delete an ended session's record", "client", ss.clientID, "err", err)
		return
	}
	s.log.Info("session ended; its record is deleted", "client", ss.clientID)
}

// Restore sets up the driver sessions that were open when the head last
// stopped, each waiting for its client for its reconnect grace period
// (counted from now); one whose client does not come back ends then, as
// any session whose client went away. It runs before Start, with the
// context Start will be given.
func (s *Server) Restore(ctx context.Context) (int, error) {
	if s.ctx == nil {
		s.ctx, s.stop = context.WithCancel(ctx)
	}
	recs, err := s.cfg.Sessions.Load(ctx)
	if err != nil {
		return 0, fmt.Errorf("clientserver: restore sessions: %w", err)
	}
	for _, rec := range recs {
		if err := s.restoreSession(rec); err != nil {
			s.log.Warn("cannot resume a session", "client", rec.ClientID, "err", err)
			if err := s.cfg.Sessions.Delete(ctx, rec.ClientID); err != nil {
				s.log.Warn("cannot delete a session's record", "client", rec.ClientID, "err", err)
			}
		}
	}
	return len(recs), nil
}

func (s *Server) restoreSession(rec gcs.SessionRecord) error {
	if rec.Grace <= 0 {
		return fmt.Errorf("session %s has no reconnect grace period", rec.ClientID)
	}
	ss := newSession(rec.ClientID, "")
	ss.account = rec.Account
	ss.job, ss.namespace, ss.runtimeEnv, ss.grace = rec.Job, rec.Namespace, rec.RuntimeEnv, rec.Grace
	ss.initialized, ss.resumed, ss.stored = true, true, true
	ss.env, ss.envErr = s.resolveRuntimeEnv(s.kvAccountOf(ss), rec.RuntimeEnv)
	for _, p := range rec.Payloads {
		obj := &objectstore.Object{ID: p.Object, Chunks: [][]byte{p.Data}, Size: int64(len(p.Data))}
		if stubs, err := scanChunks(obj.Chunks); err == nil {
			for _, st := range stubs {
				if st.Type == "Object" || st.Type == "RemoteFunc" || st.Type == "RemoteActor" {
					if cid, err := ids.ObjectFromBytes(st.RefID); err == nil {
						obj.Contained = append(obj.Contained, cid)
					}
				}
			}
		}
		if err := s.store.Put(obj, ss.holder()); err != nil {
			return fmt.Errorf("payload %s: %w", p.Object.Hex(), err)
		}
		ss.track(p.Object)
		s.mu.Lock()
		if len(p.ClientRef) > 0 {
			key := fmt.Sprintf("%x", p.ClientRef)
			s.clientRefs[key] = p.Object
			ss.clientRefs = append(ss.clientRefs, key)
		}
		if len(p.SelfRefs) > 0 {
			s.objMeta[p.Object] = &objectMeta{selfRefs: p.SelfRefs}
		}
		s.mu.Unlock()
	}
	s.cfg.Jobs.Resume(gcs.JobInfo{ID: rec.Job, Namespace: rec.Namespace, ClientID: rec.ClientID,
		SubmissionID: rec.SubmissionID, StartTime: rec.Start})
	account := rec.Account
	if account == "" {
		account = auth.DefaultAccount
	}
	s.setJobAccount(rec.Job, account)
	if s.cfg.Billing != nil {
		if err := s.cfg.Billing.OpenSession(rec.Job.Hex(), account); err != nil {
			s.log.Warn("billing: cannot reopen session escrow", "job", rec.Job.Hex(), "account", account, "err", err)
		}
	}
	s.mu.Lock()
	s.sessions[rec.ClientID] = ss
	s.mu.Unlock()
	s.log.Info("session waits for its client to reconnect", "client", rec.ClientID, "job", rec.Job.Hex(),
		"grace", rec.Grace, "functions", len(rec.Payloads))
	time.AfterFunc(rec.Grace, func() {
		ss.mu.Lock()
		gone := ss.generation == 0 && ss.streams == 0
		ss.mu.Unlock()
		if gone {
			s.log.Info("resumed session's client did not come back", "client", rec.ClientID)
			s.endSession(ss)
		}
	})
	return nil
}

// ClaimRestored gives an object found on a provider after a head restart
// (held there, or the result of a task still running there) an owner: the
// resumed driver session of its job holds it from now on, as a pending
// object of the store that the provider fills, and releases it as any
// (when the client does, or when the session ends). False when no resumed
// session owns it.
func (s *Server) ClaimRestored(oid ids.ObjectID) bool {
	job := oid.Task().Job()
	s.mu.Lock()
	var owner *session
	for _, ss := range s.sessions {
		if ss.workerID == "" && ss.resumed && ss.job == job {
			owner = ss
			break
		}
	}
	s.mu.Unlock()
	if owner == nil {
		return false
	}
	owner.mu.Lock()
	defer owner.mu.Unlock()
	if owner.ended { // its ReleaseAll may have run: holding now would leak
		return false
	}
	owner.held[oid] = struct{}{}
	s.store.Create(oid, owner.holder())
	return true
}

// awaitRestored waits, for a resumed session naming an object of its job
// the store lacks, until the providers known from before the restart have
// reported what they hold (see Config.AwaitRestored).
func (s *Server) awaitRestored(ctx context.Context, ss *session, oid ids.ObjectID) {
	ss.mu.Lock()
	mine := ss.resumed && oid.Task().Job() == ss.job
	ss.mu.Unlock()
	if !mine || s.cfg.AwaitRestored == nil {
		return
	}
	if err := s.cfg.AwaitRestored(ctx); err != nil {
		s.log.Debug("stopped waiting for the restored providers", "object", oid.Hex(), "err", err)
	}
}

// lostAtRestart is the error for an object a resumed session names that is
// not in the store: one of its job's objects, held by the head that
// stopped.
func (ss *session) lostAtRestart(oid ids.ObjectID) error {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if !ss.resumed || oid.Task().Job() != ss.job {
		return nil
	}
	return fmt.Errorf("%w: %s: the head that held it restarted", objectstore.ErrNotFound, oid.Hex())
}

// resumedActorCall is the answer to a resumed session's call on an actor:
// its job's actors the head does not know died with the old head
// (ActorDiedError); a live actor it may use, it gets its handle back.
// ok is false when the call proceeds as any.
func (s *Server) resumedActorCall(ss *session, aid ids.ActorID) (rayerr.Exception, bool) {
	ss.mu.Lock()
	resumed, job := ss.resumed, ss.job
	ss.mu.Unlock()
	if !resumed || ss.workerID != "" {
		return rayerr.Exception{}, false
	}
	if _, known := s.cfg.Actors.Get(aid); !known {
		if aid.Job() == job {
			return rayerr.ActorDied(), true
		}
		return rayerr.Exception{}, false
	}
	if !s.actorHeldBy(aid, ss.holder()) && s.actorAllowed(ss, aid) {
		s.holdActor(aid, ss.holder())
	}
	return rayerr.Exception{}, false
}

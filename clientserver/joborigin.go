package clientserver

// JobOrigin is what the Jobs API knows of a session its entrypoint
// opened: the submission, the job's runtime_env (the session's defaults)
// and the account the job is billed to.
type JobOrigin struct {
	SubmissionID string
	RuntimeEnv   map[string]any
	Account      string
}

// jobOrigin asks the Jobs API whether a new driver session comes from a
// job's entrypoint.
func (s *Server) jobOrigin(ss *session) (JobOrigin, bool) {
	ss.mu.Lock()
	p, worker := ss.peer, ss.workerID != ""
	ss.mu.Unlock()
	if worker || p == nil || s.cfg.JobOrigin == nil {
		return JobOrigin{}, false
	}
	return s.cfg.JobOrigin(p)
}

// withJobEnv lays a session's runtime_env over its job's, as a stock
// driver merges the job config's: per field, env_vars per variable, the
// session's own values winning.
func withJobEnv(session, job map[string]any) map[string]any {
	if len(job) == 0 {
		return session
	}
	out := make(map[string]any, len(job)+len(session))
	for k, v := range job {
		out[k] = v
	}
	for k, v := range session {
		out[k] = v
	}
	jv, _ := asDict(job["env_vars"])
	sv, _ := asDict(session["env_vars"])
	if len(jv) > 0 && len(sv) > 0 {
		vars := make(map[string]any, len(jv)+len(sv))
		for k, v := range jv {
			vars[k] = v
		}
		for k, v := range sv {
			vars[k] = v
		}
		out["env_vars"] = vars
	}
	return out
}

package gcsserver

import (
	"context"
	"encoding/hex"
	"strings"

	raypb "github.com/gray-cluster/gray/proto/ray/raypb"
)

// The function table: drivers export their remote functions and actor
// classes to the KV (namespace "fun", keys "<kind>:<job hex>:<id>"). As
// Ray's GCS does, a job's exports go once the job has finished and none of
// its detached actors lives (a detached actor may restart and need its
// class again).
var functionTableKinds = []string{"RemoteFunction", "ActorClass", "FunctionsToRun", "IsolatedExports"}

const functionTableNamespace = "fun"

// dropJobFunctionsLocked deletes a finished job's exports unless one of
// its detached actors is still alive.
func (s *Server) dropJobFunctionsLocked(jobID []byte) {
	if !s.jobDeadLocked(jobID) {
		return
	}
	for _, a := range s.actors {
		if a.detached() && !a.gone && a.state() != raypb.ActorTableData_DEAD && string(a.data.GetJobId()) == string(jobID) {
			return
		}
	}
	s.dropExports(s.ctx, hex.EncodeToString(jobID))
}

func (s *Server) dropExports(ctx context.Context, jobHex string) {
	for _, kind := range functionTableKinds {
		if _, err := s.cfg.KV.Del(ctx, []byte(functionTableNamespace), []byte(kind+":"+jobHex+":"), true); err != nil {
			s.log.Warn("cannot drop a finished job's exports", "job_id", jobHex, "err", err)
		}
	}
}

// dropStaleExports drops the exports of jobs this server does not know (a
// KV kept across a head restart without the job table holds the previous
// run's, and those jobs cannot come back: job numbers never repeat), and
// of known jobs that finished and left no detached actor alive.
func (s *Server) dropStaleExports(ctx context.Context) {
	jobs := map[string]bool{}
	for _, kind := range functionTableKinds {
		keys, err := s.cfg.KV.Keys(ctx, []byte(functionTableNamespace), []byte(kind+":"))
		if err != nil {
			s.log.Warn("cannot list exported functions", "err", err)
			return
		}
		for _, k := range keys {
			if job, _, ok := strings.Cut(strings.TrimPrefix(string(k), kind+":"), ":"); ok {
				jobs[job] = true
			}
		}
	}
	for job := range jobs {
		id, err := hex.DecodeString(job)
		s.mu.Lock()
		j := s.jobs[string(id)]
		known := err == nil && j != nil
		if known {
			// A job loaded from the store: its exports go as they would
			// have (finished, and no detached actor of it lives).
			s.dropJobFunctionsLocked(id)
		}
		s.mu.Unlock()
		if !known {
			s.log.Info("dropping exports of a job of a previous run", "job_id", job)
			s.dropExports(ctx, job)
		}
	}
}

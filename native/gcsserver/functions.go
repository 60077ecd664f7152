package gcsserver

import (
	"encoding/hex"

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
	job := hex.EncodeToString(jobID)
	for _, kind := range functionTableKinds {
		s.cfg.KV.Del([]byte(functionTableNamespace), []byte(kind+":"+job+":"), true)
	}
}

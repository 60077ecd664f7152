package clientserver

import (
	"testing"

	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/objectstore"
)

// An object a restored provider holds is claimed by the resumed driver
// session of its job, which may then use it and which frees it when it
// ends; objects of other jobs, or of a session that ended, are claimed by
// no one.
func TestClaimRestoredGivesObjectsToTheResumedSessionOfTheirJob(t *testing.T) {
	s, store := newTestServer(t)
	job, other := ids.JobFromInt(3), ids.JobFromInt(4)
	ss := newSession("c1", "")
	ss.job, ss.initialized, ss.resumed = job, true, true
	worker := newSession("w1", "worker-1") // a worker session of the same job
	worker.job = job
	s.sessions[ss.clientID], s.sessions[worker.clientID] = ss, worker

	mine := ids.NewTaskID(ids.NilActorFor(job)).ReturnID(1)
	theirs := ids.NewTaskID(ids.NilActorFor(other)).ReturnID(1)
	if !s.ClaimRestored(mine) {
		t.Fatal("the resumed session did not claim its job's object")
	}
	if s.ClaimRestored(theirs) || store.Contains(theirs) {
		t.Fatal("an object of a job without a resumed session was claimed")
	}
	if !store.Contains(mine) || !s.mayUse(ss, mine) {
		t.Fatal("the claimed object is not the session's")
	}
	if !store.Seal(&objectstore.Object{ID: mine, Size: 1, Chunks: [][]byte{{1}}}) {
		t.Fatal("the value the provider pushed back was dropped")
	}
	s.endSession(ss)
	if store.Contains(mine) {
		t.Fatal("the session ended, its claimed object is still there")
	}
	later := ids.NewTaskID(ids.NilActorFor(job)).ReturnID(1)
	if s.ClaimRestored(later) || store.Contains(later) {
		t.Fatal("an ended session claimed an object")
	}
}

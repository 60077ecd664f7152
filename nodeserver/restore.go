package nodeserver

import (
	"maps"

	"github.com/gray-cluster/gray/gcs"
	"github.com/gray-cluster/gray/internal/ids"
	pb "github.com/gray-cluster/gray/proto/nodepb"
	"github.com/gray-cluster/gray/taskspec"
)

// Restore adds the providers a restarted head finds in its node table,
// each with the stored actors placed on it. They are suspect (no new work)
// and not connected; each has DeadAfter from now to reconnect, as a
// provider that went silent has. One that does reconnect is recognised: the
// actors it still runs are re-attached (calls made meanwhile, queued, go to
// it), those it lost are recovered (restarted within max_restarts, else
// dead), and the actors it runs that the head no longer knows (owned by
// sessions the restart ended) are killed. One that does not is declared
// dead and its actors recovered the same way.
func (s *Server) Restore(nodes []gcs.NodeInfo, actors map[ids.NodeID][]*taskspec.ActorSpec) {
	now := s.cfg.Now()
	for _, info := range nodes {
		id := info.ID
		r := newRemote(id, s.cfg.Store)
		r.billing = s.cfg.Billing
		r.locate = func(deps []ids.ObjectID) []*pb.PeerLocation { return s.locate(id, deps) }
		r.total = maps.Clone(info.Total)
		for _, a := range actors[id] {
			r.actors[a.ActorID] = a
		}
		s.mu.Lock()
		if s.remotes[id] != nil { // it connected already
			s.mu.Unlock()
			continue
		}
		s.remotes[id] = &nodeConn{r: r, info: info, suspect: true, lastHeard: now, restored: true}
		s.awaitRestoredLocked(id)
		s.mu.Unlock()
		s.cfg.Cluster.RestoreNode(r, info)
		s.log.Info("provider restored from the node table; waiting for it to reconnect", "node", id.Hex(),
			"actors", len(actors[id]), "grace", s.cfg.DeadAfter)
	}
}

// reattach finishes a restored provider's reconciliation: it re-attaches
// the stored actors it still runs and kills those the head no longer
// knows. The tasks it still runs are left to finish, and nothing runs
// them again: their results are kept for the sessions that resumed (see
// reclaim), dropped as they arrive for those that ended with the old
// head.
func (s *Server) reattach(r *remote, running map[ids.TaskID]bool, live map[ids.ActorID]bool) {
	r.mu.Lock()
	var kept, orphans []ids.ActorID
	for id := range live {
		if r.actors[id] != nil {
			kept = append(kept, id)
		} else {
			orphans = append(orphans, id)
		}
	}
	r.mu.Unlock()
	// The new head's accounting learns the leases the provider still holds,
	// so that their usage records (sent when they end, or flushed) are
	// accepted and charged to the resumed sessions (an orphan's last
	// record, of a session that ended, costs nothing).
	for id := range running {
		r.leased(id.Hex())
	}
	for id := range live {
		r.leased("actor-" + id.Hex())
	}
	s.cfg.Cluster.Reattach(r.id, kept)
	for _, id := range orphans {
		s.log.Info("killing an actor the restarted head does not know (its owner's session ended)", "node", r.id.Hex(), "actor", id.Hex())
		if err := r.KillActor(id, true); err != nil {
			s.log.Warn("kill orphaned actor", "actor", id.Hex(), "err", err)
		}
	}
	if len(running) > 0 {
		s.log.Info("restored provider still runs tasks from before the restart; they finish there", "node", r.id.Hex(), "tasks", len(running))
	}
}

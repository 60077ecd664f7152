package gcsserver

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/gray-cluster/gray/gcs"
	"github.com/gray-cluster/gray/proto/ray/commonpb"
	"github.com/gray-cluster/gray/proto/ray/raypb"
)

// Durable tables (Config.Tables): the actor, job and node tables are
// written through on every change (each change is published, and the
// publish points are where they are stored) and loaded by New, so that a
// GCS restarted on the same store knows the cluster it served. The
// in-memory maps are the cache of the store; placement groups are stored
// at each state change (created, placed, rescheduling, removed), workers
// at each change of their record (added, failed, debugger port, paused
// threads) and forgotten when the dead-worker cap drops them, as Ray's
// GcsWorkerManager does with its WorkerTable. Task events stay in memory
// (Ray's GcsTaskManager keeps them in memory only).

// storeTimeout bounds one write of a table entry.
const storeTimeout = 10 * time.Second

func (s *Server) storeCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), storeTimeout)
}

// storeLocked writes one entry, logging a failure (the change has been
// made and published: the store lags until the entry changes again).
func (s *Server) storeLocked(table string, key []byte, msgs ...proto.Message) {
	if s.cfg.Tables == nil {
		return
	}
	parts := make([][]byte, len(msgs))
	for i, m := range msgs {
		b, err := proto.Marshal(m)
		if err != nil {
			s.log.Error("cannot encode a table entry", "table", table, "key", hexID(key), "err", err)
			return
		}
		parts[i] = b
	}
	ctx, cancel := s.storeCtx()
	defer cancel()
	if err := s.cfg.Tables.Put(ctx, table, key, parts...); err != nil {
		s.log.Error("cannot store a table entry", "table", table, "key", hexID(key), "err", err)
	}
}

func (s *Server) forgetLocked(table string, key []byte) {
	if s.cfg.Tables == nil {
		return
	}
	ctx, cancel := s.storeCtx()
	defer cancel()
	if err := s.cfg.Tables.Delete(ctx, table, key); err != nil {
		s.log.Error("cannot drop a table entry", "table", table, "key", hexID(key), "err", err)
	}
}

func (s *Server) storeActorLocked(a *actor) {
	s.storeLocked(gcs.NativeActorsTable, a.id, a.data, a.spec)
}

func (s *Server) storeJobLocked(j *raypb.JobTableData) {
	s.storeLocked(gcs.NativeJobsTable, j.GetJobId(), j)
}

func (s *Server) storePGLocked(pg *placementGroup) {
	s.storeLocked(gcs.NativePlacementGroupsTable, pg.data.GetPlacementGroupId(), pg.data)
}

func (s *Server) storeWorkerLocked(w *raypb.WorkerTableData) {
	s.storeLocked(gcs.NativeWorkersTable, w.GetWorkerAddress().GetWorkerId(), w)
}

func (s *Server) storeNodeLocked(info *raypb.GcsNodeInfo) {
	s.storeLocked(gcs.NativeNodesTable, info.GetNodeId(), info)
}

// loadTables fills the maps from Config.Tables (New, before anything is
// served): nodes as they were (ALIVE ones must answer a resource poll
// within NodeDeadAfter), jobs, actors with their creation spec.
func (s *Server) loadTables(ctx context.Context) error {
	t := s.cfg.Tables
	if t == nil {
		return nil
	}
	now := s.now()
	err := t.Load(ctx, gcs.NativeNodesTable, func(key []byte, parts [][]byte) error {
		info := &raypb.GcsNodeInfo{}
		if err := unmarshalParts(parts, info); err != nil {
			return err
		}
		n := &nodeEntry{info: info, available: maps.Clone(info.GetResourcesTotal()), lastOK: now}
		if !n.alive() {
			n.available = map[string]float64{}
		}
		s.nodes[string(key)] = n
		s.nodeOrder = append(s.nodeOrder, string(key))
		return nil
	})
	if err != nil {
		return err
	}
	err = t.Load(ctx, gcs.NativeJobsTable, func(key []byte, parts [][]byte) error {
		j := &raypb.JobTableData{}
		if err := unmarshalParts(parts, j); err != nil {
			return err
		}
		s.jobs[string(key)] = j
		s.jobOrder = append(s.jobOrder, string(key))
		return nil
	})
	if err != nil {
		return err
	}
	err = t.Load(ctx, gcs.NativeActorsTable, func(key []byte, parts [][]byte) error {
		d, spec := &raypb.ActorTableData{}, &commonpb.TaskSpec{}
		if err := unmarshalParts(parts, d, spec); err != nil {
			return err
		}
		a := &actor{id: append([]byte(nil), key...), data: d, spec: spec, gone: d.GetState() == raypb.ActorTableData_DEAD}
		if !a.gone && d.GetName() != "" {
			s.named[nameKey{d.GetRayNamespace(), d.GetName()}] = string(key)
		}
		s.actors[string(key)] = a
		s.actorOrder = append(s.actorOrder, string(key))
		return nil
	})
	if err != nil {
		return err
	}
	err = t.Load(ctx, gcs.NativePlacementGroupsTable, func(key []byte, parts [][]byte) error {
		d := &raypb.PlacementGroupTableData{}
		if err := unmarshalParts(parts, d); err != nil {
			return err
		}
		pg := &placementGroup{data: d, ready: make(chan struct{})}
		if st := d.GetState(); st == raypb.PlacementGroupTableData_CREATED || st == raypb.PlacementGroupTableData_REMOVED {
			pg.closeReady()
		}
		s.pgs[string(key)] = pg
		s.pgOrder = append(s.pgOrder, string(key))
		return nil
	})
	if err != nil {
		return err
	}
	if err := s.loadWorkers(ctx); err != nil {
		return err
	}
	s.log.Info("GCS tables loaded", "nodes", len(s.nodes), "jobs", len(s.jobs), "actors", len(s.actors),
		"placement_groups", len(s.pgs), "workers", len(s.workers))
	return nil
}

// loadWorkers fills the worker table, oldest first (by the time each
// record was added, then id), the order GetAllWorkerInfo lists and the
// dead-worker cap drops them in.
func (s *Server) loadWorkers(ctx context.Context) error {
	err := s.cfg.Tables.Load(ctx, gcs.NativeWorkersTable, func(key []byte, parts [][]byte) error {
		w := &raypb.WorkerTableData{}
		if err := unmarshalParts(parts, w); err != nil {
			return err
		}
		s.workers[string(key)] = w
		s.workerOrd = append(s.workerOrd, string(key))
		return nil
	})
	if err != nil {
		return err
	}
	slices.SortStableFunc(s.workerOrd, func(a, b string) int {
		return cmp.Compare(s.workers[a].GetTimestamp(), s.workers[b].GetTimestamp())
	})
	return nil
}

// nodeWorkersDeadLocked records the death of the workers still alive on a
// node that died (no raylet is left to report them): SYSTEM_ERROR with the
// node's death message, published on the worker delta channel.
func (s *Server) nodeWorkersDeadLocked(nodeID []byte, death *commonpb.NodeDeathInfo) {
	for _, id := range append([]string(nil), s.workerOrd...) {
		w := s.workers[id]
		if w == nil || !w.GetIsAlive() || string(w.GetWorkerAddress().GetNodeId()) != string(nodeID) {
			continue
		}
		w.IsAlive = false
		w.ExitType = commonpb.WorkerExitType_SYSTEM_ERROR.Enum()
		detail := "the worker's node died: " + death.GetReasonMessage()
		w.ExitDetail = &detail
		w.EndTimeMs = uint64(s.now().UnixMilli())
		s.storeWorkerLocked(w)
		s.publish(&raypb.PubMessage{
			ChannelType: raypb.ChannelType_GCS_WORKER_DELTA_CHANNEL,
			KeyId:       w.GetWorkerAddress().GetWorkerId(),
			InnerMessage: &raypb.PubMessage_WorkerDeltaMessage{WorkerDeltaMessage: &raypb.WorkerDeltaData{
				NodeId: nodeID, WorkerId: w.GetWorkerAddress().GetWorkerId(),
			}},
		})
	}
	s.pruneWorkersLocked()
}

func unmarshalParts(parts [][]byte, msgs ...proto.Message) error {
	if len(parts) != len(msgs) {
		return fmt.Errorf("%w: %d parts, want %d", gcs.ErrCorrupt, len(parts), len(msgs))
	}
	for i, m := range msgs {
		if err := proto.Unmarshal(parts[i], m); err != nil {
			return fmt.Errorf("%w: %v", gcs.ErrCorrupt, err)
		}
	}
	return nil
}

// resumeLocked picks up what the loaded tables left in flight (Start):
// ALIVE actors are bound to their worker again (the node's resource polls
// tell whether it is still there), actors being scheduled are scheduled
// again, owned actors watch their owner again, the previous head node is
// DEAD (what ran there restarts or dies), and running jobs whose driver's
// node is unknown or dead are finished.
func (s *Server) resumeLocked() {
	for _, id := range s.actorOrder {
		a := s.actors[id]
		if a == nil || a.gone {
			continue
		}
		switch a.state() {
		case raypb.ActorTableData_ALIVE:
			n := s.nodes[string(a.data.GetAddress().GetNodeId())]
			if n == nil || !n.alive() {
				// Its node died with (or before) the last GCS.
				dead := n
				if dead == nil {
					dead = &nodeEntry{info: &raypb.GcsNodeInfo{NodeId: a.data.GetAddress().GetNodeId(),
						DeathInfo: &commonpb.NodeDeathInfo{Reason: commonpb.NodeDeathInfo_UNEXPECTED_TERMINATION, ReasonMessage: "the node is unknown after a GCS restart"}}}
				}
				s.restartOrDieLocked(a, true, nodeDiedCause(a, dead))
				continue
			}
			a.worker = proto.Clone(a.data.GetAddress()).(*commonpb.Address)
			a.raylet = n.address()
		case raypb.ActorTableData_PENDING_CREATION, raypb.ActorTableData_RESTARTING:
			s.scheduleLocked(a)
		}
		if !a.gone && !a.detached() {
			s.watchOwnerLocked(a)
		}
	}
	// The head's own node ran in the process of the last GCS: it is gone
	// (the new head's raylet registers as a new node). Stored ALIVE, it
	// would be taken for alive until NodeDeadAfter.
	for _, id := range append([]string(nil), s.nodeOrder...) {
		if n := s.nodes[id]; n.alive() && n.info.GetIsHeadNode() {
			s.markNodeDeadLocked([]byte(id), &commonpb.NodeDeathInfo{Reason: commonpb.NodeDeathInfo_UNEXPECTED_TERMINATION,
				ReasonMessage: "the head node died with the GCS process (head restart)"})
		}
	}
	// Placement groups: those still being placed are placed again; the
	// bundles of created ones stay reserved on their nodes (a node that did
	// not come back gives them up through the node-death path below).
	for _, id := range s.pgOrder {
		pg := s.pgs[id]
		if st := pg.data.GetState(); st == raypb.PlacementGroupTableData_PENDING || st == raypb.PlacementGroupTableData_RESCHEDULING {
			s.schedulePGLocked(pg)
		}
	}
	for _, id := range s.pgOrder {
		pg := s.pgs[id]
		if pg.data.GetState() != raypb.PlacementGroupTableData_CREATED {
			continue
		}
		for _, b := range pg.data.GetBundles() {
			if n := s.nodes[string(b.GetNodeId())]; n == nil || !n.alive() {
				// Placed on a node that is gone or unknown: place it again.
				s.onNodeDeadPGLocked(b.GetNodeId())
				break
			}
		}
	}
	for _, jid := range append([]string(nil), s.jobOrder...) {
		j := s.jobs[jid]
		if j.GetIsDead() {
			continue
		}
		if n := s.nodes[string(j.GetDriverAddress().GetNodeId())]; n == nil || !n.alive() {
			s.finishJobLocked(j.GetJobId())
		}
	}
}

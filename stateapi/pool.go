package stateapi

import (
	"context"
	"maps"
	"strings"
	"time"

	"github.com/gray-cluster/gray/cluster"
	"github.com/gray-cluster/gray/gcs"
	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/objectstore"
	"github.com/gray-cluster/gray/raylet"
	"github.com/gray-cluster/gray/taskhistory"
)

// PoolSnapshot is the ray:// world's tables as the head holds them: its
// node table, actor and job tables, placement groups and parked work, the
// head raylet's tasks, actors and workers, the object store and the task
// history. Providers' raylets report no per-task state to the head, so
// their tasks show as SUBMITTED_TO_WORKER until they end.
type PoolSnapshot struct {
	HeadNode   ids.NodeID
	HeadIP     string
	Nodes      []gcs.NodeInfo
	Actors     []gcs.ActorInfo
	Placements map[ids.ActorID]cluster.ActorPlacement
	Groups     []cluster.PlacementGroupInfo
	Parked     []cluster.Parked
	Jobs       []gcs.JobInfo
	// Head raylet: its unfinished tasks, its actors and its workers.
	Runs      []raylet.TaskRun
	ActorRuns []raylet.ActorRun
	Workers   []raylet.WorkerInfo
	Objects   []objectstore.ObjectInfo
	Tasks     []taskhistory.Record
	Dropped   int
}

// PoolSource is a Source over the ray:// world; Take snapshots it.
type PoolSource struct {
	Take func() PoolSnapshot
}

// Snapshot builds rows from a fresh PoolSnapshot.
func (p PoolSource) Snapshot(_ context.Context, r Resource) (Snapshot, error) {
	if p.Take == nil {
		return Snapshot{}, nil
	}
	return p.Take().Rows(r), nil
}

// Rows builds one resource's rows.
func (p PoolSnapshot) Rows(r Resource) Snapshot {
	switch r {
	case Nodes:
		return Snapshot{Rows: p.nodeRows()}
	case Actors:
		return Snapshot{Rows: p.actorRows()}
	case PlacementGroups:
		return Snapshot{Rows: p.groupRows()}
	case Jobs:
		return Snapshot{Rows: p.jobRows()}
	case Workers:
		return Snapshot{Rows: p.workerRows()}
	case Tasks:
		return Snapshot{Rows: p.taskRows(), Dropped: p.Dropped}
	case Objects:
		return Snapshot{Rows: p.objectRows()}
	}
	return Snapshot{}
}

func ms(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixMilli()
}

func nodeHex(n ids.NodeID) any {
	if n == (ids.NodeID{}) {
		return nil
	}
	return n.Hex()
}

func (p PoolSnapshot) nodeRows() []Row {
	rows := make([]Row, 0, len(p.Nodes))
	for _, n := range p.Nodes {
		state, msg := "ALIVE", any(nil)
		switch n.State {
		case gcs.NodeDead:
			state, msg = "DEAD", strOrNil(n.DeathReason)
		case gcs.NodeSuspect:
			msg = "SUSPECT: the provider does not answer; its work is paused"
		}
		labels := map[string]string{"ray.io/node-id": n.ID.Hex()}
		maps.Copy(labels, n.Labels)
		res := maps.Clone(n.Total)
		if res == nil {
			res = map[string]float64{}
		}
		rows = append(rows, Row{
			"node_id": n.ID.Hex(), "node_ip": n.IP, "is_head_node": n.IsHead, "state": state, "state_message": msg,
			"node_name": n.IP, "resources_total": res, "labels": labels, "start_time_ms": nil, "end_time_ms": nil,
		})
	}
	return rows
}

func (p PoolSnapshot) localActors() map[ids.ActorID]raylet.ActorRun {
	out := make(map[ids.ActorID]raylet.ActorRun, len(p.ActorRuns))
	for _, a := range p.ActorRuns {
		out[a.ActorID] = a
	}
	return out
}

// actorState is an actor's state: the hosting head raylet's word, else
// what the cluster knows of its placement.
func (p PoolSnapshot) actorState(a gcs.ActorInfo, local map[ids.ActorID]raylet.ActorRun) string {
	pl, placed := p.Placements[a.ID]
	switch {
	case a.Dead || (placed && pl.Dead):
		return "DEAD"
	case local[a.ID].State != "":
		return string(local[a.ID].State)
	case placed && pl.Placed:
		return "ALIVE"
	}
	return "PENDING_CREATION"
}

func (p PoolSnapshot) actorRows() []Row {
	local := p.localActors()
	rows := make([]Row, 0, len(p.Actors))
	for _, a := range p.Actors {
		pl := p.Placements[a.ID]
		run, here := local[a.ID]
		var pid any
		if here && run.PID > 0 {
			pid = int64(run.PID)
		}
		rows = append(rows, Row{
			"actor_id": a.ID.Hex(), "class_name": a.ClassName, "state": p.actorState(a, local), "job_id": a.JobID.Hex(),
			"name": strOrNil(a.Name), "node_id": nodeHex(pl.Node), "pid": pid, "ray_namespace": strOrNil(a.Namespace),
			"serialized_runtime_env": nil, "required_resources": maps.Clone(pl.Resources), "death_cause": nil,
			"is_detached": a.Detached, "placement_group_id": strOrNil(pl.PlacementGroup), "repr_name": "",
			"num_restarts": int64(run.Restarts), "num_restarts_due_to_lineage_reconstruction": int64(0),
			"num_restarts_due_to_node_preemption": int64(0), "call_site": nil, "label_selector": nil, "fallback_strategy": nil,
		})
	}
	return rows
}

func (p PoolSnapshot) groupRows() []Row {
	rows := make([]Row, 0, len(p.Groups))
	for _, g := range p.Groups {
		bundles := make([]any, 0, len(g.Bundles))
		for i, b := range g.Bundles {
			var node any
			if i < len(g.Nodes) {
				node = nodeHex(g.Nodes[i])
			}
			bundles = append(bundles, map[string]any{
				"bundle_id":      map[string]any{"placement_group_id": g.ID, "bundle_index": i},
				"unit_resources": maps.Clone(b), "node_id": node,
			})
		}
		sched := map[string]string{cluster.PGCreated: "FINISHED", cluster.PGRemoved: "REMOVED", cluster.PGRescheduling: "RESCHEDULING"}[g.State]
		if sched == "" {
			sched = "PENDING"
		}
		rows = append(rows, Row{
			"placement_group_id": g.ID, "name": g.Name, "creator_job_id": g.Job.Hex(), "state": g.State,
			"bundles": bundles, "is_detached": g.Detached, "stats": map[string]any{"scheduling_state": sched},
			"topology_strategy": map[string]any{}, "topology_assignments": map[string]any{},
		})
	}
	return rows
}

// jobRows are the ray:// client sessions, as DRIVER jobs (a client runs
// elsewhere: its pid and address are not known to the head).
func (p PoolSnapshot) jobRows() []Row {
	rows := make([]Row, 0, len(p.Jobs))
	for _, j := range p.Jobs {
		status := "RUNNING"
		if !j.Alive {
			status = "SUCCEEDED"
		}
		rows = append(rows, Row{
			"job_id": j.ID.Hex(), "submission_id": nil, "entrypoint": "", "type": "DRIVER", "status": status,
			"message": "ray:// client session " + j.ClientID, "error_type": nil, "driver_info": nil,
			"start_time": ms(j.StartTime), "end_time": ms(j.EndTime), "metadata": map[string]string{},
			"runtime_env": map[string]any{}, "driver_agent_http_address": nil, "driver_node_id": nil, "driver_exit_code": nil,
		})
	}
	return rows
}

func (p PoolSnapshot) workerRows() []Row {
	rows := make([]Row, 0, len(p.Workers))
	for _, w := range p.Workers {
		rows = append(rows, Row{
			"worker_id": w.ID, "is_alive": true, "worker_type": "WORKER", "exit_type": nil,
			"node_id": p.HeadNode.Hex(), "ip": p.HeadIP, "pid": int64(w.PID),
			"exit_detail": nil, "worker_launch_time_ms": int64(-1), "worker_launched_time_ms": int64(-1),
			"start_time_ms": nil, "end_time_ms": nil, "debugger_port": nil, "num_paused_threads": nil,
		})
	}
	return rows
}

// driverTaskID is the id Ray gives a job's driver task: twenty 0xff bytes
// and the job id; tasks a driver submits name it as their parent.
func driverTaskID(job ids.JobID) string { return strings.Repeat("ff", 20) + job.Hex() }

// creationTaskID is the id Ray gives an actor's creation task: eight 0xff
// bytes and the actor id.
func creationTaskID(a ids.ActorID) string { return strings.Repeat("ff", 8) + a.Hex() }

func (p PoolSnapshot) taskRows() []Row {
	runs := make(map[ids.TaskID]raylet.TaskRun, len(p.Runs))
	for _, r := range p.Runs {
		runs[r.TaskID] = r
	}
	parked := map[ids.TaskID]bool{}
	for _, w := range p.Parked {
		if w.Task != (ids.TaskID{}) {
			parked[w.Task] = true
		}
	}
	rows := make([]Row, 0, len(p.Tasks)+len(p.Actors))
	for _, t := range p.Tasks {
		row := Row{
			"task_id": t.TaskID.Hex(), "attempt_number": int64(0), "name": t.Name, "job_id": t.JobID.Hex(),
			"actor_id": nil, "type": t.Type, "func_or_class_name": t.FuncName, "parent_task_id": driverTaskID(t.JobID),
			"node_id": nil, "worker_id": nil, "worker_pid": nil, "error_type": strOrNil(t.ErrorType),
			"language": "PYTHON", "required_resources": maps.Clone(t.Resources), "runtime_env_info": nil,
			"placement_group_id": strOrNil(t.PlacementGroup), "profiling_data": nil,
			"creation_time_ms": ms(t.Submitted), "start_time_ms": nil, "end_time_ms": ms(t.Ended),
			"task_log_info": nil, "error_message": nil, "is_debugger_paused": nil, "call_site": nil,
			"label_selector": nil, "fallback_strategy": nil,
		}
		if t.ActorID != (ids.ActorID{}) {
			row["actor_id"] = t.ActorID.Hex()
		}
		state := t.State
		if run, ok := runs[t.TaskID]; ok {
			row["attempt_number"] = int64(run.Attempt)
			if run.WorkerID != "" {
				row["node_id"], row["worker_id"], row["worker_pid"] = p.HeadNode.Hex(), run.WorkerID, int64(run.PID)
			}
			if state == "" {
				state = run.State
			}
		}
		if state == "" {
			state = "SUBMITTED_TO_WORKER" // handed to a provider (or just ended)
			if parked[t.TaskID] {
				state = "PENDING_NODE_ASSIGNMENT"
			}
		}
		events := []any{map[string]any{"state": "PENDING_NODE_ASSIGNMENT", "created_ms": t.Submitted.UnixMilli()}}
		if !t.Ended.IsZero() {
			events = append(events, map[string]any{"state": state, "created_ms": t.Ended.UnixMilli()})
		}
		row["state"], row["events"] = state, events
		rows = append(rows, row)
	}
	// One creation task per actor, its state following the actor's.
	local := p.localActors()
	for _, a := range p.Actors {
		state := "PENDING_NODE_ASSIGNMENT"
		switch p.actorState(a, local) {
		case "ALIVE", "DEAD":
			state = "FINISHED"
		}
		name := a.ClassName + ".__init__"
		pl := p.Placements[a.ID]
		row := Row{
			"task_id": creationTaskID(a.ID), "attempt_number": int64(local[a.ID].Restarts), "name": name,
			"job_id": a.JobID.Hex(), "actor_id": a.ID.Hex(), "type": "ACTOR_CREATION_TASK", "func_or_class_name": name,
			"parent_task_id": driverTaskID(a.JobID), "node_id": nodeHex(pl.Node), "worker_id": nil, "worker_pid": nil,
			"error_type": nil, "state": state, "language": "PYTHON", "required_resources": maps.Clone(pl.Resources),
			"placement_group_id": strOrNil(pl.PlacementGroup), "events": []any{},
		}
		if run, ok := local[a.ID]; ok && run.WorkerID != "" {
			row["worker_id"], row["worker_pid"] = run.WorkerID, int64(run.PID)
		}
		rows = append(rows, row)
	}
	return rows
}

func (p PoolSnapshot) objectRows() []Row {
	pids := map[string]int64{}
	for _, w := range p.Workers {
		pids[raylet.WorkerHolder(w.ID)] = int64(w.PID)
	}
	runs := make(map[ids.TaskID]string, len(p.Runs))
	for _, r := range p.Runs {
		runs[r.TaskID] = r.State
	}
	rows := make([]Row, 0, len(p.Objects))
	for _, o := range p.Objects {
		typ, pid := "WORKER", int64(0)
		for _, h := range o.Holders {
			if strings.HasPrefix(h, "session:") {
				typ = "DRIVER"
				break
			}
			if n, ok := pids[h]; ok && pid == 0 {
				pid = n
			}
		}
		if typ == "DRIVER" {
			pid = 0 // a ray:// client's process is not on the head
		}
		ref := "UNKNOWN_STATUS"
		switch {
		case len(o.Holders) > 0:
			ref = "LOCAL_REFERENCE"
		case o.Pins > 0:
			ref = "USED_BY_PENDING_TASK"
		}
		status := "FINISHED"
		if !o.Sealed {
			status = runs[o.ID.Task()]
			if status == "" {
				status = "SUBMITTED_TO_WORKER"
			}
		}
		rows = append(rows, Row{
			"object_id": o.ID.Hex(), "object_size": o.Size, "task_status": status, "attempt_number": int64(0),
			"reference_type": ref, "call_site": "disabled", "type": typ, "pid": pid, "ip": p.HeadIP,
		})
	}
	return rows
}

package stateapi

import (
	"testing"
	"time"

	"github.com/gray-cluster/gray/cluster"
	"github.com/gray-cluster/gray/gcs"
	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/raylet"
	"github.com/gray-cluster/gray/taskhistory"
	"github.com/gray-cluster/gray/taskspec"
)

func TestPoolRows(t *testing.T) {
	job := ids.JobFromInt(1)
	head, prov := ids.NewNodeID(), ids.NewNodeID()
	local, remote, pending, dead := ids.NewActorID(job), ids.NewActorID(job), ids.NewActorID(job), ids.NewActorID(job)
	newTask := func() ids.TaskID { return ids.NewTaskID(ids.NilActorFor(job)) }
	running, parked, onProvider, ended := newTask(), newTask(), newTask(), newTask()
	t0 := time.UnixMilli(1000)
	p := PoolSnapshot{
		HeadNode: head, HeadIP: "10.0.0.1",
		Nodes: []gcs.NodeInfo{{ID: head, IP: "10.0.0.1", IsHead: true, State: gcs.NodeAlive}, {ID: prov, IP: "10.0.0.2", State: gcs.NodeDead, DeathReason: "gone"}},
		Actors: []gcs.ActorInfo{
			{ID: local, JobID: job, ClassName: "A"}, {ID: remote, JobID: job, ClassName: "B", Name: "b"},
			{ID: pending, JobID: job, ClassName: "C"}, {ID: dead, JobID: job, ClassName: "D", Dead: true},
		},
		Placements: map[ids.ActorID]cluster.ActorPlacement{
			local: {Node: head, Placed: true}, remote: {Node: prov, Placed: true}, dead: {Node: head, Placed: true},
		},
		ActorRuns: []raylet.ActorRun{{ActorID: local, State: taskspec.ActorRestarting, PID: 7, WorkerID: "w1", Restarts: 1}},
		Runs:      []raylet.TaskRun{{TaskID: running, State: "RUNNING", WorkerID: "w2", PID: 8, Attempt: 1}},
		Parked:    []cluster.Parked{{Task: parked}},
		Tasks: []taskhistory.Record{
			{TaskID: running, JobID: job, Type: taskhistory.NormalTask, Name: "f", FuncName: "f", Submitted: t0},
			{TaskID: parked, JobID: job, Type: taskhistory.NormalTask, Name: "f", FuncName: "f", Submitted: t0},
			{TaskID: onProvider, JobID: job, Type: taskhistory.NormalTask, Name: "f", FuncName: "f", Submitted: t0},
			{TaskID: ended, JobID: job, Type: taskhistory.NormalTask, Name: "f", FuncName: "f", Submitted: t0,
				State: taskhistory.Failed, ErrorType: "TASK_CANCELLED", Ended: t0.Add(time.Second)},
		},
		Dropped: 3,
	}
	nodes := map[string]Row{}
	for _, r := range p.Rows(Nodes).Rows {
		nodes[r["node_id"].(string)] = r
	}
	if nodes[prov.Hex()]["state"] != "DEAD" || nodes[prov.Hex()]["state_message"] != "gone" || nodes[head.Hex()]["is_head_node"] != true {
		t.Fatalf("nodes: %v", nodes)
	}
	actors := map[string]Row{}
	for _, r := range p.Rows(Actors).Rows {
		actors[r["actor_id"].(string)] = r
	}
	for id, want := range map[ids.ActorID]string{local: "RESTARTING", remote: "ALIVE", pending: "PENDING_CREATION", dead: "DEAD"} {
		if actors[id.Hex()]["state"] != want {
			t.Errorf("actor %s state %v, want %s", actors[id.Hex()]["class_name"], actors[id.Hex()]["state"], want)
		}
	}
	if actors[local.Hex()]["pid"] != int64(7) || actors[remote.Hex()]["pid"] != nil || actors[remote.Hex()]["node_id"] != prov.Hex() || actors[pending.Hex()]["node_id"] != nil {
		t.Fatalf("actor placement: %v", actors)
	}
	snap := p.Rows(Tasks)
	if snap.Dropped != 3 || len(snap.Rows) != 8 { // 4 tasks + 4 creation tasks
		t.Fatalf("tasks: %d rows, dropped %d", len(snap.Rows), snap.Dropped)
	}
	tasks := map[string]Row{}
	for _, r := range snap.Rows {
		tasks[r["task_id"].(string)] = r
	}
	for id, want := range map[ids.TaskID]string{running: "RUNNING", parked: "PENDING_NODE_ASSIGNMENT", onProvider: "SUBMITTED_TO_WORKER", ended: "FAILED"} {
		if tasks[id.Hex()]["state"] != want {
			t.Errorf("task state %v, want %s", tasks[id.Hex()]["state"], want)
		}
	}
	if r := tasks[running.Hex()]; r["worker_pid"] != int64(8) || r["node_id"] != head.Hex() || r["attempt_number"] != int64(1) {
		t.Fatalf("running: %v", r)
	}
	if r := tasks[ended.Hex()]; r["error_type"] != "TASK_CANCELLED" || r["end_time_ms"] != int64(2000) || r["creation_time_ms"] != int64(1000) {
		t.Fatalf("ended: %v", r)
	}
	if r := tasks["ffffffffffffffff"+remote.Hex()]; r["type"] != "ACTOR_CREATION_TASK" || r["state"] != "FINISHED" || r["name"] != "B.__init__" {
		t.Fatalf("creation task: %v", r)
	}
	if r := tasks["ffffffffffffffff"+pending.Hex()]; r["state"] != "PENDING_NODE_ASSIGNMENT" {
		t.Fatalf("pending creation: %v", r)
	}
	if r := tasks[running.Hex()]; r["parent_task_id"] != "ffffffffffffffffffffffffffffffffffffffff01000000" {
		t.Fatalf("parent: %v", r["parent_task_id"])
	}
}

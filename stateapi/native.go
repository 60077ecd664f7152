package stateapi

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"maps"
	"strconv"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/gray-cluster/gray/native/plasma"
	"github.com/gray-cluster/gray/proto/ray/commonpb"
	"github.com/gray-cluster/gray/proto/ray/raypb"
)

// NativeTables is what the native GCS and plasma store hand out (read-only
// snapshots; gcsserver.Server and plasma.Store implement them).
type NativeTables interface {
	Nodes() []*raypb.GcsNodeInfo
	Actors() []*raypb.ActorTableData
	Jobs() []*raypb.JobTableData
	PlacementGroups() []*raypb.PlacementGroupTableData
	Workers() []*raypb.WorkerTableData
	TaskEvents() ([]*raypb.TaskEvents, int)
}

// NativeObjects lists the native plasma store's objects.
type NativeObjects interface {
	Objects() []plasma.ObjectInfo
}

// NativeSource is a Source over the native world's tables; a nil field
// (native mode off) contributes no rows.
type NativeSource struct {
	Tables  NativeTables
	Objects NativeObjects
}

// Snapshot builds rows from the native tables.
func (n NativeSource) Snapshot(_ context.Context, r Resource) (Snapshot, error) {
	if n.Tables == nil {
		return Snapshot{}, nil
	}
	t := n.Tables
	var out Snapshot
	switch r {
	case Nodes:
		for _, m := range t.Nodes() {
			out.Rows = append(out.Rows, NativeNodeRow(m))
		}
	case Actors:
		for _, m := range t.Actors() {
			out.Rows = append(out.Rows, NativeActorRow(m))
		}
	case Jobs:
		for _, m := range t.Jobs() {
			if m.GetConfig().GetMetadata()[jobSubmissionKey] != "" {
				// A Jobs API entrypoint's driver: the submission's own
				// row (from the Jobs API) stands for it, as in Ray.
				continue
			}
			if strings.HasPrefix(m.GetConfig().GetRayNamespace(), internalNamespacePrefix) {
				continue
			}
			out.Rows = append(out.Rows, NativeJobRow(m))
		}
	case PlacementGroups:
		for _, m := range t.PlacementGroups() {
			out.Rows = append(out.Rows, NativePlacementGroupRow(m))
		}
	case Workers:
		for _, m := range t.Workers() {
			out.Rows = append(out.Rows, NativeWorkerRow(m))
		}
	case Tasks:
		events, dropped := t.TaskEvents()
		for _, e := range events {
			out.Rows = append(out.Rows, NativeTaskRow(e))
		}
		out.Dropped = dropped
	case Objects:
		if n.Objects != nil {
			out.Rows = nativeObjectRows(n.Objects.Objects(), t.Workers())
		}
	}
	return out, nil
}

func hx(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return hex.EncodeToString(b)
}

func hxs(b []byte) string { return hex.EncodeToString(b) }

func strOrNil(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func msOrNil(ms uint64) any {
	if ms == 0 {
		return nil
	}
	return int64(ms)
}

// asMap renders a message the way the stock server's MessageToDict does
// (proto field names, defaults included) for detail columns that are
// dicts; nil for a nil message.
func asMap(m proto.Message) any {
	if m == nil || !m.ProtoReflect().IsValid() {
		return nil
	}
	b, err := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}.Marshal(m)
	if err != nil {
		return nil
	}
	var out map[string]any
	if json.Unmarshal(b, &out) != nil {
		return nil
	}
	return out
}

// NativeNodeRow is a NodeState row of a native GCS node.
func NativeNodeRow(m *raypb.GcsNodeInfo) Row {
	var msg any
	if di := m.GetDeathInfo(); di != nil && m.GetState() == raypb.GcsNodeInfo_DEAD {
		s := "Node is dead: " + di.GetReason().String()
		if di.GetReasonMessage() != "" {
			s += ": " + di.GetReasonMessage()
		}
		msg = s
	}
	labels := maps.Clone(m.GetLabels())
	if labels == nil {
		labels = map[string]string{}
	}
	res := maps.Clone(m.GetResourcesTotal())
	if res == nil {
		res = map[string]float64{}
	}
	return Row{
		"node_id": hxs(m.GetNodeId()), "node_ip": m.GetNodeManagerAddress(), "is_head_node": m.GetIsHeadNode(),
		"state": m.GetState().String(), "state_message": msg, "node_name": m.GetNodeName(),
		"resources_total": res, "labels": labels,
		"start_time_ms": int64(m.GetStartTimeMs()), "end_time_ms": int64(m.GetEndTimeMs()),
	}
}

// NativeActorRow is an ActorState row of a native actor.
func NativeActorRow(m *raypb.ActorTableData) Row {
	node := hx(m.GetNodeId())
	if node == nil {
		node = hx(m.GetAddress().GetNodeId())
	}
	var pid any
	if m.GetPid() != 0 {
		pid = int64(m.GetPid())
	}
	var callSite any
	if m.CallSite != nil {
		callSite = m.GetCallSite()
	}
	return Row{
		"actor_id": hxs(m.GetActorId()), "class_name": m.GetClassName(), "state": m.GetState().String(),
		"job_id": hxs(m.GetJobId()), "name": strOrNil(m.GetName()), "node_id": node, "pid": pid,
		"ray_namespace":          strOrNil(m.GetRayNamespace()),
		"serialized_runtime_env": m.GetSerializedRuntimeEnv(), "required_resources": maps.Clone(m.GetRequiredResources()),
		"death_cause": asMap(m.GetDeathCause()), "is_detached": m.GetIsDetached(),
		"placement_group_id": hx(m.GetPlacementGroupId()), "repr_name": m.GetReprName(),
		"num_restarts": m.GetNumRestarts(), "num_restarts_due_to_lineage_reconstruction": int64(m.GetNumRestartsDueToLineageReconstruction()),
		"num_restarts_due_to_node_preemption": int64(m.GetNumRestartsDueToNodePreemption()),
		"call_site":                           callSite, "label_selector": maps.Clone(m.GetLabelSelector()),
		"fallback_strategy": asMap(m.GetFallbackStrategy()),
	}
}

// jobSubmissionKey is the job config metadata key naming a Jobs API
// submission (JOB_ID_METADATA_KEY).
const jobSubmissionKey = "job_submission_id"

// internalNamespacePrefix marks Ray's own jobs, which the job list skips.
const internalNamespacePrefix = "_ray_internal_"

// NativeJobRow is a JobState (JobDetails) row of a native driver job.
func NativeJobRow(m *raypb.JobTableData) Row {
	status := "RUNNING"
	if m.GetIsDead() {
		status = "SUCCEEDED"
	}
	meta := maps.Clone(m.GetConfig().GetMetadata())
	if meta == nil {
		meta = map[string]string{}
	}
	ip := m.GetDriverAddress().GetIpAddress()
	if ip == "" {
		ip = m.GetDriverIpAddress()
	}
	var env any = map[string]any{}
	if s := m.GetConfig().GetRuntimeEnvInfo().GetSerializedRuntimeEnv(); s != "" {
		var v map[string]any
		if json.Unmarshal([]byte(s), &v) == nil {
			env = v
		}
	}
	return Row{
		"job_id": hxs(m.GetJobId()), "submission_id": nil, "entrypoint": m.GetEntrypoint(), "type": "DRIVER",
		"status": status, "message": nil, "error_type": nil,
		"driver_info": map[string]any{"id": hxs(m.GetJobId()), "node_ip_address": ip, "pid": strconv.FormatInt(m.GetDriverPid(), 10)},
		"start_time":  msOrNil(m.GetStartTime()), "end_time": msOrNil(m.GetEndTime()), "metadata": meta, "runtime_env": env,
		"driver_agent_http_address": nil, "driver_node_id": hx(m.GetDriverAddress().GetNodeId()), "driver_exit_code": nil,
	}
}

// NativePlacementGroupRow is a PlacementGroupState row.
func NativePlacementGroupRow(m *raypb.PlacementGroupTableData) Row {
	bundles := make([]any, 0, len(m.GetBundles()))
	for _, bd := range m.GetBundles() {
		bundles = append(bundles, map[string]any{
			"bundle_id":      map[string]any{"placement_group_id": hxs(bd.GetBundleId().GetPlacementGroupId()), "bundle_index": bd.GetBundleId().GetBundleIndex()},
			"unit_resources": maps.Clone(bd.GetUnitResources()), "node_id": hx(bd.GetNodeId()),
			"label_selector": maps.Clone(bd.GetLabelSelector()),
		})
	}
	topo := map[string]any{}
	for k, v := range m.GetTopologyStrategy() {
		topo[k] = v.String()
	}
	assign := map[string]any{}
	for k, v := range m.GetTopologyAssignments() {
		assign[k] = v
	}
	stats := asMap(m.GetStats())
	if stats == nil {
		stats = map[string]any{}
	}
	return Row{
		"placement_group_id": hxs(m.GetPlacementGroupId()), "name": m.GetName(), "creator_job_id": hxs(m.GetCreatorJobId()),
		"state": m.GetState().String(), "bundles": bundles, "is_detached": m.GetIsDetached(), "stats": stats,
		"topology_strategy": topo, "topology_assignments": assign,
	}
}

// NativeWorkerRow is a WorkerState row.
func NativeWorkerRow(m *raypb.WorkerTableData) Row {
	var exit, detail, dbg, paused any
	if m.ExitType != nil {
		exit = m.GetExitType().String()
	}
	if m.ExitDetail != nil {
		detail = m.GetExitDetail()
	}
	if m.DebuggerPort != nil {
		dbg = int64(m.GetDebuggerPort())
	}
	if m.NumPausedThreads != nil {
		paused = int64(m.GetNumPausedThreads())
	}
	a := m.GetWorkerAddress()
	return Row{
		"worker_id": hxs(a.GetWorkerId()), "is_alive": m.GetIsAlive(), "worker_type": m.GetWorkerType().String(),
		"exit_type": exit, "node_id": hxs(a.GetNodeId()), "ip": a.GetIpAddress(), "pid": int64(m.GetPid()),
		"exit_detail": detail, "worker_launch_time_ms": int64(m.GetWorkerLaunchTimeMs()),
		"worker_launched_time_ms": int64(m.GetWorkerLaunchedTimeMs()), "start_time_ms": int64(m.GetStartTimeMs()),
		"end_time_ms": int64(m.GetEndTimeMs()), "debugger_port": dbg, "num_paused_threads": paused,
	}
}

// taskStateRank orders task statuses for "the latest state": the stock
// server takes the highest status that has a timestamp; an ended task
// (FINISHED, FAILED) ranks above all.
func taskStateRank(st int32) int32 {
	switch commonpb.TaskStatus(st) {
	case commonpb.TaskStatus_FINISHED, commonpb.TaskStatus_FAILED:
		return 100 + st
	}
	return st
}

// NativeTaskRow is a TaskState row of one task attempt's events.
func NativeTaskRow(e *raypb.TaskEvents) Row {
	info, up := e.GetTaskInfo(), e.GetStateUpdates()
	row := Row{
		"task_id": hxs(e.GetTaskId()), "attempt_number": int64(e.GetAttemptNumber()), "job_id": hxs(e.GetJobId()),
		"name": info.GetName(), "actor_id": hx(info.GetActorId()), "type": info.GetType().String(),
		"func_or_class_name": info.GetFuncOrClassName(), "parent_task_id": hxs(info.GetParentTaskId()),
		"language": info.GetLanguage().String(), "required_resources": maps.Clone(info.GetRequiredResources()),
		"runtime_env_info": asMap(info.GetRuntimeEnvInfo()), "placement_group_id": hx(info.GetPlacementGroupId()),
		"node_id": hx(up.GetNodeId()), "worker_id": hx(up.GetWorkerId()), "worker_pid": nil, "error_type": nil,
		"error_message": nil, "task_log_info": asMap(up.GetTaskLogInfo()), "is_debugger_paused": nil,
		"call_site": nil, "label_selector": maps.Clone(info.GetLabelSelector()), "fallback_strategy": asMap(info.GetFallbackStrategy()),
		"profiling_data":   asMap(e.GetProfileEvents()),
		"creation_time_ms": nil, "start_time_ms": nil, "end_time_ms": nil,
	}
	if row["job_id"] == "" {
		row["job_id"] = hxs(info.GetJobId())
	}
	if up.WorkerPid != nil {
		row["worker_pid"] = int64(up.GetWorkerPid())
	}
	if up.IsDebuggerPaused != nil {
		row["is_debugger_paused"] = up.GetIsDebuggerPaused()
	}
	if info.CallSite != nil {
		row["call_site"] = info.GetCallSite()
	}
	if r := up.GetActorReprName(); r != "" && info.GetType() == commonpb.TaskType_ACTOR_TASK && info.GetName() == info.GetFuncOrClassName() {
		method := info.GetName()
		for i := len(method) - 1; i >= 0; i-- {
			if method[i] == '.' {
				method = method[i+1:]
				break
			}
		}
		row["name"] = r + "." + method
	}
	events := []any{}
	state, best := "NIL", int32(-1)
	// In status order, as the stock server lists them.
	for st := int32(0); st <= int32(commonpb.TaskStatus_GETTING_AND_PINNING_ARGS); st++ {
		ts, ok := up.GetStateTsNs()[st]
		if !ok {
			continue
		}
		ms := ts / 1e6
		name := commonpb.TaskStatus(st).String()
		events = append(events, map[string]any{"state": name, "created_ms": ms})
		switch commonpb.TaskStatus(st) {
		case commonpb.TaskStatus_PENDING_ARGS_AVAIL:
			row["creation_time_ms"] = ms
		case commonpb.TaskStatus_RUNNING:
			row["start_time_ms"] = ms
		case commonpb.TaskStatus_FINISHED, commonpb.TaskStatus_FAILED:
			row["end_time_ms"] = ms
		}
		if r := taskStateRank(st); r > best {
			state, best = name, r
		}
	}
	row["events"], row["state"] = events, state
	if state == "FAILED" {
		if ei := up.GetErrorInfo(); ei != nil {
			row["error_type"], row["error_message"] = ei.GetErrorType().String(), ei.GetErrorMessage()
		}
	}
	return row
}

// nativeObjectRows lists the plasma store's objects, owners resolved
// through the worker table.
func nativeObjectRows(objs []plasma.ObjectInfo, workers []*raypb.WorkerTableData) []Row {
	byID := map[string]*raypb.WorkerTableData{}
	for _, w := range workers {
		byID[string(w.GetWorkerAddress().GetWorkerId())] = w
	}
	rows := make([]Row, 0, len(objs))
	for _, o := range objs {
		typ, pid := "WORKER", int64(0)
		if w := byID[string(o.Owner.WorkerID)]; w != nil {
			typ, pid = w.GetWorkerType().String(), int64(w.GetPid())
		}
		ref := "PINNED_IN_MEMORY"
		switch {
		case o.Refs > 0:
			ref = "LOCAL_REFERENCE"
		case !o.Pinned:
			ref = "UNKNOWN_STATUS"
		}
		status := "FINISHED"
		if !o.Sealed {
			status = "NIL"
		}
		rows = append(rows, Row{
			"object_id": hxs(o.ID[:]), "object_size": o.Size, "task_status": status, "attempt_number": int64(0),
			"reference_type": ref, "call_site": "disabled", "type": typ, "pid": pid, "ip": o.Owner.IP,
		})
	}
	return rows
}

// Package stateapi serves Ray's State API (`/api/v0/...`, what `ray list`,
// `ray get`, `ray summary` and ray.util.state speak) over one view of the
// pool: the ray:// world (the head's cluster, front end, raylet and object
// store) and the native world (the native GCS tables).
//
// The core is pure: rows are plain maps (Row), snapshots of the tables taken
// by the data sources, and List / Summarize filter, sort, limit and
// aggregate them as the 2.60.0 server does (string filters compare
// case-insensitively, a filter value is converted to its column's type,
// only a schema's filterable columns may be filtered, rows are sorted by id,
// limit is applied last). The HTTP adapter (Handler) parses the query the
// stock client builds and writes the exact reply envelope it checks.
package stateapi

import (
	"errors"
	"slices"
)

// Sentinel errors. ErrBadQuery answers 400, ErrUnknownResource 404.
var (
	ErrBadQuery        = errors.New("bad query")
	ErrUnknownResource = errors.New("unknown resource")
)

// Resource names a State API table, as it appears in the URL.
type Resource string

// The resources of /api/v0/{resource}.
const (
	Nodes           Resource = "nodes"
	Actors          Resource = "actors"
	Tasks           Resource = "tasks"
	Jobs            Resource = "jobs"
	PlacementGroups Resource = "placement_groups"
	Workers         Resource = "workers"
	Objects         Resource = "objects"
	RuntimeEnvs     Resource = "runtime_envs"
	ClusterEvents   Resource = "cluster_events"
)

// Row is one entry of a table: column name to a JSON-ready value (string,
// bool, int64, float64, nil, maps and slices).
type Row map[string]any

// Kind is a column's type, which a filter value is converted to.
type Kind int

// Column kinds.
const (
	KindStr Kind = iota
	KindInt
	KindFloat
	KindBool
	KindAny // dicts and lists: never converted
)

// Column is one column of a schema.
type Column struct {
	Name       string
	Kind       Kind
	Filterable bool
	// Detail columns appear only with detail=True (or in `ray get`).
	Detail bool
}

// Schema is the column set of one resource, as ray/util/state/common.py
// declares it: the client validates every row against it.
type Schema struct {
	Resource Resource
	// ID is the column rows are sorted by ("" keeps the source's order).
	ID      string
	Columns []Column
}

// Columns lists the column names output at a detail level.
func (s Schema) names(detail bool) []string {
	out := make([]string, 0, len(s.Columns))
	for _, c := range s.Columns {
		if detail || !c.Detail {
			out = append(out, c.Name)
		}
	}
	return out
}

// column finds a column by name.
func (s Schema) column(name string) (Column, bool) {
	i := slices.IndexFunc(s.Columns, func(c Column) bool { return c.Name == name })
	if i < 0 {
		return Column{}, false
	}
	return s.Columns[i], true
}

// filterable lists the filterable column names, sorted.
func (s Schema) filterable() []string {
	var out []string
	for _, c := range s.Columns {
		if c.Filterable {
			out = append(out, c.Name)
		}
	}
	slices.Sort(out)
	return out
}

// col builders: b = base (always output), d = detail only; f = filterable.
func bf(name string, k Kind) Column { return Column{Name: name, Kind: k, Filterable: true} }
func b(name string, k Kind) Column  { return Column{Name: name, Kind: k} }
func df(name string, k Kind) Column {
	return Column{Name: name, Kind: k, Filterable: true, Detail: true}
}
func d(name string, k Kind) Column { return Column{Name: name, Kind: k, Detail: true} }

// schemas are the 2.60.0 client's schemas (ActorState, TaskState, ...).
var schemas = map[Resource]Schema{
	Actors: {Resource: Actors, ID: "actor_id", Columns: []Column{
		bf("actor_id", KindStr), bf("class_name", KindStr), bf("state", KindStr), bf("job_id", KindStr),
		bf("name", KindStr), bf("node_id", KindStr), bf("pid", KindInt), bf("ray_namespace", KindStr),
		d("serialized_runtime_env", KindStr), d("required_resources", KindAny), d("death_cause", KindAny),
		d("is_detached", KindBool), df("placement_group_id", KindStr), df("repr_name", KindStr),
		d("num_restarts", KindInt), d("num_restarts_due_to_lineage_reconstruction", KindInt),
		d("num_restarts_due_to_node_preemption", KindInt), d("call_site", KindStr),
		d("label_selector", KindAny), d("fallback_strategy", KindAny),
	}},
	PlacementGroups: {Resource: PlacementGroups, ID: "placement_group_id", Columns: []Column{
		bf("placement_group_id", KindStr), bf("name", KindStr), bf("creator_job_id", KindStr), bf("state", KindStr),
		d("bundles", KindAny), df("is_detached", KindBool), d("stats", KindAny),
		d("topology_strategy", KindAny), d("topology_assignments", KindAny),
	}},
	Nodes: {Resource: Nodes, ID: "node_id", Columns: []Column{
		bf("node_id", KindStr), bf("node_ip", KindStr), bf("is_head_node", KindBool), bf("state", KindStr),
		b("state_message", KindStr), bf("node_name", KindStr), b("resources_total", KindAny), b("labels", KindAny),
		d("start_time_ms", KindInt), d("end_time_ms", KindInt),
	}},
	// JobState is JobDetails: its non-detail output is a fixed column list,
	// and only four columns filter.
	Jobs: {Resource: Jobs, ID: "job_id", Columns: []Column{
		bf("job_id", KindStr), bf("submission_id", KindStr), b("entrypoint", KindStr), bf("type", KindStr),
		bf("status", KindStr), b("message", KindStr), b("error_type", KindStr), b("driver_info", KindAny),
		d("start_time", KindInt), d("end_time", KindInt), d("metadata", KindAny), d("runtime_env", KindAny),
		d("driver_agent_http_address", KindStr), d("driver_node_id", KindStr), d("driver_exit_code", KindInt),
	}},
	Workers: {Resource: Workers, ID: "worker_id", Columns: []Column{
		bf("worker_id", KindStr), bf("is_alive", KindBool), bf("worker_type", KindStr), bf("exit_type", KindStr),
		bf("node_id", KindStr), bf("ip", KindStr), bf("pid", KindInt),
		d("exit_detail", KindStr), d("worker_launch_time_ms", KindInt), d("worker_launched_time_ms", KindInt),
		d("start_time_ms", KindInt), d("end_time_ms", KindInt), df("debugger_port", KindInt),
		df("num_paused_threads", KindInt),
	}},
	Tasks: {Resource: Tasks, ID: "task_id", Columns: []Column{
		bf("task_id", KindStr), bf("attempt_number", KindInt), bf("name", KindStr), bf("state", KindStr),
		bf("job_id", KindStr), bf("actor_id", KindStr), bf("type", KindStr), bf("func_or_class_name", KindStr),
		bf("parent_task_id", KindStr), bf("node_id", KindStr), bf("worker_id", KindStr), bf("worker_pid", KindInt),
		bf("error_type", KindStr),
		df("language", KindStr), d("required_resources", KindAny), d("runtime_env_info", KindAny),
		df("placement_group_id", KindStr), d("events", KindAny), d("profiling_data", KindAny),
		d("creation_time_ms", KindInt), d("start_time_ms", KindInt), d("end_time_ms", KindInt),
		d("task_log_info", KindAny), d("error_message", KindStr), df("is_debugger_paused", KindBool),
		d("call_site", KindStr), d("label_selector", KindAny), d("fallback_strategy", KindAny),
	}},
	Objects: {Resource: Objects, ID: "object_id", Columns: []Column{
		bf("object_id", KindStr), bf("object_size", KindInt), bf("task_status", KindStr), bf("attempt_number", KindInt),
		bf("reference_type", KindStr), bf("call_site", KindStr), bf("type", KindStr), bf("pid", KindInt), bf("ip", KindStr),
	}},
	RuntimeEnvs: {Resource: RuntimeEnvs, Columns: []Column{
		bf("runtime_env", KindAny), bf("success", KindBool), b("creation_time_ms", KindFloat), bf("node_id", KindStr),
		d("ref_cnt", KindInt), df("error", KindStr),
	}},
	ClusterEvents: {Resource: ClusterEvents, ID: "event_id", Columns: []Column{
		bf("severity", KindStr), b("time", KindStr), bf("source_type", KindStr), b("message", KindStr),
		bf("event_id", KindStr), d("custom_fields", KindAny),
	}},
}

// SchemaOf returns a resource's schema.
func SchemaOf(r Resource) (Schema, bool) {
	s, ok := schemas[r]
	return s, ok
}

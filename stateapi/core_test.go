package stateapi

import (
	"errors"
	"net/url"
	"reflect"
	"testing"
)

func idsOf(rows []Row, col string) []string {
	out := []string{}
	for _, r := range rows {
		out = append(out, r[col].(string))
	}
	return out
}

var actorRows = []Row{
	{"actor_id": "cc", "class_name": "Counter", "state": "ALIVE", "job_id": "01000000", "name": "c", "pid": int64(42), "node_id": "n1", "ray_namespace": "ns", "is_detached": true},
	{"actor_id": "aa", "class_name": "Counter", "state": "DEAD", "job_id": "01000000", "name": nil, "pid": int64(7), "node_id": "n1", "ray_namespace": "ns", "is_detached": false},
	{"actor_id": "bb", "class_name": "Queue", "state": "PENDING_CREATION", "job_id": "02000000", "name": "q", "pid": nil, "node_id": nil, "ray_namespace": "other"},
}

func TestListFilters(t *testing.T) {
	s, _ := SchemaOf(Actors)
	cases := []struct {
		name    string
		filters []Filter
		limit   int
		want    []string
		wantErr error
	}{
		{"sorted by id", nil, 100, []string{"aa", "bb", "cc"}, nil},
		{"string = is case-insensitive", []Filter{{Key: "state", Equal: true, Value: "alive"}}, 100, []string{"cc"}, nil},
		{"string !=", []Filter{{Key: "state", Value: "ALIVE"}}, 100, []string{"aa", "bb"}, nil},
		{"key is lower-cased", []Filter{{Key: "CLASS_NAME", Equal: true, Value: "counter"}}, 100, []string{"aa", "cc"}, nil},
		{"int column converts", []Filter{{Key: "pid", Equal: true, Value: "42"}}, 100, []string{"cc"}, nil},
		{"int != keeps nil", []Filter{{Key: "pid", Value: "42"}}, 100, []string{"aa", "bb"}, nil},
		{"nil never equals", []Filter{{Key: "name", Equal: true, Value: "None"}}, 100, []string{}, nil},
		{"filters AND", []Filter{{Key: "class_name", Equal: true, Value: "Counter"}, {Key: "job_id", Value: "01000000"}}, 100, []string{}, nil},
		{"limit after sort", nil, 2, []string{"aa", "bb"}, nil},
		{"limit 0", nil, 0, []string{}, nil},
		{"not filterable", []Filter{{Key: "is_detached", Equal: true, Value: "true"}}, 100, nil, ErrBadQuery},
		{"unknown column", []Filter{{Key: "bogus", Equal: true, Value: "x"}}, 100, nil, ErrBadQuery},
		{"bad int", []Filter{{Key: "pid", Equal: true, Value: "abc"}}, 100, nil, ErrBadQuery},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := List(s, Snapshot{Rows: actorRows}, Query{Filters: c.filters, Limit: c.limit})
			if c.wantErr != nil {
				if !errors.Is(err, c.wantErr) {
					t.Fatalf("err = %v, want %v", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if g := idsOf(got.Result, "actor_id"); !reflect.DeepEqual(g, c.want) {
				t.Fatalf("ids = %v, want %v", g, c.want)
			}
			if got.Total != 3 || got.NumAfterTruncation != 3 {
				t.Fatalf("counters = %+v", got)
			}
		})
	}
}

func TestListCountsAndColumns(t *testing.T) {
	s, _ := SchemaOf(Actors)
	got, err := List(s, Snapshot{Rows: actorRows, Dropped: 2, Warnings: []string{"w"}}, Query{Limit: 1, Filters: []Filter{{Key: "class_name", Equal: true, Value: "Counter"}}})
	if err != nil {
		t.Fatal(err)
	}
	if got.Total != 5 || got.NumAfterTruncation != 3 || got.NumFiltered != 2 || len(got.Result) != 1 || !reflect.DeepEqual(got.Warnings, []string{"w"}) {
		t.Fatalf("response = %+v", got)
	}
	row := got.Result[0]
	if len(row) != len(s.names(false)) {
		t.Fatalf("base row has %d columns, want %d: %v", len(row), len(s.names(false)), row)
	}
	if _, ok := row["is_detached"]; ok {
		t.Fatal("detail column in base output")
	}
	got, _ = List(s, Snapshot{Rows: actorRows}, Query{Limit: 10, Detail: true})
	if len(got.Result[0]) != len(s.Columns) {
		t.Fatalf("detail row has %d columns, want %d", len(got.Result[0]), len(s.Columns))
	}
	if v, ok := got.Result[0]["num_restarts"]; !ok || v != nil {
		t.Fatalf("missing detail column must be present as null, got %v %v", v, ok)
	}
}

func TestBoolFilterAndDriverTasks(t *testing.T) {
	nodes, _ := SchemaOf(Nodes)
	rows := []Row{{"node_id": "b", "is_head_node": true}, {"node_id": "a", "is_head_node": false}}
	for _, c := range []struct {
		v    string
		want []string
	}{{"True", []string{"b"}}, {"1", []string{"b"}}, {"false", []string{"a"}}} {
		got, err := List(nodes, Snapshot{Rows: rows}, Query{Limit: 10, Filters: []Filter{{Key: "is_head_node", Equal: true, Value: c.v}}})
		if err != nil || !reflect.DeepEqual(idsOf(got.Result, "node_id"), c.want) {
			t.Fatalf("is_head_node=%s: %v %v", c.v, got.Result, err)
		}
	}
	if _, err := List(nodes, Snapshot{Rows: rows}, Query{Limit: 10, Filters: []Filter{{Key: "is_head_node", Equal: true, Value: "yes"}}}); !errors.Is(err, ErrBadQuery) {
		t.Fatalf("bad bool: %v", err)
	}
	tasks, _ := SchemaOf(Tasks)
	trows := []Row{{"task_id": "1", "type": "DRIVER_TASK"}, {"task_id": "2", "type": "NORMAL_TASK"}}
	got, _ := List(tasks, Snapshot{Rows: trows}, Query{Limit: 10, ExcludeDriver: true})
	if !reflect.DeepEqual(idsOf(got.Result, "task_id"), []string{"2"}) {
		t.Fatalf("exclude_driver: %v", got.Result)
	}
	got, _ = List(tasks, Snapshot{Rows: trows}, Query{Limit: 10})
	if len(got.Result) != 2 {
		t.Fatalf("with drivers: %v", got.Result)
	}
}

func TestParseQuery(t *testing.T) {
	v, _ := url.ParseQuery("limit=5&timeout=24&detail=True&filter_keys=state&filter_keys=is_head_node&filter_predicates==&filter_predicates=!=&filter_values=ALIVE&filter_values=True&exclude_driver=False&server_timeout_multiplier=0.8")
	q, err := ParseQuery(v)
	if err != nil {
		t.Fatal(err)
	}
	want := Query{Limit: 5, Detail: true, Filters: []Filter{{Key: "state", Equal: true, Value: "ALIVE"}, {Key: "is_head_node", Value: "True"}}}
	if !reflect.DeepEqual(q, want) {
		t.Fatalf("q = %+v, want %+v", q, want)
	}
	q, _ = ParseQuery(url.Values{})
	if q.Limit != DefaultLimit || q.Detail || !q.ExcludeDriver {
		t.Fatalf("defaults: %+v", q)
	}
	for _, bad := range []string{"limit=10001", "limit=x", "limit=-1", "detail=maybe", "filter_keys=a&filter_predicates=%3E&filter_values=1", "filter_keys=a&filter_values=1"} {
		v, _ := url.ParseQuery(bad)
		if _, err := ParseQuery(v); !errors.Is(err, ErrBadQuery) {
			t.Errorf("%s: err = %v", bad, err)
		}
	}
	v, _ = url.ParseQuery("limit=10000")
	if q, err := ParseQuery(v); err != nil || q.Limit != MaxLimit {
		t.Fatalf("max limit: %v %v", q, err)
	}
}

func TestSummaries(t *testing.T) {
	tasks, _ := SchemaOf(Tasks)
	trows := []Row{
		{"task_id": "1", "name": "f", "func_or_class_name": "f", "type": "NORMAL_TASK", "state": "FINISHED"},
		{"task_id": "2", "name": "f", "func_or_class_name": "f", "type": "NORMAL_TASK", "state": "FINISHED"},
		{"task_id": "3", "name": "f", "func_or_class_name": "f", "type": "NORMAL_TASK", "state": "FAILED"},
		{"task_id": "4", "name": "C.__init__", "func_or_class_name": "C.__init__", "type": "ACTOR_CREATION_TASK", "state": "FINISHED"},
		{"task_id": "5", "name": "C.m", "func_or_class_name": "C.m", "type": "ACTOR_TASK", "state": "RUNNING"},
		{"task_id": "6", "name": "d", "func_or_class_name": "d", "type": "DRIVER_TASK", "state": "RUNNING"},
	}
	got, err := Summarize(tasks, Snapshot{Rows: trows}, Query{})
	if err != nil {
		t.Fatal(err)
	}
	c := got.Result["node_id_to_summary"].(map[string]any)["cluster"].(map[string]any)
	if c["total_tasks"] != 3 || c["total_actor_tasks"] != 1 || c["total_actor_scheduled"] != 1 || c["summary_by"] != "func_name" {
		t.Fatalf("task totals: %v", c)
	}
	f := c["summary"].(map[string]any)["f"].(map[string]any)
	if !reflect.DeepEqual(f["state_counts"], map[string]int{"FINISHED": 2, "FAILED": 1}) || f["type"] != "NORMAL_TASK" {
		t.Fatalf("f: %v", f)
	}
	if _, ok := c["summary"].(map[string]any)["d"]; ok {
		t.Fatal("driver task summarized")
	}
	if _, err := Summarize(tasks, Snapshot{Rows: trows}, Query{SummaryBy: "lineage"}); !errors.Is(err, ErrBadQuery) {
		t.Fatalf("lineage: %v", err)
	}

	actors, _ := SchemaOf(Actors)
	got, _ = Summarize(actors, Snapshot{Rows: actorRows}, Query{Filters: []Filter{{Key: "ray_namespace", Equal: true, Value: "ns"}}})
	c = got.Result["node_id_to_summary"].(map[string]any)["cluster"].(map[string]any)
	if c["total_actors"] != 2 || !reflect.DeepEqual(c["summary"].(map[string]any)["Counter"].(map[string]any)["state_counts"], map[string]int{"ALIVE": 1, "DEAD": 1}) || got.NumFiltered != 2 {
		t.Fatalf("actors: %v", c)
	}

	objects, _ := SchemaOf(Objects)
	orows := []Row{
		{"object_id": "a", "object_size": int64(1 << 20), "task_status": "FINISHED", "attempt_number": int64(0), "reference_type": "LOCAL_REFERENCE", "call_site": "disabled", "type": "DRIVER", "pid": int64(0), "ip": "10.0.0.1"},
		{"object_id": "b", "object_size": int64(-1), "task_status": "NIL", "attempt_number": int64(0), "reference_type": "USED_BY_PENDING_TASK", "call_site": "disabled", "type": "WORKER", "pid": int64(9), "ip": "10.0.0.2"},
	}
	got, _ = Summarize(objects, Snapshot{Rows: orows}, Query{})
	c = got.Result["node_id_to_summary"].(map[string]any)["cluster"].(map[string]any)
	g := c["summary"].(map[string]any)["disabled"].(map[string]any)
	if c["total_objects"] != 2 || c["total_size_mb"] != 1.0 || c["callsite_enabled"] != false ||
		g["total_num_workers"] != 2 || g["total_num_nodes"] != 2 ||
		!reflect.DeepEqual(g["ref_type_counts"], map[string]int{"LOCAL_REFERENCE": 1, "USED_BY_PENDING_TASK": 1}) ||
		!reflect.DeepEqual(g["task_attempt_number_counts"], map[string]int{"0": 2}) {
		t.Fatalf("objects: %v", c)
	}
	if _, err := Summarize(Schema{Resource: Nodes}, Snapshot{}, Query{}); !errors.Is(err, ErrUnknownResource) {
		t.Fatalf("nodes summary: %v", err)
	}
}

func TestRuntimeEnvOrder(t *testing.T) {
	s, _ := SchemaOf(RuntimeEnvs)
	rows := []Row{{"node_id": "old", "creation_time_ms": 1.0}, {"node_id": "none", "creation_time_ms": nil}, {"node_id": "new", "creation_time_ms": 5.0}}
	got, _ := List(s, Snapshot{Rows: rows}, Query{Limit: 10})
	if !reflect.DeepEqual(idsOf(got.Result, "node_id"), []string{"none", "new", "old"}) {
		t.Fatalf("order: %v", got.Result)
	}
}

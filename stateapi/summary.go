package stateapi

import (
	"fmt"
	"strconv"
)

// SummaryResponse is Ray's SummaryApiResponse.
type SummaryResponse struct {
	Total                 int            `json:"total"`
	NumAfterTruncation    int            `json:"num_after_truncation"`
	NumFiltered           int            `json:"num_filtered"`
	Result                map[string]any `json:"result"`
	PartialFailureWarning string         `json:"partial_failure_warning"`
	Warnings              []string       `json:"warnings"`
}

// Summarizable resources and their default grouping.
var summaryBy = map[Resource]string{Tasks: "func_name", Actors: "class", Objects: "callsite"}

// Summarize lists a snapshot with the query's filters (up to MaxLimit rows)
// and aggregates it: tasks by function (or task) name, actors by class,
// objects by call site, as the stock server does.
func Summarize(s Schema, snap Snapshot, q Query) (SummaryResponse, error) {
	def, ok := summaryBy[s.Resource]
	if !ok {
		return SummaryResponse{}, fmt.Errorf("%w: %s cannot be summarized", ErrUnknownResource, s.Resource)
	}
	by := q.SummaryBy
	if by == "" {
		by = def
	}
	if s.Resource == Tasks && by == "task_name" {
		by = "func_name" // the same grouping in Ray
	}
	if by != def {
		return SummaryResponse{}, fmt.Errorf("%w: summary_by %q is not supported for %s (only %q)", ErrBadQuery, q.SummaryBy, s.Resource, def)
	}
	lq := Query{Filters: q.Filters, Limit: MaxLimit, ExcludeDriver: true}
	l, err := List(s, snap, lq)
	if err != nil {
		return SummaryResponse{}, err
	}
	var cluster map[string]any
	switch s.Resource {
	case Tasks:
		cluster = summarizeTasks(l.Result)
	case Actors:
		cluster = summarizeActors(l.Result)
	default:
		cluster = summarizeObjects(l.Result)
	}
	return SummaryResponse{
		Total: l.Total, NumAfterTruncation: l.NumAfterTruncation, NumFiltered: l.NumFiltered,
		Result:   map[string]any{"node_id_to_summary": map[string]any{"cluster": cluster}},
		Warnings: l.Warnings,
	}, nil
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

func summarizeTasks(rows []Row) map[string]any {
	summary := map[string]any{}
	var normal, actorTasks, actorsScheduled int
	for _, r := range rows {
		key := str(r["name"])
		if key == "" {
			key = str(r["func_or_class_name"])
		}
		e, ok := summary[key].(map[string]any)
		if !ok {
			e = map[string]any{"func_or_class_name": key, "type": r["type"], "state_counts": map[string]int{}}
			summary[key] = e
		}
		e["state_counts"].(map[string]int)[str(r["state"])]++
		switch r["type"] {
		case "NORMAL_TASK":
			normal++
		case "ACTOR_CREATION_TASK":
			actorsScheduled++
		case "ACTOR_TASK":
			actorTasks++
		}
	}
	return map[string]any{
		"summary": summary, "total_tasks": normal, "total_actor_tasks": actorTasks,
		"total_actor_scheduled": actorsScheduled, "summary_by": "func_name",
	}
}

func summarizeActors(rows []Row) map[string]any {
	summary := map[string]any{}
	for _, r := range rows {
		key := str(r["class_name"])
		e, ok := summary[key].(map[string]any)
		if !ok {
			e = map[string]any{"class_name": key, "state_counts": map[string]int{}}
			summary[key] = e
		}
		e["state_counts"].(map[string]int)[str(r["state"])]++
	}
	return map[string]any{"summary": summary, "total_actors": len(rows), "summary_by": "class"}
}

func summarizeObjects(rows []Row) map[string]any {
	type group struct {
		n       int
		mb      float64
		workers map[any]bool
		nodes   map[any]bool
		states  map[string]int
		tries   map[string]int
		refs    map[string]int
	}
	groups := map[string]*group{}
	var order []string
	total, totalMB, callsites := 0, 0.0, true
	for _, r := range rows {
		key := str(r["call_site"])
		if key == "disabled" {
			callsites = false
		}
		g := groups[key]
		if g == nil {
			g = &group{workers: map[any]bool{}, nodes: map[any]bool{}, states: map[string]int{}, tries: map[string]int{}, refs: map[string]int{}}
			groups[key] = g
			order = append(order, key)
		}
		g.n++
		total++
		g.states[str(r["task_status"])]++
		if n, ok := number(r["attempt_number"]); ok {
			g.tries[strconv.FormatInt(int64(n), 10)]++
		}
		g.refs[str(r["reference_type"])]++
		if size, ok := number(r["object_size"]); ok && size != -1 {
			g.mb += size / (1 << 20)
			totalMB += size / (1 << 20)
		}
		g.workers[r["pid"]] = true
		g.nodes[r["ip"]] = true
	}
	summary := map[string]any{}
	for _, k := range order {
		g := groups[k]
		summary[k] = map[string]any{
			"total_objects": g.n, "total_size_mb": g.mb, "total_num_workers": len(g.workers),
			"total_num_nodes": len(g.nodes), "task_state_counts": g.states,
			"task_attempt_number_counts": g.tries, "ref_type_counts": g.refs,
		}
	}
	return map[string]any{
		"summary": summary, "total_objects": total, "total_size_mb": totalMB,
		"callsite_enabled": callsites, "summary_by": "callsite",
	}
}

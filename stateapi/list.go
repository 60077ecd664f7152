package stateapi

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Snapshot is what the data sources hold of one resource.
type Snapshot struct {
	Rows []Row
	// Dropped counts entries the sources no longer keep (evicted task
	// history): they make total larger than num_after_truncation.
	Dropped int
	// Warnings are passed on to the client, which prints them.
	Warnings []string
}

// ListResponse is Ray's ListApiResponse.
type ListResponse struct {
	Total                 int      `json:"total"`
	NumAfterTruncation    int      `json:"num_after_truncation"`
	NumFiltered           int      `json:"num_filtered"`
	Result                []Row    `json:"result"`
	PartialFailureWarning string   `json:"partial_failure_warning"`
	Warnings              []string `json:"warnings"`
}

// List filters, sorts, limits and projects a snapshot as the stock server
// does. A filter on a column the schema does not filter, or a value that
// does not convert to its column's type, fails with ErrBadQuery.
func List(s Schema, snap Snapshot, q Query) (ListResponse, error) {
	filters, err := compile(s, q.Filters)
	if err != nil {
		return ListResponse{}, err
	}
	cols := s.names(q.Detail)
	out := make([]Row, 0, len(snap.Rows))
	for _, r := range snap.Rows {
		if s.Resource == Tasks && q.ExcludeDriver && r["type"] == "DRIVER_TASK" {
			continue
		}
		if !matchAll(r, filters) {
			continue
		}
		p := make(Row, len(cols))
		for _, c := range cols {
			p[c] = r[c]
		}
		out = append(out, p)
	}
	sortRows(s, out)
	resp := ListResponse{
		Total: len(snap.Rows) + snap.Dropped, NumAfterTruncation: len(snap.Rows),
		NumFiltered: len(out), Warnings: snap.Warnings,
	}
	if q.Limit < len(out) {
		out = out[:q.Limit]
	}
	resp.Result = out
	return resp, nil
}

func sortRows(s Schema, rows []Row) {
	if s.Resource == RuntimeEnvs {
		// Newest first; those not created yet (no time) before all.
		key := func(r Row) float64 {
			if f, ok := number(r["creation_time_ms"]); ok {
				return f
			}
			return math.Inf(1)
		}
		slices.SortStableFunc(rows, func(a, b Row) int { return cmp.Compare(key(b), key(a)) })
		return
	}
	if s.ID == "" {
		return
	}
	slices.SortStableFunc(rows, func(a, b Row) int {
		x, _ := a[s.ID].(string)
		y, _ := b[s.ID].(string)
		return strings.Compare(x, y)
	})
}

// compiled is a filter with its value converted to the column's kind.
type compiled struct {
	key   string
	equal bool
	value any
}

func compile(s Schema, fs []Filter) ([]compiled, error) {
	out := make([]compiled, 0, len(fs))
	for _, f := range fs {
		key := strings.ToLower(f.Key)
		c, ok := s.column(key)
		if !ok || !c.Filterable {
			return nil, fmt.Errorf("%w: The given filter column %s is not supported. Supported filter columns: %s",
				ErrBadQuery, key, strings.Join(s.filterable(), ", "))
		}
		v, err := convert(c, f.Value)
		if err != nil {
			return nil, err
		}
		out = append(out, compiled{key: key, equal: f.Equal, value: v})
	}
	return out, nil
}

func convert(c Column, v string) (any, error) {
	switch c.Kind {
	case KindInt:
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%w: Invalid filter `--filter %s %s` for a int type column. Please provide an integer filter `--filter %s [int]`", ErrBadQuery, c.Name, v, c.Name)
		}
		return float64(n), nil
	case KindFloat:
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil {
			return nil, fmt.Errorf("%w: Invalid filter `--filter %s %s` for a float type column", ErrBadQuery, c.Name, v)
		}
		return f, nil
	case KindBool:
		bv, err := parseBool(v)
		if err != nil {
			return nil, fmt.Errorf("%w: Invalid filter `--filter %s %s` for a boolean type column. Please provide `--filter %s [True|true|1]` for True or `--filter %s [False|false|0]` for False.", ErrBadQuery, c.Name, v, c.Name, c.Name)
		}
		return bv, nil
	}
	return v, nil
}

func matchAll(r Row, fs []compiled) bool {
	for _, f := range fs {
		v, present := r[f.key]
		if !present {
			return false
		}
		if equalValue(v, f.value) != f.equal {
			return false
		}
	}
	return true
}

// equalValue compares a row value with a converted filter value: strings
// case-insensitively, numbers by value; nil equals nothing.
func equalValue(v, want any) bool {
	switch w := want.(type) {
	case string:
		s, ok := v.(string)
		return ok && strings.EqualFold(s, w)
	case bool:
		bv, ok := v.(bool)
		return ok && bv == w
	case float64:
		f, ok := number(v)
		return ok && f == w
	}
	return false
}

func number(v any) (float64, bool) {
	switch n := v.(type) {
	case int:
		return float64(n), true
	case int32:
		return float64(n), true
	case int64:
		return float64(n), true
	case uint32:
		return float64(n), true
	case float64:
		return n, true
	}
	return 0, false
}

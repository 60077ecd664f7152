package stateapi

import (
	"fmt"
	"net/url"
	"strconv"
)

// Limits of the 2.60.0 server.
const (
	DefaultLimit = 100
	MaxLimit     = 10000
)

// Filter is one (key, predicate, value) triple; Equal is "=", else "!=".
type Filter struct {
	Key   string
	Equal bool
	Value string
}

// Query is a list request's options.
type Query struct {
	Filters []Filter
	Limit   int
	Detail  bool
	// ExcludeDriver drops DRIVER_TASK rows (tasks only).
	ExcludeDriver bool
	// SummaryBy groups a summary ("" = the resource's default).
	SummaryBy string
}

// ParseQuery reads the query string the stock client sends: limit, detail,
// exclude_driver, summary_by and repeated filter_keys / filter_predicates /
// filter_values (timeout and server_timeout_multiplier are ignored).
func ParseQuery(v url.Values) (Query, error) {
	q := Query{Limit: DefaultLimit, ExcludeDriver: true, SummaryBy: v.Get("summary_by")}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			return q, fmt.Errorf("%w: limit %q is not an integer", ErrBadQuery, s)
		}
		if n > MaxLimit {
			return q, fmt.Errorf("%w: Given limit %d exceeds the supported limit %d. Use a lower limit.", ErrBadQuery, n, MaxLimit)
		}
		if n < 0 {
			return q, fmt.Errorf("%w: limit %d is negative", ErrBadQuery, n)
		}
		q.Limit = n
	}
	var err error
	if q.Detail, err = boolParam(v, "detail", false); err != nil {
		return q, err
	}
	if q.ExcludeDriver, err = boolParam(v, "exclude_driver", true); err != nil {
		return q, err
	}
	keys, preds, vals := v["filter_keys"], v["filter_predicates"], v["filter_values"]
	if len(keys) != len(vals) || len(keys) != len(preds) {
		return q, fmt.Errorf("%w: %d filter keys, %d predicates and %d values", ErrBadQuery, len(keys), len(preds), len(vals))
	}
	for i, k := range keys {
		switch preds[i] {
		case "=", "!=":
		default:
			return q, fmt.Errorf("%w: Unsupported filter predicate %s is given. Available predicates: =, !=.", ErrBadQuery, preds[i])
		}
		q.Filters = append(q.Filters, Filter{Key: k, Equal: preds[i] == "=", Value: vals[i]})
	}
	return q, nil
}

func boolParam(v url.Values, name string, def bool) (bool, error) {
	s, ok := v[name]
	if !ok || len(s) == 0 {
		return def, nil
	}
	b, err := parseBool(s[0])
	if err != nil {
		return def, fmt.Errorf("%w: %s: %w", ErrBadQuery, name, err)
	}
	return b, nil
}

// parseBool accepts what Ray's convert_string_to_type does.
func parseBool(s string) (bool, error) {
	switch s {
	case "True", "true", "1":
		return true, nil
	case "False", "false", "0":
		return false, nil
	}
	return false, fmt.Errorf("failed to convert a value %s to bool", s)
}

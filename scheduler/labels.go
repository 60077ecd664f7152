package scheduler

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
)

// LabelOp is a label constraint operator.
type LabelOp int

const (
	// LabelIn matches a node that has the key with one of the values
	// (selector syntax "v" or "in(a,b)").
	LabelIn LabelOp = iota
	// LabelNotIn matches a node that lacks the key or has it with none of the
	// values (selector syntax "!v" or "!in(a,b)").
	LabelNotIn
)

// LabelConstraint is one parsed key of a label selector.
type LabelConstraint struct {
	Key    string
	Op     LabelOp
	Values []string // sorted, de-duplicated
}

// LabelSelector is a parsed label selector: a node matches when it meets
// every constraint. The zero value matches every node.
type LabelSelector []LabelConstraint

// labelValueRE is Kubernetes label-value syntax, which Ray uses for label
// values and for each value inside a selector.
var labelValueRE = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9_.-]{0,61}[a-zA-Z0-9])?$`)

// labelPrefixRE is the optional DNS-subdomain prefix of a label key.
var labelPrefixRE = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$`)

// validLabelKey checks Kubernetes label-key syntax: [prefix/]name.
func validLabelKey(key string) bool {
	name := key
	if i := strings.LastIndexByte(key, '/'); i >= 0 {
		prefix := key[:i]
		name = key[i+1:]
		if len(prefix) == 0 || len(prefix) > 253 || !labelPrefixRE.MatchString(prefix) {
			return false
		}
	}
	return labelValueRE.MatchString(name)
}

// ParseLabelSelector parses a selector written as Ray's label_selector
// option: key -> "v" (equals), "!v" (not equal), "in(a,b)" (one of),
// "!in(a,b)" (none of). Spaces after the commas are allowed. An empty value
// "" means the key must be present with an empty value. Constraints come
// back sorted by key. A malformed key or value gives an error wrapping
// ErrInvalid.
func ParseLabelSelector(sel map[string]string) (LabelSelector, error) {
	if len(sel) == 0 {
		return nil, nil
	}
	keys := make([]string, 0, len(sel))
	for k := range sel {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make(LabelSelector, 0, len(keys))
	for _, k := range keys {
		c, err := parseConstraint(k, sel[k])
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

func parseConstraint(key, val string) (LabelConstraint, error) {
	if !validLabelKey(key) {
		return LabelConstraint{}, fmt.Errorf("%w: label selector key %q", ErrInvalid, key)
	}
	c := LabelConstraint{Key: key, Op: LabelIn}
	v := val
	if strings.HasPrefix(v, "!") {
		c.Op = LabelNotIn
		v = v[1:]
	}
	if v == "" && c.Op == LabelIn {
		c.Values = []string{""}
		return c, nil
	}
	var vals []string
	if strings.HasPrefix(v, "in(") && strings.HasSuffix(v, ")") {
		vals = strings.Split(v[len("in("):len(v)-1], ",")
		for i := range vals {
			if i > 0 {
				vals[i] = strings.TrimPrefix(vals[i], " ")
			}
		}
	} else {
		vals = []string{v}
	}
	for _, x := range vals {
		if !labelValueRE.MatchString(x) {
			return LabelConstraint{}, fmt.Errorf("%w: label selector %q: %q", ErrInvalid, key, val)
		}
	}
	sort.Strings(vals)
	c.Values = compactStrings(vals)
	return c, nil
}

func compactStrings(s []string) []string {
	out := s[:0]
	for i, x := range s {
		if i == 0 || x != s[i-1] {
			out = append(out, x)
		}
	}
	return out
}

// Matches reports whether a node with these labels meets the constraint.
func (c LabelConstraint) Matches(labels map[string]string) bool {
	v, ok := labels[c.Key]
	in := ok && containsSorted(c.Values, v)
	if c.Op == LabelNotIn {
		return !in
	}
	return in
}

func containsSorted(s []string, x string) bool {
	i := sort.SearchStrings(s, x)
	return i < len(s) && s[i] == x
}

// Value renders the constraint back into selector syntax; parsing the result
// gives the same constraint.
func (c LabelConstraint) Value() string {
	neg := ""
	if c.Op == LabelNotIn {
		neg = "!"
	}
	if len(c.Values) == 1 {
		return neg + c.Values[0]
	}
	return neg + "in(" + strings.Join(c.Values, ",") + ")"
}

// Matches reports whether a node with these labels meets every constraint.
func (s LabelSelector) Matches(labels map[string]string) bool {
	for _, c := range s {
		if !c.Matches(labels) {
			return false
		}
	}
	return true
}

// Map renders the selector back into its key -> value form.
func (s LabelSelector) Map() map[string]string {
	if len(s) == 0 {
		return nil
	}
	m := make(map[string]string, len(s))
	for _, c := range s {
		m[c.Key] = c.Value()
	}
	return m
}

// Matches parses selector and reports whether labels meet it. A malformed
// selector gives an error wrapping ErrInvalid.
func Matches(labels, selector map[string]string) (bool, error) {
	s, err := ParseLabelSelector(selector)
	if err != nil {
		return false, err
	}
	return s.Matches(labels), nil
}

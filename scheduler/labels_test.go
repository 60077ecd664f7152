package scheduler

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
)

func TestParseLabelSelector(t *testing.T) {
	tests := []struct {
		name string
		sel  map[string]string
		want LabelSelector
	}{
		{"nil", nil, nil},
		{"equals", map[string]string{"ray.io/availability-region": "us-west1"},
			LabelSelector{{"ray.io/availability-region", LabelIn, []string{"us-west1"}}}},
		{"not equal", map[string]string{"region": "!us-west1"},
			LabelSelector{{"region", LabelNotIn, []string{"us-west1"}}}},
		{"in", map[string]string{"acc": "in(H100,A100)"},
			LabelSelector{{"acc", LabelIn, []string{"A100", "H100"}}}},
		{"in with spaces and duplicates", map[string]string{"acc": "in(H100, A100, H100)"},
			LabelSelector{{"acc", LabelIn, []string{"A100", "H100"}}}},
		{"not in", map[string]string{"market": "!in(spot,on-demand)"},
			LabelSelector{{"market", LabelNotIn, []string{"on-demand", "spot"}}}},
		{"empty value", map[string]string{"k": ""}, LabelSelector{{"k", LabelIn, []string{""}}}},
		{"plain value named in", map[string]string{"k": "in"}, LabelSelector{{"k", LabelIn, []string{"in"}}}},
		{"sorted by key", map[string]string{"b": "1", "a": "2"},
			LabelSelector{{"a", LabelIn, []string{"2"}}, {"b", LabelIn, []string{"1"}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseLabelSelector(tc.sel)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestParseLabelSelectorErrors(t *testing.T) {
	for _, sel := range []map[string]string{
		{"k": "!"},
		{"k": "in()"},
		{"k": "!in()"},
		{"k": "in(a,"},
		{"k": "in(a,,b)"},
		{"k": "-spot"},
		{"k": "spot_"},
		{"k": "!!spot"},
		{"k": "in(H100, TPU!GPU)"},
		{"k": "a b"},
		{"": "v"},
		{"-bad": "v"},
		{"/name": "v"},
		{"pre..fix/name": "v"},
	} {
		if _, err := ParseLabelSelector(sel); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseLabelSelector(%v) err = %v, want ErrInvalid", sel, err)
		}
		if _, err := Matches(nil, sel); !errors.Is(err, ErrInvalid) {
			t.Errorf("Matches(nil, %v) err = %v, want ErrInvalid", sel, err)
		}
	}
}

func TestMatches(t *testing.T) {
	west := map[string]string{"region": "us-west1", "acc": "H100"}
	tests := []struct {
		labels map[string]string
		sel    map[string]string
		want   bool
	}{
		{west, nil, true},
		{nil, nil, true},
		{west, map[string]string{"region": "us-west1"}, true},
		{west, map[string]string{"region": "us-east1"}, false},
		{west, map[string]string{"region": "!us-west1"}, false},
		{west, map[string]string{"region": "!us-east1"}, true},
		{west, map[string]string{"region": "in(us-east1,us-west1)"}, true},
		{west, map[string]string{"region": "in(us-east1,eu)"}, false},
		{west, map[string]string{"region": "!in(us-east1,us-west1)"}, false},
		{west, map[string]string{"region": "!in(us-east1,eu)"}, true},
		// A missing key never matches equals/in and always matches !/!in.
		{west, map[string]string{"zone": "a"}, false},
		{west, map[string]string{"zone": "in(a,b)"}, false},
		{west, map[string]string{"zone": "!a"}, true},
		{west, map[string]string{"zone": "!in(a,b)"}, true},
		// All constraints must hold.
		{west, map[string]string{"region": "us-west1", "acc": "A100"}, false},
		{west, map[string]string{"region": "us-west1", "acc": "!A100"}, true},
		// Empty value: key present and empty.
		{map[string]string{"k": ""}, map[string]string{"k": ""}, true},
		{map[string]string{}, map[string]string{"k": ""}, false},
	}
	for _, tc := range tests {
		got, err := Matches(tc.labels, tc.sel)
		if err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("Matches(%v, %v) = %v, want %v", tc.labels, tc.sel, got, tc.want)
		}
	}
}

var labelValues = []string{"a", "b", "c", "us-west1", "H100"}

func randValues(r *rand.Rand) []string {
	n := 1 + r.IntN(3)
	out := make([]string, n)
	for i := range out {
		out[i] = labelValues[r.IntN(len(labelValues))]
	}
	return out
}

func randLabels(r *rand.Rand) map[string]string {
	m := map[string]string{}
	for _, k := range []string{"k1", "k2"} {
		if r.IntN(3) > 0 {
			m[k] = labelValues[r.IntN(len(labelValues))]
		}
	}
	return m
}

// Rendering a parsed constraint and parsing it again is the identity.
func TestLabelSelectorRoundTrip(t *testing.T) {
	for seed := range uint64(500) {
		r := rand.New(rand.NewPCG(seed, 1))
		sel := map[string]string{}
		for _, k := range []string{"k1", "ray.io/k2", "k3"} {
			if r.IntN(2) == 0 {
				continue
			}
			vals := randValues(r)
			v := vals[0]
			if len(vals) > 1 {
				v = fmt.Sprintf("in(%s)", joinComma(vals))
			}
			if r.IntN(2) == 0 {
				v = "!" + v
			}
			sel[k] = v
		}
		p, err := ParseLabelSelector(sel)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		q, err := ParseLabelSelector(p.Map())
		if err != nil {
			t.Fatalf("seed %d: reparse %v: %v", seed, p.Map(), err)
		}
		if !reflect.DeepEqual(p, q) {
			t.Fatalf("seed %d: %v -> %+v -> %v -> %+v", seed, sel, p, p.Map(), q)
		}
	}
}

func joinComma(v []string) string {
	s := ""
	for i, x := range v {
		if i > 0 {
			s += ","
		}
		s += x
	}
	return s
}

// Negation and in() behave as the boolean operators they stand for.
func TestMatchesAlgebra(t *testing.T) {
	for seed := range uint64(2000) {
		r := rand.New(rand.NewPCG(seed, 2))
		labels := randLabels(r)
		key := []string{"k1", "k2", "k3"}[r.IntN(3)]
		vals := randValues(r)
		m := func(v string) bool {
			ok, err := Matches(labels, map[string]string{key: v})
			if err != nil {
				t.Fatalf("seed %d: %v", seed, err)
			}
			return ok
		}
		anyEq := false
		for _, v := range vals {
			if m("!"+v) == m(v) {
				t.Fatalf("seed %d: %q and !%q agree on %v", seed, v, v, labels)
			}
			anyEq = anyEq || m(v)
		}
		in := fmt.Sprintf("in(%s)", joinComma(vals))
		if m(in) != anyEq || m("!"+in) == anyEq {
			t.Fatalf("seed %d: %s on %v: in=%v !in=%v, any equals=%v", seed, in, labels, m(in), m("!"+in), anyEq)
		}
		if got, want := m(vals[0]), labels[key] == vals[0] && hasKey(labels, key); got != want {
			t.Fatalf("seed %d: equals %q on %v = %v", seed, vals[0], labels, got)
		}
	}
}

func hasKey(m map[string]string, k string) bool { _, ok := m[k]; return ok }

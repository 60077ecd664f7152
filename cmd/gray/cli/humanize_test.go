package cli

import (
	"reflect"
	"testing"

	"github.com/gray-cluster/gray/head"
)

func TestHumanSizes(t *testing.T) {
	cases := []struct {
		resource string
		v        float64
		want     string
	}{
		{"memory", 1.76932503552e+10, "16.48 GiB"},
		{"object_store_memory", 7582854758, "7.06 GiB"},
		{"memory", 0, "0 B"},
		{"memory", 512, "512 B"},
		{"memory", 1536, "1.50 KiB"},
		{"memory", 5 << 20, "5.00 MiB"},
		{"CPU", 2, "2"},
		{"CPU", 0.5, "0.5"},
		{"GPU", 1e21, "1000000000000000000000"},
	}
	for _, c := range cases {
		if got := amount(c.resource, c.v); got != c.want {
			t.Errorf("amount(%s, %g) = %q, want %q", c.resource, c.v, got, c.want)
		}
	}
	if got := usageLine("memory", 1<<30, 2<<30); got != "1.00 GiB / 2.00 GiB" {
		t.Errorf("usage = %q", got)
	}
}

func TestDemandLines(t *testing.T) {
	got := demandLines([]head.Demand{
		{Shape: map[string]float64{"CPU": 1}, Count: 2, World: "native"},
		{Shape: map[string]float64{"GPU": 0.5, "CPU": 1}, Count: 1, World: "ray://"},
	})
	want := []string{
		"  {'CPU': 1.0}: 2 pending tasks/actors (native)",
		"  {'CPU': 1.0, 'GPU': 0.5}: 1 pending tasks/actors (ray://)",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q", got)
	}
	if got := demandLines(nil); !reflect.DeepEqual(got, []string{"  (no resource demands)"}) {
		t.Fatalf("none: %q", got)
	}
}

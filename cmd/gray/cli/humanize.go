package cli

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/gray-cluster/gray/head"
)

// bytesHuman formats a byte count for people: 1.76932503552e+10 becomes
// "16.48 GiB".
func bytesHuman(v float64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB"}
	i := 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	if i == 0 {
		return strconv.FormatFloat(v, 'f', -1, 64) + " B"
	}
	return strconv.FormatFloat(v, 'f', 2, 64) + " " + units[i]
}

// isBytes tells resources counted in bytes (memory, object_store_memory).
func isBytes(resource string) bool { return strings.Contains(resource, "memory") }

// amount formats one resource quantity: bytes for memory-like resources,
// a plain number (never exponent notation) for the rest.
func amount(resource string, v float64) string {
	if isBytes(resource) {
		return bytesHuman(v)
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}

// usageLine is "used / total" of one resource.
func usageLine(resource string, used, total float64) string {
	return fmt.Sprintf("%s / %s", amount(resource, used), amount(resource, total))
}

// shapeString renders a demand's shape as `ray status` does: {'CPU': 1.0}.
func shapeString(shape map[string]float64) string {
	parts := make([]string, 0, len(shape))
	for _, k := range slices.Sorted(maps.Keys(shape)) {
		v := shape[k]
		s := strconv.FormatFloat(v, 'f', -1, 64)
		if !strings.ContainsAny(s, ".") {
			s += ".0"
		}
		parts = append(parts, fmt.Sprintf("'%s': %s", k, s))
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// demandLines are the "Pending demands" lines of `gray status`.
func demandLines(ds []head.Demand) []string {
	if len(ds) == 0 {
		return []string{"  (no resource demands)"}
	}
	out := make([]string, 0, len(ds))
	for _, d := range ds {
		out = append(out, fmt.Sprintf("  %s: %d pending tasks/actors (%s)", shapeString(d.Shape), d.Count, d.World))
	}
	return out
}

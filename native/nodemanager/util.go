package nodemanager

import (
	"crypto/rand"
	"sort"
	"strconv"
)

func randRead(b []byte) (int, error) { return rand.Read(b) }

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func formatFloat(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

package scheduler

import (
	"sort"
	"strconv"
	"strings"
)

// searchResult is the outcome of the exhaustive packing search.
type searchResult int

const (
	searchFound      searchResult = iota
	searchImpossible              // the whole space was searched: no packing exists
	searchUnknown                 // the budget ran out first
)

// searchPacking looks for an assignment of bundles to nodes (nodes may take
// several) such that each node's bundles fit in its capacity. It returns the
// node index per bundle. Depth-first over bundles in the given order; at each
// level nodes whose remaining capacity equals one already tried are skipped,
// since they are interchangeable. preferUsed tries nodes that already hold a
// bundle first (packing), otherwise unused nodes first (spreading). At most
// budget node examinations are made.
func searchPacking(bundles [][]demand, caps []map[string]amount, preferUsed bool, budget int) ([]int, searchResult) {
	// Work on dense vectors over the resource names the bundles use.
	nameSet := map[string]int{}
	for _, b := range bundles {
		for _, d := range b {
			nameSet[d.name] = 0
		}
	}
	names := make([]string, 0, len(nameSet))
	for n := range nameSet {
		names = append(names, n)
	}
	sort.Strings(names)
	for i, n := range names {
		nameSet[n] = i
	}
	need := make([][]amount, len(bundles))
	for i, b := range bundles {
		need[i] = make([]amount, len(names))
		for _, d := range b {
			need[i][nameSet[d.name]] = d.amt
		}
	}
	free := make([][]amount, len(caps))
	for j, m := range caps {
		free[j] = make([]amount, len(names))
		for r, n := range names {
			free[j][r] = m[n]
		}
	}

	// Cheap proofs of impossibility: a bundle that fits no node, or a
	// resource whose total demand exceeds the total capacity.
	for _, b := range need {
		ok := false
		for _, f := range free {
			if fitsVec(f, b) {
				ok = true
				break
			}
		}
		if !ok {
			return nil, searchImpossible
		}
	}
	for r := range names {
		var want, have amount
		for _, b := range need {
			want += b[r]
		}
		for _, f := range free {
			have = min(have+max(f[r], 0), maxAmount)
		}
		if want > have {
			return nil, searchImpossible
		}
	}

	s := &packSearch{need: need, free: free, preferUsed: preferUsed, budget: budget,
		at: make([]int, len(bundles)), load: make([]int, len(caps))}
	if s.dfs(0) {
		return s.at, searchFound
	}
	if s.budget < 0 {
		return nil, searchUnknown
	}
	return nil, searchImpossible
}

type packSearch struct {
	need, free [][]amount
	preferUsed bool
	budget     int
	at         []int
	load       []int // bundles per node
}

func fitsVec(free, b []amount) bool {
	for r, v := range b {
		if free[r] < v {
			return false
		}
	}
	return true
}

func (s *packSearch) key(j int) string {
	var sb strings.Builder
	if s.load[j] > 0 {
		sb.WriteByte('u')
	}
	for _, v := range s.free[j] {
		sb.WriteString(strconv.FormatInt(v, 36))
		sb.WriteByte(',')
	}
	return sb.String()
}

func (s *packSearch) dfs(i int) bool {
	if i == len(s.need) {
		return true
	}
	b := s.need[i]
	seen := map[string]bool{}
	for _, wantUsed := range [...]bool{s.preferUsed, !s.preferUsed} {
		for j := range s.free {
			if (s.load[j] > 0) != wantUsed {
				continue
			}
			s.budget--
			if s.budget < 0 {
				return false
			}
			if !fitsVec(s.free[j], b) {
				continue
			}
			k := s.key(j)
			if seen[k] {
				continue
			}
			seen[k] = true
			for r, v := range b {
				s.free[j][r] -= v
			}
			s.load[j]++
			s.at[i] = j
			if s.dfs(i + 1) {
				return true
			}
			s.load[j]--
			for r, v := range b {
				s.free[j][r] += v
			}
			if s.budget < 0 {
				return false
			}
		}
	}
	return false
}

// matchDistinct assigns each bundle a distinct node from its preference
// list (a bipartite matching by augmenting paths, trying preferences in
// order). It returns the node per bundle, or nil when no complete matching
// exists.
func matchDistinct(prefs [][]int, nodes int) []int {
	owner := make([]int, nodes) // node -> bundle, -1 when free
	for j := range owner {
		owner[j] = -1
	}
	var visited []bool
	var try func(b int) bool
	try = func(b int) bool {
		for _, j := range prefs[b] {
			if visited[j] {
				continue
			}
			visited[j] = true
			if owner[j] < 0 || try(owner[j]) {
				owner[j] = b
				return true
			}
		}
		return false
	}
	for b := range prefs {
		visited = make([]bool, nodes)
		if !try(b) {
			return nil
		}
	}
	at := make([]int, len(prefs))
	for j, b := range owner {
		if b >= 0 {
			at[b] = j
		}
	}
	return at
}

package gcs

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"

	"github.com/gray-cluster/gray/internal/ids"
)

// crashStore is a Store whose Apply fails, committing nothing, from the
// crashAt-th call on: the head died before that write.
type crashStore struct {
	Store
	calls, crashAt int
}

var errCrashed = errors.New("crashed")

func (c *crashStore) Apply(ctx context.Context, ops ...Op) ([]int, error) {
	c.calls++
	if c.calls >= c.crashAt {
		return nil, errCrashed
	}
	return c.Store.Apply(ctx, ops...)
}

// tablesModel is what the actor, node and group tables must hold after a
// reopen: what was committed.
type tablesModel struct {
	actors map[ids.ActorID]ActorRecord
	nodes  map[ids.NodeID]NodeInfo
	groups map[string]PlacementGroupRecord
}

func randNode(r *rand.Rand) ids.NodeID {
	var n ids.NodeID
	for i := range n {
		n[i] = byte(r.IntN(256))
	}
	return n
}

// runTables applies n random changes to the three tables through s, and
// returns the model of those that committed.
func runTables(t *testing.T, r *rand.Rand, s Store, n int) tablesModel {
	t.Helper()
	m := tablesModel{actors: map[ids.ActorID]ActorRecord{}, nodes: map[ids.NodeID]NodeInfo{}, groups: map[string]PlacementGroupRecord{}}
	actors, err := OpenActors(bg, s)
	if err != nil {
		t.Fatal(err)
	}
	nodes, groups := NewNodeTable(s), NewGroupTable(s)
	var actorIDs []ids.ActorID
	var nodeIDs []ids.NodeID
	var groupIDs []string
	job := ids.JobFromInt(uint32(r.IntN(100) + 1))
	for i := 0; i < n; i++ {
		switch r.IntN(7) {
		case 0, 1: // a new actor, detached or not, maybe named
			info := ActorInfo{ID: ids.NewActorID(job), JobID: job, ClassName: "C", Namespace: "ns", Account: "a",
				Detached: r.IntN(2) == 0, Owner: "s"}
			if r.IntN(2) == 0 {
				info.Name = fmt.Sprintf("n%d", r.IntN(5))
			}
			got, err := actors.Register(bg, info)
			if err == nil {
				actorIDs = append(actorIDs, info.ID)
				if info.Detached {
					m.actors[info.ID] = ActorRecord{Info: got}
				}
			} else if !errors.Is(err, ErrNameTaken) && !errors.Is(err, errCrashed) {
				t.Fatal(err)
			}
		case 2: // placed (again)
			if len(actorIDs) == 0 {
				continue
			}
			id := actorIDs[r.IntN(len(actorIDs))]
			p := ActorPlacement{Node: randNode(r), Spec: []byte(fmt.Sprintf(`{"n":%d}`, i))}
			if r.IntN(2) == 0 {
				p.Class = []byte{byte(i), 1, 2}
			}
			if err := actors.Place(bg, id, p); err == nil {
				if rec, ok := m.actors[id]; ok {
					if p.Class == nil {
						p.Class = rec.Placement.Class
					}
					rec.Placement = p
					m.actors[id] = rec
				}
			} else if !errors.Is(err, errCrashed) {
				t.Fatal(err)
			}
		case 3: // died
			if len(actorIDs) == 0 {
				continue
			}
			id := actorIDs[r.IntN(len(actorIDs))]
			if err := actors.MarkDead(bg, id); err == nil {
				delete(m.actors, id)
			} else if !errors.Is(err, errCrashed) {
				t.Fatal(err)
			}
		case 4: // a node registers, or registers again with new resources
			id := randNode(r)
			if len(nodeIDs) > 0 && r.IntN(2) == 0 {
				id = nodeIDs[r.IntN(len(nodeIDs))]
			}
			info := NodeInfo{ID: id, IP: "10.0.0.1", Hostname: "h", Total: map[string]float64{"CPU": float64(r.IntN(8))},
				Labels: map[string]string{"k": fmt.Sprint(i)}, GPUs: "1xT4"}
			if err := nodes.Put(bg, info); err == nil {
				nodeIDs = append(nodeIDs, id)
				info.State, info.Available = NodeSuspect, map[string]float64{}
				m.nodes[id] = info
			} else if !errors.Is(err, errCrashed) {
				t.Fatal(err)
			}
		case 5: // a node dies
			if len(nodeIDs) == 0 {
				continue
			}
			id := nodeIDs[r.IntN(len(nodeIDs))]
			if err := nodes.Delete(bg, id); err == nil {
				delete(m.nodes, id)
			} else if !errors.Is(err, errCrashed) {
				t.Fatal(err)
			}
		case 6: // a group is created, placed, or removed
			if len(groupIDs) > 0 && r.IntN(3) == 0 {
				id := groupIDs[r.IntN(len(groupIDs))]
				if err := groups.Delete(bg, id); err == nil {
					delete(m.groups, id)
				} else if !errors.Is(err, errCrashed) {
					t.Fatal(err)
				}
				continue
			}
			id := fmt.Sprintf("%036x", r.IntN(1<<20))
			nb := r.IntN(3) + 1
			g := PlacementGroupRecord{ID: id, Name: fmt.Sprint("g", i), Strategy: "PACK", Job: job, Detached: r.IntN(2) == 0,
				State: "CREATED", Bundles: make([]map[string]float64, nb), Nodes: make([]ids.NodeID, nb)}
			for b := range nb {
				g.Bundles[b] = map[string]float64{"CPU": float64(b + 1)}
				if r.IntN(2) == 0 {
					g.Nodes[b] = randNode(r)
				}
			}
			if err := groups.Put(bg, g); err == nil {
				groupIDs = append(groupIDs, id)
				m.groups[id] = g
			} else if !errors.Is(err, errCrashed) {
				t.Fatal(err)
			}
		}
	}
	return m
}

// loadTables reads the three tables back from a reopened store.
func loadTables(t *testing.T, s Store) tablesModel {
	t.Helper()
	actors, err := OpenActors(bg, s)
	if err != nil {
		t.Fatal(err)
	}
	m := tablesModel{actors: map[ids.ActorID]ActorRecord{}, nodes: map[ids.NodeID]NodeInfo{}, groups: map[string]PlacementGroupRecord{}}
	for _, rec := range actors.Stored() {
		m.actors[rec.Info.ID] = rec
		if got, ok := actors.Lookup(rec.Info.Account, rec.Info.Namespace, rec.Info.Name); rec.Info.Name != "" && (!ok || got.ID != rec.Info.ID) {
			t.Fatalf("stored named actor %s not found by name", rec.Info.ID.Hex())
		}
	}
	ns, err := NewNodeTable(s).List(bg)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range ns {
		m.nodes[n.ID] = n
	}
	gs, err := NewGroupTable(s).List(bg)
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range gs {
		m.groups[g.ID] = g
	}
	return m
}

func equalTables(t *testing.T, want, got tablesModel) {
	t.Helper()
	if !maps.EqualFunc(want.actors, got.actors, func(a, b ActorRecord) bool { return reflect.DeepEqual(a, b) }) {
		t.Fatalf("actors after reopen:\n got  %+v\n want %+v", got.actors, want.actors)
	}
	if !maps.EqualFunc(want.nodes, got.nodes, func(a, b NodeInfo) bool { return reflect.DeepEqual(a, b) }) {
		t.Fatalf("nodes after reopen:\n got  %+v\n want %+v", got.nodes, want.nodes)
	}
	if !maps.EqualFunc(want.groups, got.groups, func(a, b PlacementGroupRecord) bool { return reflect.DeepEqual(a, b) }) {
		t.Fatalf("groups after reopen:\n got  %+v\n want %+v", slices.Collect(maps.Values(got.groups)), slices.Collect(maps.Values(want.groups)))
	}
}

// TestTablesReopenEqualsLastCommitted runs random changes to the actor,
// node and placement group tables, "crashes" at a random write (that
// write and every later one commit nothing), reopens the store and checks
// that the tables hold exactly what was committed.
func TestTablesReopenEqualsLastCommitted(t *testing.T) {
	forEachBackend(t, func(t *testing.T, open opener) {
		r := rand.New(rand.NewPCG(uint64(len(t.Name())), 7))
		rounds := 30
		if testing.Short() {
			rounds = 5
		}
		var want tablesModel
		for round := 0; round < rounds; round++ {
			s := mustOpen(t, open)
			if round > 0 { // what the last round committed is there
				equalTables(t, want, loadTables(t, s))
			}
			cs := &crashStore{Store: s, crashAt: 1 + r.IntN(40)}
			m := runTables(t, r, cs, 40)
			// The tables this round started from, plus what it committed.
			got := loadTables(t, s)
			equalTables(t, m.mergeInto(want), got)
			want = got
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// mergeInto returns base with m's changes on top (a round changes and
// removes only records it created itself).
func (m tablesModel) mergeInto(base tablesModel) tablesModel {
	out := tablesModel{actors: maps.Clone(base.actors), nodes: maps.Clone(base.nodes), groups: maps.Clone(base.groups)}
	if out.actors == nil {
		out = tablesModel{actors: map[ids.ActorID]ActorRecord{}, nodes: map[ids.NodeID]NodeInfo{}, groups: map[string]PlacementGroupRecord{}}
	}
	maps.Copy(out.actors, m.actors)
	maps.Copy(out.nodes, m.nodes)
	maps.Copy(out.groups, m.groups)
	return out
}

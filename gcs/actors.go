package gcs

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/gray-cluster/gray/internal/ids"
)

// ErrNameTaken is returned when a named actor's name is in use in its namespace.
var ErrNameTaken = errors.New("actor name already taken")

// ActorInfo is the GCS record of an actor.
type ActorInfo struct {
	ID        ids.ActorID
	JobID     ids.JobID
	ClassName string
	Name      string
	Namespace string
	// Account is the account whose session created it: names are unique,
	// and looked up, within one account.
	Account  string
	Detached bool
	// Owner is the client session that created it (non-detached actors die
	// with it).
	Owner string
	Dead  bool
}

// Actors is the actor table with its named-actor index. Detached actors
// are written through to a Store (when it has one, see OpenActors) on every
// change, with their placement; the map is the cache of that table.
type Actors struct {
	mu     sync.Mutex
	byID   map[ids.ActorID]*ActorInfo
	byName map[[3]string]ids.ActorID // (account, namespace, name)
	// placement is where stored actors run (see Place).
	placement map[ids.ActorID]ActorPlacement
	store     Store // nil: in memory only
}

// NewActors returns an empty actor table in memory.
func NewActors() *Actors {
	return &Actors{byID: map[ids.ActorID]*ActorInfo{}, byName: map[[3]string]ids.ActorID{},
		placement: map[ids.ActorID]ActorPlacement{}}
}

// Register adds an actor (stored first when it is detached). A named actor
// whose name is taken fails with ErrNameTaken and returns the existing
// actor's record.
func (a *Actors) Register(ctx context.Context, info ActorInfo) (ActorInfo, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	key := [3]string{info.Account, info.Namespace, info.Name}
	if info.Name != "" {
		if id, ok := a.byName[key]; ok {
			return *a.byID[id], fmt.Errorf("%w: %q in namespace %q", ErrNameTaken, info.Name, info.Namespace)
		}
	}
	rec := info
	if a.persistedLocked(&rec) {
		if err := a.putLocked(ctx, &rec); err != nil {
			return ActorInfo{}, err
		}
	}
	if info.Name != "" {
		a.byName[key] = info.ID
	}
	a.byID[info.ID] = &rec
	return rec, nil
}

// Get returns an actor's record.
func (a *Actors) Get(id ids.ActorID) (ActorInfo, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	r, ok := a.byID[id]
	if !ok {
		return ActorInfo{}, false
	}
	return *r, true
}

// Lookup finds a live named actor of an account.
func (a *Actors) Lookup(account, namespace, name string) (ActorInfo, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	id, ok := a.byName[[3]string{account, namespace, name}]
	if !ok {
		return ActorInfo{}, false
	}
	return *a.byID[id], true
}

// MarkDead records an actor's death and frees its name; a stored actor
// leaves the store first (the in-memory record stays, marked dead).
func (a *Actors) MarkDead(ctx context.Context, id ids.ActorID) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	r, ok := a.byID[id]
	if !ok || r.Dead {
		return nil
	}
	if a.persistedLocked(r) {
		if _, err := a.store.Apply(ctx, Delete(ActorsTable, id.Bytes())); err != nil {
			return fmt.Errorf("actors: forget %s: %w", id.Hex(), err)
		}
	}
	r.Dead = true
	delete(a.placement, id)
	if r.Name != "" {
		delete(a.byName, [3]string{r.Account, r.Namespace, r.Name})
	}
	return nil
}

// Named lists live named actors, sorted by namespace then name.
func (a *Actors) Named() []ActorInfo {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []ActorInfo
	for _, id := range a.byName {
		out = append(out, *a.byID[id])
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// OwnedBy lists live non-detached actors created by a session.
func (a *Actors) OwnedBy(owner string) []ActorInfo {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []ActorInfo
	for _, r := range a.byID {
		if r.Owner == owner && !r.Detached && !r.Dead {
			out = append(out, *r)
		}
	}
	return out
}

// List returns every actor record, dead ones included, sorted by id.
func (a *Actors) List() []ActorInfo {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]ActorInfo, 0, len(a.byID))
	for _, r := range a.byID {
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID.Hex() < out[j].ID.Hex() })
	return out
}

func sortRecords(out []ActorRecord) {
	sort.Slice(out, func(i, j int) bool { return out[i].Info.ID.Hex() < out[j].Info.ID.Hex() })
}

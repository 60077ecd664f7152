package gcs

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/gray-cluster/gray/internal/ids"
)

// ActorsTable is the Store table of the actors that outlive their
// creator's session: detached ones. Keys are actor ids (16 bytes); values
// the JSON of storedActor. Actors owned by a session are kept in memory
// only: they die with their owner, and a head restart ends every session.
const ActorsTable = "actors"

// actorRecordVersion is the layout of a stored actor record.
const actorRecordVersion = 1

// ActorPlacement is where a stored actor runs and what it takes to route
// calls to it, or to start it again: the node holding it (zero while it has
// none), the cluster's encoding of its spec (opaque to this package; it
// carries resources, placement, max_restarts as they are now, and the ids
// of its class payload and arguments) and the pickled class payload itself,
// which the head's object store loses with the head.
type ActorPlacement struct {
	Node  ids.NodeID
	Spec  []byte
	Class []byte
}

// ActorRecord is one stored actor: its GCS record and placement.
type ActorRecord struct {
	Info      ActorInfo
	Placement ActorPlacement
}

type storedActor struct {
	V         int    `json:"v"`
	ID        string `json:"id"`
	Job       string `json:"job"`
	Class     string `json:"class"`
	Name      string `json:"name,omitempty"`
	Namespace string `json:"namespace"`
	Account   string `json:"account,omitempty"`
	Owner     string `json:"owner,omitempty"`
	Node      string `json:"node,omitempty"`
	Spec      []byte `json:"spec,omitempty"`
	Payload   []byte `json:"payload,omitempty"`
}

func encodeActor(info ActorInfo, p ActorPlacement) ([]byte, error) {
	s := storedActor{
		V: actorRecordVersion, ID: info.ID.Hex(), Job: info.JobID.Hex(), Class: info.ClassName, Name: info.Name,
		Namespace: info.Namespace, Account: info.Account, Owner: info.Owner, Spec: p.Spec, Payload: p.Class,
	}
	if p.Node != (ids.NodeID{}) {
		s.Node = p.Node.Hex()
	}
	return json.Marshal(s)
}

func decodeActor(key, value []byte) (ActorRecord, error) {
	var s storedActor
	if err := json.Unmarshal(value, &s); err != nil {
		return ActorRecord{}, fmt.Errorf("%w: actor record: %v", ErrCorrupt, err)
	}
	if s.V != actorRecordVersion {
		return ActorRecord{}, fmt.Errorf("%w: actor record version %d", ErrCorrupt, s.V)
	}
	id, err := ids.ActorFromBytes(key)
	if err != nil || id.Hex() != s.ID {
		return ActorRecord{}, fmt.Errorf("%w: actor record key %x names %q", ErrCorrupt, key, s.ID)
	}
	rec := ActorRecord{
		Info: ActorInfo{ID: id, JobID: id.Job(), ClassName: s.Class, Name: s.Name, Namespace: s.Namespace,
			Account: s.Account, Owner: s.Owner, Detached: true},
		Placement: ActorPlacement{Spec: s.Spec, Class: s.Payload},
	}
	if s.Node != "" {
		if rec.Placement.Node, err = ids.NodeFromHex(s.Node); err != nil {
			return ActorRecord{}, fmt.Errorf("%w: actor record node: %v", ErrCorrupt, err)
		}
	}
	return rec, nil
}

// OpenActors returns the actor table kept in s, with the stored (detached)
// actors loaded; Stored lists them with their placement.
func OpenActors(ctx context.Context, s Store) (*Actors, error) {
	a := NewActors()
	a.store = s
	err := s.Scan(ctx, ActorsTable, nil, func(key, value []byte) error {
		rec, err := decodeActor(key, value)
		if err != nil {
			return err
		}
		info := rec.Info
		a.byID[info.ID] = &info
		if info.Name != "" {
			a.byName[[3]string{info.Account, info.Namespace, info.Name}] = info.ID
		}
		a.placement[info.ID] = rec.Placement
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("actors: load: %w", err)
	}
	return a, nil
}

// persisted reports whether the table keeps an actor in its store.
func (a *Actors) persistedLocked(r *ActorInfo) bool { return a.store != nil && r.Detached && !r.Dead }

func (a *Actors) putLocked(ctx context.Context, r *ActorInfo) error {
	v, err := encodeActor(*r, a.placement[r.ID])
	if err != nil {
		return err
	}
	if _, err := a.store.Apply(ctx, Put(ActorsTable, r.ID.Bytes(), v)); err != nil {
		return fmt.Errorf("actors: store %s: %w", r.ID.Hex(), err)
	}
	return nil
}

// Place records where a stored actor runs now (a node, its spec and class
// payload); a no-op for actors the table does not store.
func (a *Actors) Place(ctx context.Context, id ids.ActorID, p ActorPlacement) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	r, ok := a.byID[id]
	if !ok || !a.persistedLocked(r) {
		return nil
	}
	if p.Class == nil {
		p.Class = a.placement[id].Class
	}
	old := a.placement[id]
	a.placement[id] = p
	if err := a.putLocked(ctx, r); err != nil {
		a.placement[id] = old
		return err
	}
	return nil
}

// Stored lists the actors the store keeps, with their placement, sorted by
// id.
func (a *Actors) Stored() []ActorRecord {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []ActorRecord
	for id, r := range a.byID {
		if a.persistedLocked(r) {
			out = append(out, ActorRecord{Info: *r, Placement: a.placement[id]})
		}
	}
	sortRecords(out)
	return out
}

// IsStored reports whether the table keeps an actor in its store, and
// whether it has its class payload already.
func (a *Actors) IsStored(id ids.ActorID) (stored, haveClass bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	r, ok := a.byID[id]
	if !ok || !a.persistedLocked(r) {
		return false, false
	}
	return true, a.placement[id].Class != nil
}

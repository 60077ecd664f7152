package nodemanager

import (
	"context"

	"github.com/gray-cluster/gray/native/plasma"
)

// plasmaStore adapts the in-process API of *plasma.Store to ObjectStore.
type plasmaStore struct{ s *plasma.Store }

// PlasmaStore returns s as the raylet's ObjectStore.
func PlasmaStore(s *plasma.Store) ObjectStore { return plasmaStore{s} }

func (p plasmaStore) Contains(id ObjectID) bool { return p.s.Contains(plasma.ObjectID(id)) }
func (p plasmaStore) Pin(id ObjectID) bool      { return p.s.Pin(plasma.ObjectID(id)) }
func (p plasmaStore) Unpin(id ObjectID)         { p.s.Unpin(plasma.ObjectID(id)) }
func (p plasmaStore) Delete(id ObjectID)        { p.s.Delete(plasma.ObjectID(id)) }

func (p plasmaStore) WaitSealed(ctx context.Context, ids []ObjectID, n int) []ObjectID {
	in := make([]plasma.ObjectID, len(ids))
	for i, id := range ids {
		in[i] = plasma.ObjectID(id)
	}
	got := p.s.WaitSealed(ctx, in, n)
	out := make([]ObjectID, len(got))
	for i, id := range got {
		out[i] = ObjectID(id)
	}
	return out
}

func (p plasmaStore) Usage() StoreUsage {
	u := p.s.Usage()
	return StoreUsage{Used: u.Used, Capacity: u.Capacity, Objects: u.Objects + u.Spilled}
}

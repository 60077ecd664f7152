package raylet

import (
	"context"

	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/objectstore"
)

// Objects is the raylet's view of the object store. On the head it is the
// pool's *objectstore.Store itself; on a provider it is a local cache that
// pulls from and pushes to the head's store.
type Objects interface {
	// Get returns a sealed object, or an error when it is missing.
	Get(id ids.ObjectID) (*objectstore.Object, error)
	// ReadyChan is closed once the object is sealed (or lost).
	ReadyChan(id ids.ObjectID) (<-chan struct{}, error)
	// Wait blocks until the object is sealed.
	Wait(ctx context.Context, id ids.ObjectID) (*objectstore.Object, error)
	// Seal stores a result value.
	Seal(obj *objectstore.Object) bool
	Pin(list []ids.ObjectID)
	Unpin(list []ids.ObjectID)
	HoldOnce(id ids.ObjectID, holder string) bool
	Release(id ids.ObjectID, holder string) bool
	ReleaseAll(holder string) int
}

var _ Objects = (*objectstore.Store)(nil)

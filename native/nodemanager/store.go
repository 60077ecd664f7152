package nodemanager

import (
	"context"
	"encoding/hex"
)

// ObjectID is a Ray ObjectID (28 bytes), the same shape as plasma.ObjectID.
type ObjectID [28]byte

func (id ObjectID) String() string { return hex.EncodeToString(id[:]) }

func objectIDFrom(b []byte) (ObjectID, bool) {
	var id ObjectID
	if len(b) != len(id) {
		return id, false
	}
	copy(id[:], b)
	return id, true
}

// StoreUsage is what the raylet reports about its object store.
type StoreUsage struct {
	Used, Capacity int64
	Objects        int64
}

// ObjectStore is the local plasma store as the raylet uses it in process.
// PlasmaStore adapts *plasma.Store; tests use a fake.
type ObjectStore interface {
	// Contains reports whether the object is sealed and present.
	Contains(id ObjectID) bool
	// Pin holds the primary copy until Unpin; false if it is not sealed.
	Pin(id ObjectID) bool
	Unpin(id ObjectID)
	// Delete deletes now, or as soon as no client holds the object.
	Delete(id ObjectID)
	// WaitSealed returns once n of ids are sealed or ctx ends: the sealed ones.
	WaitSealed(ctx context.Context, ids []ObjectID, n int) []ObjectID
	Usage() StoreUsage
}

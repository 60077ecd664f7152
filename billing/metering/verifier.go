package metering

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"sync"
)

var (
	// ErrUnknownNode: the record's node has no registered key.
	ErrUnknownNode = errors.New("metering: unknown node")
	// ErrDuplicate: a record with this ID was already accepted. Nothing
	// changes; callers treat it as success-already-done, never bill again.
	ErrDuplicate = errors.New("metering: duplicate usage record")
	// ErrNotLeaseHolder: the node did not hold the record's lease.
	ErrNotLeaseHolder = errors.New("metering: node did not hold the lease")
)

// LeaseChecker reports whether node nodeID held (or holds) lease leaseID. The
// head answers it from its lease table.
type LeaseChecker func(nodeID, leaseID string) bool

// Verifier is the head-side gate for usage records. It knows each node's
// public key and remembers the IDs it accepted, so a record is billed at most
// once however often it is sent. It is safe for concurrent use.
//
// The seen set is in memory. Across head restarts the ledger's idempotency
// keys (post each charge under the record ID) are what stop double billing;
// MarkSeen can preload IDs.
type Verifier struct {
	mu   sync.Mutex
	keys map[string]ed25519.PublicKey
	seen map[string]struct{}
}

// NewVerifier returns a verifier with no nodes and nothing seen.
func NewVerifier() *Verifier {
	return &Verifier{keys: map[string]ed25519.PublicKey{}, seen: map[string]struct{}{}}
}

// AddNode registers (or replaces) the public key of node nodeID.
func (v *Verifier) AddNode(nodeID string, pub ed25519.PublicKey) error {
	if nodeID == "" {
		return fmt.Errorf("%w: empty node id", ErrBadKey)
	}
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: node %s: %d bytes, want %d", ErrBadKey, nodeID, len(pub), ed25519.PublicKeySize)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.keys[nodeID] = append(ed25519.PublicKey(nil), pub...)
	return nil
}

// RemoveNode forgets node nodeID's key; its later records get ErrUnknownNode.
func (v *Verifier) RemoveNode(nodeID string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	delete(v.keys, nodeID)
}

// MarkSeen records ids as already accepted (e.g. loaded from the ledger
// after a restart).
func (v *Verifier) MarkSeen(ids ...string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, id := range ids {
		v.seen[id] = struct{}{}
	}
}

// Seen reports whether a record with this ID was accepted.
func (v *Verifier) Seen(id string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	_, ok := v.seen[id]
	return ok
}

// Accept admits sr for billing, at most once per record ID. The checks run in
// this order, and the first failure is returned (wrapped):
//
//  1. the record is well formed: ErrBadRecord;
//  2. its node is registered: ErrUnknownNode;
//  3. the signature is that node's: ErrBadSignature (so a record signed
//     with another node's key, or altered in transit, fails here);
//  4. the ID was not accepted before: ErrDuplicate;
//  5. leases(node, lease) is true: ErrNotLeaseHolder (a nil leases rejects
//     every record).
//
// Only a nil return marks the ID as seen. leases is called without the
// verifier's lock held.
func (v *Verifier) Accept(sr SignedRecord, leases LeaseChecker) error {
	rec := sr.Record
	if err := rec.Validate(); err != nil {
		return err
	}
	v.mu.Lock()
	pub, known := v.keys[rec.NodeID]
	_, dup := v.seen[rec.ID]
	v.mu.Unlock()
	if !known {
		return fmt.Errorf("%w: %s (record %s)", ErrUnknownNode, rec.NodeID, rec.ID)
	}
	if err := Verify(sr, pub); err != nil {
		return err
	}
	if dup {
		return fmt.Errorf("%w: %s", ErrDuplicate, rec.ID)
	}
	if leases == nil || !leases(rec.NodeID, rec.LeaseID) {
		return fmt.Errorf("%w: node %s, lease %s (record %s)", ErrNotLeaseHolder, rec.NodeID, rec.LeaseID, rec.ID)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, dup := v.seen[rec.ID]; dup { // a concurrent Accept of the same ID won
		return fmt.Errorf("%w: %s", ErrDuplicate, rec.ID)
	}
	v.seen[rec.ID] = struct{}{}
	return nil
}

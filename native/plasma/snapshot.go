package plasma

import "slices"

// ObjectInfo describes one object in the store, for the State API.
type ObjectInfo struct {
	ID     ObjectID
	Size   int64 // data + metadata bytes
	Sealed bool
	Pinned bool
	// Refs counts the clients holding it now.
	Refs    int
	Spilled bool
	Owner   Owner
}

// Objects lists the objects the store holds (deleted ones left out).
func (s *Store) Objects() []ObjectInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]ObjectInfo, 0, len(s.objects))
	for id, o := range s.objects {
		if o.deleted {
			continue
		}
		out = append(out, ObjectInfo{
			ID: id, Size: o.size(), Sealed: o.isSealed, Pinned: o.pinned, Refs: o.refs,
			Spilled: !o.inMemory(), Owner: Owner{NodeID: slices.Clone(o.owner.NodeID), WorkerID: slices.Clone(o.owner.WorkerID), IP: o.owner.IP, Port: o.owner.Port},
		})
	}
	return out
}

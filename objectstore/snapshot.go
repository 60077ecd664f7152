package objectstore

import (
	"slices"

	"github.com/gray-cluster/gray/internal/ids"
)

// ObjectInfo describes one object without its value, for the State API.
type ObjectInfo struct {
	ID ids.ObjectID
	// Size is -1 while the object is pending.
	Size    int64
	Sealed  bool
	IsError bool
	Spilled bool
	// Holders are the holder keys with a reference (sorted); Pins counts
	// pins by pending tasks and containing objects.
	Holders []string
	Pins    int
}

// Objects lists every object the store tracks.
func (s *Store) Objects() []ObjectInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]ObjectInfo, 0, len(s.objects))
	for id, e := range s.objects {
		info := ObjectInfo{ID: id, Size: -1, Pins: e.pins, Sealed: e.sealed()}
		if e.meta != nil {
			info.Size, info.IsError = e.meta.Size, e.meta.IsError
			info.Spilled = e.obj == nil && e.file != ""
		}
		for h := range e.holders {
			info.Holders = append(info.Holders, h)
		}
		slices.Sort(info.Holders)
		out = append(out, info)
	}
	return out
}

// IsError reports whether a sealed object is an error value (ok is false
// for an unknown or pending object); it never reads a spilled value back.
func (s *Store) IsError(id ids.ObjectID) (isError, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.objects[id]
	if e == nil || e.meta == nil {
		return false, false
	}
	return e.meta.IsError, true
}

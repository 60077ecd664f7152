package plasma

import (
	"fmt"
	"strings"
)

// DebugString describes the store's state (the PlasmaGetDebugStringReply).
func (s *Store) DebugString() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var sealed, unsealed, held, pinned, deletePending int
	for _, o := range s.objects {
		if o.isSealed {
			sealed++
		} else {
			unsealed++
		}
		if o.refs > 0 {
			held++
		}
		if o.pinned {
			pinned++
		}
		if o.deletePending {
			deletePending++
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "gray plasma store\n")
	fmt.Fprintf(&b, "- capacity: %d bytes\n", s.cfg.Capacity)
	fmt.Fprintf(&b, "- used: %d bytes (%.1f%%), largest free range %d bytes in %d free ranges\n",
		s.used, 100*float64(s.used)/float64(s.alloc.capacity), s.alloc.largest(), s.alloc.fragments())
	fmt.Fprintf(&b, "- objects: %d sealed, %d being created, %d held by clients, %d pinned, %d waiting to be deleted\n",
		sealed, unsealed, held, pinned, deletePending)
	fmt.Fprintf(&b, "- evictable: %d, spillable: %d\n", s.evictable.Len(), s.spillable.Len())
	fmt.Fprintf(&b, "- spilled: %d objects, %d bytes (spills %d, restores %d, evictions %d)\n",
		s.stats.Spilled, s.stats.SpilledBytes, s.stats.Spills, s.stats.Restores, s.stats.Evictions)
	fmt.Fprintf(&b, "- clients: %d\n", len(s.conns))
	return b.String()
}

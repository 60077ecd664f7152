package plasma

import "github.com/google/btree"

// Alignment is the alignment of every object's offset in the shared segment.
const Alignment = 64

// extent is a free range [off, off+size) of the segment.
type extent struct{ off, size int64 }

// allocator is a best-fit allocator over [0, capacity) with coalescing of
// neighbouring free ranges. Free ranges are indexed twice, by offset (for
// coalescing) and by (size, offset) (for best fit), so allocation and free
// cost O(log n) in the number of free ranges. Sizes and offsets are
// multiples of Alignment.
type allocator struct {
	byOff    *btree.BTreeG[extent]
	bySize   *btree.BTreeG[extent]
	free     int64
	capacity int64
}

func newAllocator(capacity int64) *allocator {
	a := &allocator{
		byOff: btree.NewG(16, func(x, y extent) bool { return x.off < y.off }),
		bySize: btree.NewG(16, func(x, y extent) bool {
			if x.size != y.size {
				return x.size < y.size
			}
			return x.off < y.off
		}),
	}
	capacity = capacity / Alignment * Alignment
	a.capacity = capacity
	if capacity > 0 {
		a.insert(extent{0, capacity})
	}
	return a
}

// alignUp rounds n up to a multiple of Alignment (at least Alignment, so
// that every object, even an empty one, has its own offset).
func alignUp(n int64) int64 {
	if n <= 0 {
		return Alignment
	}
	return (n + Alignment - 1) / Alignment * Alignment
}

func (a *allocator) insert(e extent) {
	a.byOff.ReplaceOrInsert(e)
	a.bySize.ReplaceOrInsert(e)
	a.free += e.size
}

func (a *allocator) remove(e extent) {
	a.byOff.Delete(e)
	a.bySize.Delete(e)
	a.free -= e.size
}

// alloc returns the offset of a range of size bytes (already aligned), or
// false when no single free range is large enough.
func (a *allocator) alloc(size int64) (int64, bool) {
	var found extent
	ok := false
	a.bySize.AscendGreaterOrEqual(extent{size: size}, func(e extent) bool {
		found, ok = e, true
		return false
	})
	if !ok {
		return 0, false
	}
	a.remove(found)
	if found.size > size {
		a.insert(extent{found.off + size, found.size - size})
	}
	return found.off, true
}

// release returns [off, off+size) to the free ranges, merging it with its
// free neighbours.
func (a *allocator) release(off, size int64) {
	e := extent{off, size}
	var prev, next extent
	hasPrev, hasNext := false, false
	a.byOff.DescendLessOrEqual(extent{off: off}, func(p extent) bool {
		prev, hasPrev = p, p.off+p.size == off
		return false
	})
	a.byOff.AscendGreaterOrEqual(extent{off: off + size}, func(n extent) bool {
		next, hasNext = n, n.off == off+size
		return false
	})
	if hasPrev {
		a.remove(prev)
		e.off, e.size = prev.off, e.size+prev.size
	}
	if hasNext {
		a.remove(next)
		e.size += next.size
	}
	a.insert(e)
}

// largest is the size of the largest free range.
func (a *allocator) largest() int64 {
	if m, ok := a.bySize.Max(); ok {
		return m.size
	}
	return 0
}

// fragments is the number of free ranges.
func (a *allocator) fragments() int { return a.byOff.Len() }

package gpu

import "sort"

// Slots tracks which fraction of each GPU is free, and picks GPU ids for a
// demand the way Ray does: whole GPUs for num_gpus >= 1, and fractions packed
// onto the fullest GPU that still fits for num_gpus < 1.
type Slots struct {
	free []float64
	// off marks GPUs withdrawn after failing verification: nothing new is
	// assigned to them; what runs there keeps running.
	off []bool
}

// NewSlots returns n fully free GPUs.
func NewSlots(n int) *Slots {
	s := &Slots{free: make([]float64, n), off: make([]bool, n)}
	for i := range s.free {
		s.free[i] = 1
	}
	return s
}

const eps = 1e-9

// Assign reserves amount GPUs and returns their ids, or nil if they do not fit.
func (s *Slots) Assign(amount float64) []int {
	if amount <= 0 || s == nil {
		return nil
	}
	if amount < 1 {
		best := -1
		for i, f := range s.free {
			if !s.off[i] && f+eps >= amount && (best < 0 || f < s.free[best]) {
				best = i
			}
		}
		if best < 0 {
			return nil
		}
		s.free[best] -= amount
		return []int{best}
	}
	want := int(amount + eps)
	var ids []int
	for i, f := range s.free {
		if !s.off[i] && f >= 1-eps {
			ids = append(ids, i)
			if len(ids) == want {
				break
			}
		}
	}
	if len(ids) < want {
		return nil
	}
	for _, i := range ids {
		s.free[i] = 0
	}
	sort.Ints(ids)
	return ids
}

// Release returns an assignment made by Assign. It reports how much of it
// went back to withdrawn GPUs, which the node no longer offers.
func (s *Slots) Release(ids []int, amount float64) (withdrawn float64) {
	if s == nil {
		return 0
	}
	per := 1.0
	if amount < 1 {
		per = amount
	}
	for _, i := range ids {
		if i >= 0 && i < len(s.free) {
			s.free[i] += per
			if s.free[i] > 1 {
				s.free[i] = 1
			}
			if s.off[i] {
				withdrawn += per
			}
		}
	}
	return withdrawn
}

// Len is the number of GPUs, withdrawn ones included.
func (s *Slots) Len() int {
	if s == nil {
		return 0
	}
	return len(s.free)
}

// SetWithdrawn withdraws GPU i (off) or offers it again, and returns the
// change in free GPU capacity the node offers: minus the GPU's free part
// when it is withdrawn, plus it when it comes back. The part in use
// follows at Release.
func (s *Slots) SetWithdrawn(i int, off bool) float64 {
	if s == nil || i < 0 || i >= len(s.free) || s.off[i] == off {
		return 0
	}
	s.off[i] = off
	if off {
		return -s.free[i]
	}
	return s.free[i]
}

// Busy reports which GPUs have work assigned.
func (s *Slots) Busy() []bool {
	if s == nil {
		return nil
	}
	out := make([]bool, len(s.free))
	for i, f := range s.free {
		out[i] = f < 1-eps
	}
	return out
}

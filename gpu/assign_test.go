package gpu

import (
	"slices"
	"testing"
)

func TestWithdrawnSlotsGetNothingNew(t *testing.T) {
	s := NewSlots(3)
	half := s.Assign(0.5) // GPU 0, half used
	if !slices.Equal(half, []int{0}) {
		t.Fatalf("half = %v", half)
	}
	if d := s.SetWithdrawn(0, true); d != -0.5 {
		t.Errorf("withdrawing a half-used GPU takes %v, want -0.5", d)
	}
	if d := s.SetWithdrawn(0, true); d != 0 {
		t.Errorf("withdrawing twice takes %v", d)
	}
	if got := s.Assign(0.5); !slices.Equal(got, []int{1}) {
		t.Errorf("a fraction landed on %v, want GPU 1", got)
	}
	if got := s.Assign(2); got != nil {
		t.Errorf("two whole GPUs from one free and one withdrawn: %v", got)
	}
	if !slices.Equal(s.Busy(), []bool{true, true, false}) {
		t.Errorf("busy = %v", s.Busy())
	}
	if lost := s.Release(half, 0.5); lost != 0.5 {
		t.Errorf("release on a withdrawn GPU reported %v, want 0.5", lost)
	}
	if d := s.SetWithdrawn(0, false); d != 1 {
		t.Errorf("restoring a free GPU gives %v, want 1", d)
	}
	if got := s.Assign(2); !slices.Equal(got, []int{0, 2}) {
		t.Errorf("after restoring: %v, want [0 2]", got)
	}
}

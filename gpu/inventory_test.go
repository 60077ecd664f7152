package gpu

import (
	"errors"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh100"
)

func TestAcceleratorType(t *testing.T) {
	cases := map[string]string{
		"NVIDIA H100 80GB HBM3":         "H100",
		"NVIDIA A100-SXM4-40GB":         "A100",
		"Tesla V100-SXM2-16GB":          "V100",
		"NVIDIA H200":                   "H200",
		"NVIDIA GeForce RTX 4090":       "GeForce-RTX-4090",
		"NVIDIA RTX PRO 6000 Blackwell": "RTX-PRO-6000",
		"NVIDIA L4":                     "L4",
	}
	for name, want := range cases {
		if got := AcceleratorType(name); got != want {
			t.Errorf("AcceleratorType(%q) = %q, want %q", name, got, want)
		}
	}
}

func TestInventoryOfMockH100Machine(t *testing.T) {
	devs, err := Inventory(dgxh100.New())
	if err != nil {
		t.Fatal(err)
	}
	if len(devs) != 8 {
		t.Fatalf("got %d devices, want 8", len(devs))
	}
	seen := map[string]bool{}
	for i, d := range devs {
		if d.Index != i || d.AcceleratorType != "H100" || d.MemoryBytes == 0 || d.UUID == "" {
			t.Errorf("device %d: %+v", i, d)
		}
		if seen[d.UUID] {
			t.Errorf("duplicate uuid %s", d.UUID)
		}
		seen[d.UUID] = true
		if d.UtilizationPct != -1 {
			t.Errorf("the mock has no utilisation; want -1, got %d", d.UtilizationPct)
		}
	}
	res := Resources(devs)
	if res["GPU"] != 8 || res["accelerator_type:H100"] != 1 || len(res) != 2 {
		t.Errorf("resources = %v", res)
	}
}

func TestNoDriverMeansNoGPUs(t *testing.T) {
	lib := dgxh100.New()
	lib.InitFunc = func() nvml.Return { return nvml.ERROR_LIBRARY_NOT_FOUND }
	devs, err := Inventory(lib)
	if err != nil || devs != nil {
		t.Fatalf("got %v, %v; want no devices and no error", devs, err)
	}
	if Resources(devs) != nil {
		t.Error("no devices must give no resources")
	}
}

func TestBrokenNVMLIsAnError(t *testing.T) {
	lib := dgxh100.New()
	lib.DeviceGetCountFunc = func() (int, nvml.Return) { return 0, nvml.ERROR_UNKNOWN }
	if _, err := Inventory(lib); !errors.Is(err, ErrNVML) {
		t.Fatalf("err = %v, want ErrNVML", err)
	}
}

func TestUnknownMock(t *testing.T) {
	if _, err := DetectMock("dgx-nope"); !errors.Is(err, ErrUnknownMock) {
		t.Fatalf("err = %v", err)
	}
}

func TestSlotsPackFractionsAndWholeGPUs(t *testing.T) {
	s := NewSlots(2)
	a := s.Assign(0.5)
	b := s.Assign(0.5)
	if len(a) != 1 || len(b) != 1 || a[0] != b[0] {
		t.Fatalf("two halves should share a GPU: %v %v", a, b)
	}
	whole := s.Assign(1)
	if len(whole) != 1 || whole[0] == a[0] {
		t.Fatalf("whole GPU %v overlaps the shared one %v", whole, a)
	}
	if s.Assign(0.25) != nil {
		t.Fatal("nothing is free, assignment must fail")
	}
	s.Release(a, 0.5)
	if got := s.Assign(0.5); len(got) != 1 || got[0] != a[0] {
		t.Fatalf("freed half not reused: %v", got)
	}
	s.Release(whole, 1)
	if got := s.Assign(2); got != nil {
		t.Fatalf("two whole GPUs are not free, got %v", got)
	}
}

func TestSlotsRandomizedNeverOvercommit(t *testing.T) {
	s := NewSlots(4)
	type grant struct {
		ids    []int
		amount float64
	}
	var live []grant
	amounts := []float64{0.25, 0.5, 1, 2, 0.75, 3}
	for step := 0; step < 2000; step++ {
		if step%3 == 2 && len(live) > 0 {
			g := live[step%len(live)]
			live = append(live[:step%len(live)], live[step%len(live)+1:]...)
			s.Release(g.ids, g.amount)
		} else {
			amt := amounts[step%len(amounts)]
			if ids := s.Assign(amt); ids != nil {
				live = append(live, grant{ids, amt})
			}
		}
		used := make([]float64, 4)
		for _, g := range live {
			for _, id := range g.ids {
				if g.amount < 1 {
					used[id] += g.amount
				} else {
					used[id]++
				}
			}
		}
		for i, u := range used {
			if u > 1+1e-9 || s.free[i] < -1e-9 || abs(s.free[i]+u-1) > 1e-9 {
				t.Fatalf("step %d: gpu %d used %.2f free %.2f", step, i, u, s.free[i])
			}
		}
	}
}

func abs(f float64) float64 {
	if f < 0 {
		return -f
	}
	return f
}

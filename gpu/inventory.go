// Package gpu discovers a provider's NVIDIA GPUs through NVML and turns them
// into Ray resources (GPU, accelerator_type:<model>). It fails soft: with no
// driver the node simply has no GPUs.
package gpu

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxa100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxb200"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh200"
)

// ErrNVML wraps NVML failures other than a missing driver.
var ErrNVML = errors.New("nvml")

// Device is one GPU as the raylet offers it.
type Device struct {
	Index           int    `json:"index"`
	UUID            string `json:"uuid"`
	Name            string `json:"name"`
	AcceleratorType string `json:"accelerator_type"`
	MemoryBytes     uint64 `json:"memory_bytes"`
	MemoryUsedBytes uint64 `json:"memory_used_bytes"`
	PCIBusID        string `json:"pci_bus_id,omitempty"`
	MIGEnabled      bool   `json:"mig_enabled"`
	// UtilizationPct is -1 when NVML cannot report it.
	UtilizationPct int `json:"utilization_pct"`
	// Withdrawn is set when the GPU failed its last verification: the node
	// no longer offers it (Reason says why).
	Withdrawn bool   `json:"withdrawn,omitempty"`
	Reason    string `json:"reason,omitempty"`
}

// Detect reads the GPUs of this machine. No driver means no GPUs, not an error.
func Detect() ([]Device, error) {
	return Inventory(nvml.New())
}

// Inventory lists the devices an NVML implementation reports (the real
// library, or go-nvml's mock machines in tests).
func Inventory(lib nvml.Interface) (devs []Device, err error) {
	defer func() {
		if r := recover(); r != nil {
			devs, err = nil, fmt.Errorf("%w: %v", ErrNVML, r)
		}
	}()
	if ret := lib.Init(); ret != nvml.SUCCESS {
		if ret == nvml.ERROR_LIBRARY_NOT_FOUND || ret == nvml.ERROR_DRIVER_NOT_LOADED || ret == nvml.ERROR_NO_PERMISSION {
			return nil, nil
		}
		return nil, fmt.Errorf("%w: init: %v", ErrNVML, ret)
	}
	defer lib.Shutdown()
	return devices(lib)
}

// devices reads every device of an initialised NVML.
func devices(lib nvml.Interface) ([]Device, error) {
	var devs []Device
	n, ret := lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("%w: device count: %v", ErrNVML, ret)
	}
	for i := 0; i < n; i++ {
		d, ret := lib.DeviceGetHandleByIndex(i)
		if ret != nvml.SUCCESS {
			return nil, fmt.Errorf("%w: device %d: %v", ErrNVML, i, ret)
		}
		dev := Device{Index: i, UtilizationPct: -1}
		if name, ret := d.GetName(); ret == nvml.SUCCESS {
			dev.Name = name
			dev.AcceleratorType = AcceleratorType(name)
		}
		if uuid, ret := d.GetUUID(); ret == nvml.SUCCESS {
			dev.UUID = uuid
		}
		if mem, ret := d.GetMemoryInfo(); ret == nvml.SUCCESS {
			dev.MemoryBytes = mem.Total
			dev.MemoryUsedBytes = mem.Used
		}
		if pci, ret := d.GetPciInfo(); ret == nvml.SUCCESS {
			dev.PCIBusID = busID(pci.BusId)
		}
		if cur, _, ret := d.GetMigMode(); ret == nvml.SUCCESS {
			dev.MIGEnabled = cur == nvml.DEVICE_MIG_ENABLE
		}
		dev.UtilizationPct = utilization(d)
		devs = append(devs, dev)
	}
	return devs, nil
}

// utilization reads GPU utilisation; some NVML builds (and mocks) lack it.
func utilization(d nvml.Device) (pct int) {
	defer func() {
		if recover() != nil {
			pct = -1
		}
	}()
	u, ret := d.GetUtilizationRates()
	if ret != nvml.SUCCESS {
		return -1
	}
	return int(u.Gpu)
}

func busID(raw [32]int8) string {
	var b strings.Builder
	for _, c := range raw {
		if c == 0 {
			break
		}
		b.WriteByte(byte(c))
	}
	return b.String()
}

// modelPattern takes the first all-caps/digit model token after the vendor
// word: "NVIDIA H100 80GB HBM3" -> "H100", "Tesla V100-SXM2-16GB" -> "V100".
var modelPattern = regexp.MustCompile(`^\w+\s+((?:[A-Z]+\s+)*[A-Z0-9]*\d[A-Z0-9]*)`)

// AcceleratorType derives Ray's accelerator_type label from an NVML name,
// following the rule Ray applies to NVIDIA GPUs.
func AcceleratorType(name string) string {
	if m := modelPattern.FindStringSubmatch(name); m != nil && len(m[1]) > 1 {
		return strings.ReplaceAll(m[1], " ", "-")
	}
	cleaned := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(name), "NVIDIA "))
	return strings.ReplaceAll(cleaned, " ", "-")
}

// Resources are the Ray resources the devices provide.
func Resources(devs []Device) map[string]float64 {
	if len(devs) == 0 {
		return nil
	}
	out := map[string]float64{"GPU": float64(len(devs))}
	for _, d := range devs {
		if d.AcceleratorType != "" {
			out["accelerator_type:"+d.AcceleratorType] = 1
		}
	}
	return out
}

// Mock machines from go-nvml, for tests and demos without a GPU
// (`gray start --head --gpu-mock dgxh100`).
var mocks = map[string]func() nvml.Interface{
	"dgxa100": func() nvml.Interface { return dgxa100.New() },
	"dgxh100": func() nvml.Interface { return dgxh100.New() },
	"dgxh200": func() nvml.Interface { return dgxh200.New() },
	"dgxb200": func() nvml.Interface { return dgxb200.New() },
}

// ErrUnknownMock names a mock machine that does not exist.
var ErrUnknownMock = errors.New("unknown mock GPU machine")

// mockMachines keeps one instance of each mock machine per process, so that
// its GPUs keep their (random) UUIDs from one inventory to the next.
var mockMachines sync.Map // name -> nvml.Interface

// mockMachine returns the process's instance of a mock machine.
func mockMachine(name string) (nvml.Interface, error) {
	if lib, ok := mockMachines.Load(name); ok {
		return lib.(nvml.Interface), nil
	}
	mk, ok := mocks[name]
	if !ok {
		return nil, fmt.Errorf("%w %q (have dgxa100, dgxh100, dgxh200, dgxb200)", ErrUnknownMock, name)
	}
	lib, _ := mockMachines.LoadOrStore(name, mk())
	return lib.(nvml.Interface), nil
}

// DetectMock inventories one of go-nvml's mock machines.
func DetectMock(name string) ([]Device, error) {
	lib, err := mockMachine(name)
	if err != nil {
		return nil, err
	}
	return Inventory(lib)
}

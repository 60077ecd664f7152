package gpu

import (
	"fmt"
	"sync"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// Sampler reads the GPUs' live numbers (utilisation, memory in use) from
// NVML again and again, keeping the library initialised between samples.
// With no driver it samples nothing and reports no error.
type Sampler struct {
	mu     sync.Mutex
	lib    nvml.Interface
	inited bool
	absent bool
}

// NewSampler samples lib: nvml.New() for the machine's GPUs, or a go-nvml
// mock machine in tests.
func NewSampler(lib nvml.Interface) *Sampler { return &Sampler{lib: lib} }

// NewMockSampler samples one of go-nvml's mock machines by name.
func NewMockSampler(name string) (*Sampler, error) {
	lib, err := mockMachine(name)
	if err != nil {
		return nil, err
	}
	return NewSampler(lib), nil
}

// Sample lists the devices with their current utilisation and memory use.
// No driver gives no devices and no error.
func (s *Sampler) Sample() (devs []Device, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	defer func() {
		if r := recover(); r != nil {
			devs, err = nil, fmt.Errorf("%w: %v", ErrNVML, r)
		}
	}()
	if s.absent {
		return nil, nil
	}
	if !s.inited {
		if ret := s.lib.Init(); ret != nvml.SUCCESS {
			if ret == nvml.ERROR_LIBRARY_NOT_FOUND || ret == nvml.ERROR_DRIVER_NOT_LOADED || ret == nvml.ERROR_NO_PERMISSION {
				s.absent = true
				return nil, nil
			}
			return nil, fmt.Errorf("%w: init: %v", ErrNVML, ret)
		}
		s.inited = true
	}
	return devices(s.lib)
}

// Close shuts NVML down.
func (s *Sampler) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inited {
		s.lib.Shutdown()
		s.inited = false
	}
}

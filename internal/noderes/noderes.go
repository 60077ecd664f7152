// Package noderes works out the resources a node offers: CPUs, memory,
// object store memory and GPUs (NVML, a go-nvml mock machine, or a
// --num-gpus override), as `ray start` does.
package noderes

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/gray-cluster/gray/gpu"
	"github.com/gray-cluster/gray/gpu/verify"
	"github.com/gray-cluster/gray/gpu/watch"
)

// Options are the operator's overrides.
type Options struct {
	NumCPUs float64 // < 0: the machine's CPU count (0 offers none, as ray start --num-cpus 0)
	// NumGPUs overrides the detected GPU count when >= 0; -1 uses NVML.
	NumGPUs float64
	// GPUMock inventories one of go-nvml's mock machines instead of NVML.
	GPUMock           string
	Memory            float64 // <= 0: 70% of RAM
	ObjectStoreMemory int64   // <= 0: 30% of RAM
	Custom            map[string]float64
	// Verify runs the CUDA verification kernels on NVML's GPUs (not on a
	// mock machine unless Checker is set): only the GPUs that pass are
	// offered.
	Verify bool
	// Checker verifies the GPUs (nil: the CUDA driver); tests fake it.
	Checker verify.Checker
	// VerifyEvery is how often the GPUs are verified again while the node
	// runs (0: only at start); SampleEvery how often NVML is read for live
	// utilisation and memory (0: never).
	VerifyEvery, SampleEvery time.Duration
	// VerifyTick and SampleTick, when set, drive the watcher instead of the
	// intervals (tests).
	VerifyTick, SampleTick <-chan time.Time
}

// Report is what Detect found besides resources.
type Report struct {
	GPUs []gpu.Device
	// Labels are node labels from GPU verification (gray.io/gpu-*).
	Labels map[string]string
	// Watch keeps the GPUs verified and sampled while the node runs; nil
	// when the node offers no GPUs. Its Base are the resources with every
	// GPU (the raylet's GPU slots): the raylet is built with them and then
	// given Watch.Status().Off, as DetectVerified leaves failed GPUs out.
	Watch *watch.Watcher
}

// Detect returns the node's resources and its GPUs.
func Detect(o Options, log *slog.Logger) (map[string]float64, []gpu.Device, error) {
	res, rep, err := DetectVerified(context.Background(), o, log)
	return res, rep.GPUs, err
}

// DetectVerified is Detect plus GPU verification when o.Verify is set: a
// GPU that fails is left out of the resources (and marked in the report's
// watcher, which re-verifies it later).
func DetectVerified(ctx context.Context, o Options, log *slog.Logger) (map[string]float64, Report, error) {
	res, devs, err := detect(o, log)
	rep := Report{GPUs: devs}
	if err != nil || len(devs) == 0 || res["GPU"] == 0 {
		return res, rep, err
	}
	cfg := watch.Config{Base: res, Devices: devs, VerifyEvery: o.VerifyEvery, SampleEvery: o.SampleEvery,
		VerifyTick: o.VerifyTick, SampleTick: o.SampleTick, Logger: log}
	if o.GPUMock != "" {
		s, err := gpu.NewMockSampler(o.GPUMock)
		if err != nil {
			return nil, rep, err
		}
		cfg.Sample = s.Sample
	} else {
		cfg.Sample = gpu.NewSampler(nvml.New()).Sample
	}
	if o.Verify && (o.GPUMock == "" || o.Checker != nil) {
		cfg.Checker = o.Checker
		if cfg.Checker == nil {
			cfg.Checker = verify.DriverChecker{}
		}
	}
	rep.Watch = watch.New(cfg)
	if cfg.Checker == nil {
		return res, rep, nil
	}
	st, _ := rep.Watch.Verify(ctx, nil)
	rep.Labels = st.Labels
	if st.Total["GPU"] > 0 {
		log.Info("GPUs verified", "offered", st.Total["GPU"], "labels", st.Labels)
	}
	return st.Total, rep, nil
}

func dropGPUs(res map[string]float64) {
	for k := range res {
		if k == "GPU" || strings.HasPrefix(k, "accelerator_type:") {
			delete(res, k)
		}
	}
}

func detect(o Options, log *slog.Logger) (map[string]float64, []gpu.Device, error) {
	if o.NumCPUs < 0 {
		o.NumCPUs = float64(runtime.NumCPU())
	}
	if o.Memory <= 0 {
		o.Memory = float64(TotalMemory()) * 0.7
	}
	if o.ObjectStoreMemory <= 0 {
		o.ObjectStoreMemory = DefaultObjectStoreMemory()
	}
	res := map[string]float64{
		"CPU": o.NumCPUs, "memory": o.Memory, "object_store_memory": float64(o.ObjectStoreMemory),
	}
	var devs []gpu.Device
	var err error
	if o.GPUMock != "" {
		if devs, err = gpu.DetectMock(o.GPUMock); err != nil {
			return nil, nil, err
		}
	} else if o.NumGPUs != 0 {
		if devs, err = gpu.Detect(); err != nil {
			log.Warn("GPU detection failed; offering no GPUs", "err", err)
			devs = nil
		}
	}
	for k, v := range gpu.Resources(devs) {
		res[k] = v
	}
	if o.NumGPUs == 0 {
		dropGPUs(res)
	} else if o.NumGPUs > 0 {
		res["GPU"] = o.NumGPUs
	}
	if res["GPU"] > 0 {
		log.Info("GPUs offered", "count", res["GPU"], "devices", len(devs))
	}
	for k, v := range o.Custom {
		res[k] = v
	}
	return res, devs, nil
}

// Summary names a node's GPUs briefly, like "8xH100".
func Summary(devs []gpu.Device) string {
	if len(devs) == 0 {
		return ""
	}
	return fmt.Sprintf("%dx%s", len(devs), gpu.AcceleratorType(devs[0].Name))
}

// TotalMemory is the machine's RAM in bytes.
func TotalMemory() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err == nil {
		var kb int64
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "MemTotal:") {
				fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(line, "MemTotal:")), "%d", &kb)
				return kb * 1024
			}
		}
	}
	return 8 << 30
}

// DefaultObjectStoreMemory follows Ray: 30% of memory.
func DefaultObjectStoreMemory() int64 { return TotalMemory() * 3 / 10 }

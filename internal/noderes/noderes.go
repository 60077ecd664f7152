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

	"github.com/gray-cluster/gray/gpu"
	"github.com/gray-cluster/gray/gpu/verify"
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
	// mock machine): GPUs are offered only if every one passes.
	Verify bool
}

// Report is what Detect found besides resources.
type Report struct {
	GPUs []gpu.Device
	// Labels are node labels from GPU verification (gray.io/gpu-*).
	Labels map[string]string
}

// Detect returns the node's resources and its GPUs.
func Detect(o Options, log *slog.Logger) (map[string]float64, []gpu.Device, error) {
	res, rep, err := DetectVerified(context.Background(), o, log)
	return res, rep.GPUs, err
}

// DetectVerified is Detect plus GPU verification when o.Verify is set.
func DetectVerified(ctx context.Context, o Options, log *slog.Logger) (map[string]float64, Report, error) {
	res, devs, err := detect(o, log)
	rep := Report{GPUs: devs}
	if err != nil || !o.Verify || o.GPUMock != "" || len(devs) == 0 || res["GPU"] == 0 {
		return res, rep, err
	}
	d, err := verify.Open()
	if err != nil {
		log.Warn("GPUs found by NVML cannot be verified through CUDA; not offering them", "err", err)
		rep.Labels = map[string]string{"gray.io/gpu-verified": "false"}
		dropGPUs(res)
		return res, rep, nil
	}
	results, err := d.VerifyAll(ctx, verify.Options{})
	rep.Labels = verify.Labels(results)
	if err != nil {
		log.Warn("GPU verification failed; not offering GPUs", "err", err)
		dropGPUs(res)
		return res, rep, nil
	}
	for _, r := range results {
		log.Info("GPU verified", "index", r.Index, "model", r.Model, "fp32_tflops", r.FP32TFLOPS, "bandwidth_gbs", r.BandwidthGBs, "took", r.Duration)
	}
	return res, rep, nil
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

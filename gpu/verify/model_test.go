package verify_test

import (
	"testing"

	"github.com/gray-cluster/gray/gpu"
	"github.com/gray-cluster/gray/gpu/verify"
)

// Model must name a GPU exactly as the NVML inventory (and so the
// accelerator_type resource) does, or a claim would never match.
func TestModelMatchesAcceleratorType(t *testing.T) {
	for _, name := range []string{
		"NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe", "NVIDIA H100 NVL", "NVIDIA H200", "NVIDIA H200 NVL",
		"NVIDIA GH200 480GB", "NVIDIA B200", "NVIDIA A100-SXM4-40GB", "NVIDIA A100 80GB PCIe",
		"NVIDIA A10", "NVIDIA A10G", "NVIDIA A40", "NVIDIA L4", "NVIDIA L40", "NVIDIA L40S",
		"Tesla T4", "Tesla V100-SXM2-16GB", "NVIDIA RTX A6000", "NVIDIA RTX 6000 Ada Generation",
		"NVIDIA RTX PRO 6000 Blackwell Server Edition", "NVIDIA GeForce RTX 3090",
		"NVIDIA GeForce RTX 4090", "NVIDIA GeForce RTX 5090", "",
	} {
		if got, want := verify.Model(name), gpu.AcceleratorType(name); got != want {
			t.Errorf("Model(%q) = %q, gpu.AcceleratorType = %q", name, got, want)
		}
	}
	// The table's keys are what those names produce.
	for name, key := range map[string]string{
		"NVIDIA H100 80GB HBM3": "H100", "NVIDIA H200": "H200", "NVIDIA A100-SXM4-80GB": "A100",
		"NVIDIA L4": "L4", "NVIDIA L40S": "L40S", "NVIDIA A10G": "A10G", "Tesla T4": "T4",
		"NVIDIA GeForce RTX 4090": "GeForce-RTX-4090", "NVIDIA RTX 6000 Ada Generation": "RTX-6000",
		"NVIDIA RTX A6000": "RTX-A6000", "NVIDIA RTX PRO 6000 Blackwell Workstation Edition": "RTX-PRO-6000",
		"NVIDIA B200": "B200", "NVIDIA GH200 480GB": "GH200",
	} {
		if m := verify.Model(name); m != key {
			t.Errorf("Model(%q) = %q, want %q", name, m, key)
		}
		if _, ok := verify.Expectations[key]; !ok {
			t.Errorf("no expectation for %s", key)
		}
	}
}

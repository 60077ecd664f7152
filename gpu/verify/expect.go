package verify

import (
	"fmt"
	"log/slog"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// modelPattern and Model repeat gpu.AcceleratorType (gpu/inventory.go) so
// that this package stays free of go-nvml's cgo; a test keeps them in step.
var modelPattern = regexp.MustCompile(`^\w+\s+((?:[A-Z]+\s+)*[A-Z0-9]*\d[A-Z0-9]*)`)

// Model is the accelerator type Ray (and gray's NVML inventory) derives from
// a device name: "NVIDIA H100 80GB HBM3" -> "H100".
func Model(name string) string {
	if m := modelPattern.FindStringSubmatch(name); m != nil && len(m[1]) > 1 {
		return strings.ReplaceAll(m[1], " ", "-")
	}
	cleaned := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(name), "NVIDIA "))
	return strings.ReplaceAll(cleaned, " ", "-")
}

// Expectation is what a model's spec sheets promise, over every variant
// sold under that accelerator type (SXM, PCIe, NVL, ...): the Low numbers
// are the slowest variant's, the High ones the fastest's. FP32 is the
// non-tensor (CUDA core) FP32 peak at boost clock; bandwidth is the
// memory's peak in GB/s.
type Expectation struct {
	CC            string  // compute capability, "9.0"
	FP32Low       float64 // TFLOP/s
	FP32High      float64
	BandwidthLow  float64 // GB/s
	BandwidthHigh float64
	MinMemoryGiB  float64 // below every variant's memory as cuDeviceTotalMem reports it, ECC on
}

// Floors and ceilings, as fractions of the spec numbers.
const (
	// FloorFraction: a measured number below this share of the slowest
	// variant's spec is a mismatch. A healthy GPU reaches 85-95% of peak
	// FP32 with gray_fma and 75-90% of peak bandwidth with a copy; 40%
	// leaves room for power capping, clocks still ramping and MIG-less
	// sharing, while a GPU of the generation below still fails.
	FloorFraction = 0.40
	// CeilingFraction: a number above this multiple of the fastest
	// variant's spec cannot be real (a timer or kernel fault).
	CeilingFraction = 1.5
)

// Expectations, by Model(name). Sources: NVIDIA's product datasheets
// (FP32 = "FP32" / "single-precision" row, not TF32 tensor; bandwidth =
// "GPU memory bandwidth"); for GeForce cards, NVIDIA's spec pages with the
// FP32 figure from cores x 2 x boost clock (the same value TechPowerUp's
// database lists).
var Expectations = map[string]Expectation{
	// H100 SXM5 80GB: 67 TFLOPS, 3.35 TB/s; H100 PCIe 80GB: 51 TFLOPS,
	// 2.0 TB/s; H100 NVL 94GB: 60 TFLOPS, 3.9 TB/s (H100 datasheet).
	"H100": {CC: "9.0", FP32Low: 51, FP32High: 67, BandwidthLow: 2000, BandwidthHigh: 3900, MinMemoryGiB: 60},
	// H200 SXM 141GB: 67 TFLOPS, 4.8 TB/s; H200 NVL: 60 TFLOPS, 4.8 TB/s
	// (H200 datasheet).
	"H200": {CC: "9.0", FP32Low: 60, FP32High: 67, BandwidthLow: 4800, BandwidthHigh: 4800, MinMemoryGiB: 120},
	// GH200 Grace Hopper: 67 TFLOPS; 96GB HBM3 4.0 TB/s, 144GB HBM3e
	// 4.9 TB/s (GH200 datasheet).
	"GH200": {CC: "9.0", FP32Low: 67, FP32High: 67, BandwidthLow: 4000, BandwidthHigh: 4900, MinMemoryGiB: 85},
	// HGX B200: FP32 80 TFLOPS at 1000 W, 8 TB/s (HGX B200 spec); 148 SMs
	// x 128 x 2 x 1.98 GHz = 75 TFLOPS, taken as the low end.
	"B200": {CC: "10.0", FP32Low: 75, FP32High: 80, BandwidthLow: 7700, BandwidthHigh: 8000, MinMemoryGiB: 160},
	// A100 40GB PCIe: 19.5 TFLOPS, 1,555 GB/s; A100 80GB SXM: 19.5 TFLOPS,
	// 2,039 GB/s (A100 datasheet).
	"A100": {CC: "8.0", FP32Low: 19.5, FP32High: 19.5, BandwidthLow: 1555, BandwidthHigh: 2039, MinMemoryGiB: 36},
	// A10: 31.2 TFLOPS, 600 GB/s (A10 datasheet); A10G (AWS G5) is the same
	// GA102 part at 31.2 TFLOPS, 600 GB/s.
	"A10":  {CC: "8.6", FP32Low: 31.2, FP32High: 31.2, BandwidthLow: 600, BandwidthHigh: 600, MinMemoryGiB: 20},
	"A10G": {CC: "8.6", FP32Low: 31.2, FP32High: 31.2, BandwidthLow: 600, BandwidthHigh: 600, MinMemoryGiB: 20},
	// A40: 37.4 TFLOPS, 696 GB/s (A40 datasheet).
	"A40": {CC: "8.6", FP32Low: 37.4, FP32High: 37.4, BandwidthLow: 696, BandwidthHigh: 696, MinMemoryGiB: 40},
	// L4: 30.3 TFLOPS, 300 GB/s (L4 datasheet).
	"L4": {CC: "8.9", FP32Low: 30.3, FP32High: 30.3, BandwidthLow: 300, BandwidthHigh: 300, MinMemoryGiB: 20},
	// L40: 90.5 TFLOPS, 864 GB/s; L40S: 91.6 TFLOPS, 864 GB/s (datasheets).
	"L40":  {CC: "8.9", FP32Low: 90.5, FP32High: 90.5, BandwidthLow: 864, BandwidthHigh: 864, MinMemoryGiB: 40},
	"L40S": {CC: "8.9", FP32Low: 91.6, FP32High: 91.6, BandwidthLow: 864, BandwidthHigh: 864, MinMemoryGiB: 40},
	// T4: 8.1 TFLOPS, 320 GB/s (T4 datasheet).
	"T4": {CC: "7.5", FP32Low: 8.1, FP32High: 8.1, BandwidthLow: 320, BandwidthHigh: 320, MinMemoryGiB: 14},
	// V100 PCIe: 14 TFLOPS, V100 SXM2: 15.7 TFLOPS, both 900 GB/s (V100
	// datasheet). CUDA 13 toolkits no longer target Volta; R580 drivers still
	// run it (and JIT this package's PTX for it).
	"V100": {CC: "7.0", FP32Low: 14, FP32High: 15.7, BandwidthLow: 900, BandwidthHigh: 900, MinMemoryGiB: 14},
	// RTX A6000: 38.7 TFLOPS, 768 GB/s (datasheet).
	"RTX-A6000": {CC: "8.6", FP32Low: 38.7, FP32High: 38.7, BandwidthLow: 768, BandwidthHigh: 768, MinMemoryGiB: 40},
	// RTX 6000 Ada Generation: 91.1 TFLOPS, 960 GB/s (datasheet).
	"RTX-6000": {CC: "8.9", FP32Low: 91.1, FP32High: 91.1, BandwidthLow: 960, BandwidthHigh: 960, MinMemoryGiB: 40},
	// RTX PRO 6000 Blackwell: Workstation 125 TFLOPS, Server 120 TFLOPS,
	// 1,792 GB/s (datasheets); the 300 W Max-Q edition clocks lower, so the
	// low end is an estimate (110).
	"RTX-PRO-6000": {CC: "12.0", FP32Low: 110, FP32High: 126, BandwidthLow: 1792, BandwidthHigh: 1792, MinMemoryGiB: 84},
	// GeForce RTX 3090: 10,496 cores x 2 x 1.695 GHz = 35.6 TFLOPS, 936 GB/s.
	"GeForce-RTX-3090": {CC: "8.6", FP32Low: 35.6, FP32High: 35.6, BandwidthLow: 936, BandwidthHigh: 936, MinMemoryGiB: 20},
	// GeForce RTX 4090: 16,384 cores x 2 x 2.52 GHz = 82.6 TFLOPS, 1,008 GB/s.
	"GeForce-RTX-4090": {CC: "8.9", FP32Low: 82.6, FP32High: 82.6, BandwidthLow: 1008, BandwidthHigh: 1008, MinMemoryGiB: 20},
	// GeForce RTX 5090: 21,760 cores x 2 x 2.41 GHz = 104.8 TFLOPS, 1,792 GB/s.
	"GeForce-RTX-5090": {CC: "12.0", FP32Low: 104.8, FP32High: 104.8, BandwidthLow: 1792, BandwidthHigh: 1792, MinMemoryGiB: 28},
}

// Check compares a result with the claimed model's expectation: the compute
// capability must match, memory must reach the minimum, and (unless r.Quick)
// FP32 and bandwidth must lie between FloorFraction of the slowest variant
// and CeilingFraction of the fastest. A failure wraps ErrMismatch. An
// unknown model passes (logged): there is nothing to hold it to. Pure apart
// from that log line.
func Check(model string, r Result) error {
	e, ok := Expectations[model]
	if !ok {
		slog.Debug("gpu model has no expectation; numbers not checked", "model", model, "name", r.Name)
		return nil
	}
	var bad []string
	if r.CC != e.CC {
		bad = append(bad, fmt.Sprintf("compute capability %s, %s has %s", r.CC, model, e.CC))
	}
	if gib := float64(r.MemoryBytes) / (1 << 30); gib < e.MinMemoryGiB {
		bad = append(bad, fmt.Sprintf("%.1f GiB of memory, %s has at least %.0f", gib, model, e.MinMemoryGiB))
	}
	if !r.Quick {
		bad = append(bad, bounds("FP32", "TFLOP/s", r.FP32TFLOPS, e.FP32Low, e.FP32High, model)...)
		bad = append(bad, bounds("bandwidth", "GB/s", r.BandwidthGBs, e.BandwidthLow, e.BandwidthHigh, model)...)
	}
	if len(bad) > 0 {
		return fmt.Errorf("%w %s: %s", ErrMismatch, model, strings.Join(bad, "; "))
	}
	return nil
}

func bounds(what, unit string, got, low, high float64, model string) []string {
	switch {
	case math.IsNaN(got) || got < FloorFraction*low:
		return []string{fmt.Sprintf("%s %.1f %s, below %.1f (%.0f%% of %s's %.1f)", what, got, unit, FloorFraction*low, 100*FloorFraction, model, low)}
	case got > CeilingFraction*high:
		return []string{fmt.Sprintf("%s %.1f %s, above %.1f: implausible for %s", what, got, unit, CeilingFraction*high, model)}
	}
	return nil
}

// Node label keys Labels sets.
const (
	LabelVerified     = "gray.io/gpu-verified"       // "true" when every GPU passed
	LabelModel        = "gray.io/gpu-model"          // e.g. "H100"; "A100_H100" when mixed
	LabelCount        = "gray.io/gpu-verified-count" // GPUs that passed (and are offered)
	LabelFP32TFLOPS   = "gray.io/gpu-fp32-tflops"    // lowest of the passed GPUs, whole TFLOP/s
	LabelBandwidthGBs = "gray.io/gpu-bandwidth-gbs"  // lowest of the passed GPUs, whole GB/s
)

// Labels summarises a node's results as node labels. The numbers are the
// minimum over the GPUs that passed (so a selector on them holds for every
// GPU offered), rounded down to integers; model is that of the passed GPUs.
// No results give no labels. Values are valid Kubernetes label values.
func Labels(rs []Result) map[string]string {
	if len(rs) == 0 {
		return nil
	}
	all := true
	passed := 0
	fp32, bw := math.Inf(1), math.Inf(1)
	quick := false
	models := map[string]bool{}
	for _, r := range rs {
		if !r.Passed {
			all = false
			continue
		}
		passed++
		models[labelValue(r.Model)] = true
		if r.Quick {
			quick = true
			continue
		}
		fp32 = math.Min(fp32, r.FP32TFLOPS)
		bw = math.Min(bw, r.BandwidthGBs)
	}
	out := map[string]string{
		LabelVerified: strconv.FormatBool(all),
		LabelCount:    strconv.Itoa(passed),
	}
	if passed == 0 {
		return out
	}
	var names []string
	for m := range models {
		if m != "" {
			names = append(names, m)
		}
	}
	sort.Strings(names)
	if v := labelValue(strings.Join(names, "_")); v != "" {
		out[LabelModel] = v
	}
	if !quick && !math.IsInf(fp32, 1) {
		out[LabelFP32TFLOPS] = strconv.Itoa(int(math.Floor(fp32)))
		out[LabelBandwidthGBs] = strconv.Itoa(int(math.Floor(bw)))
	}
	return out
}

// labelValue makes s a valid Kubernetes label value: at most 63 of
// [A-Za-z0-9._-], starting and ending alphanumeric.
func labelValue(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			b[i] = '-'
		}
	}
	if len(b) > 63 {
		b = b[:63]
	}
	return strings.TrimFunc(string(b), func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9')
	})
}

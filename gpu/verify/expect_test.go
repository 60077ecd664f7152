package verify

import (
	"errors"
	"maps"
	"regexp"
	"strings"
	"testing"
)

const gib = 1 << 30

// h100 is what an H100 SXM measured like (about 60 TFLOP/s, 2.9 TB/s copy).
func h100() Result {
	return Result{Name: "NVIDIA H100 80GB HBM3", Model: "H100", CC: "9.0", MemoryBytes: 79 * gib,
		Passed: true, FP32TFLOPS: 59.8, BandwidthGBs: 2904.6}
}

func TestCheck(t *testing.T) {
	with := func(f func(*Result)) Result { r := h100(); f(&r); return r }
	cases := []struct {
		name  string
		model string
		r     Result
		want  string // "" = passes; else a substring of the ErrMismatch error
	}{
		{"healthy H100", "H100", h100(), ""},
		{"H100 PCIe numbers still pass", "H100", with(func(r *Result) { r.FP32TFLOPS, r.BandwidthGBs = 45, 1600 }), ""},
		{"just above the floor", "H100", with(func(r *Result) { r.FP32TFLOPS, r.BandwidthGBs = 20.5, 801 }), ""},
		{"just below the floor", "H100", with(func(r *Result) { r.FP32TFLOPS = 20.3 }), "FP32 20.3 TFLOP/s, below 20.4 (40% of H100's 51.0)"},
		{"A100 numbers claiming H100", "H100", with(func(r *Result) { r.FP32TFLOPS, r.BandwidthGBs = 18.5, 1500 }), "FP32 18.5"},
		{"slow memory", "H100", with(func(r *Result) { r.BandwidthGBs = 500 }), "bandwidth 500.0 GB/s, below 800.0"},
		{"wrong architecture", "H100", with(func(r *Result) { r.CC = "8.0" }), "compute capability 8.0, H100 has 9.0"},
		{"too little memory", "H100", with(func(r *Result) { r.MemoryBytes = 40 * gib }), "40.0 GiB of memory"},
		{"implausibly fast", "H100", with(func(r *Result) { r.FP32TFLOPS = 400 }), "implausible"},
		{"NaN", "H100", with(func(r *Result) { r.BandwidthGBs = nan() }), "bandwidth NaN"},
		{"H200 claim with H100 bandwidth", "H200", with(func(r *Result) { r.MemoryBytes = 140 * gib }), ""},
		{"H200 claim with half its bandwidth", "H200", with(func(r *Result) { r.MemoryBytes, r.BandwidthGBs = 140*gib, 1800 }), "bandwidth 1800.0"},
		{"H200 claim with H100 memory", "H200", h100(), "79.0 GiB of memory"},
		{"quick result skips the numbers", "H100", with(func(r *Result) { r.Quick, r.FP32TFLOPS, r.BandwidthGBs = true, 0, 0 }), ""},
		{"quick result still checks cc", "H100", with(func(r *Result) { r.Quick, r.CC = true, "8.9" }), "compute capability"},
		{"L4", "L4", Result{CC: "8.9", MemoryBytes: 22 * gib, FP32TFLOPS: 24, BandwidthGBs: 250}, ""},
		{"L4 claim, T4 numbers", "L4", Result{CC: "7.5", MemoryBytes: 15 * gib, FP32TFLOPS: 7.5, BandwidthGBs: 240}, "compute capability 7.5"},
		{"RTX 4090", "GeForce-RTX-4090", Result{CC: "8.9", MemoryBytes: 23 * gib, FP32TFLOPS: 76, BandwidthGBs: 920}, ""},
		{"RTX 3090 claiming 4090", "GeForce-RTX-4090", Result{CC: "8.6", MemoryBytes: 23 * gib, FP32TFLOPS: 31, BandwidthGBs: 850}, "FP32 31.0"},
		{"A100 40GB", "A100", Result{CC: "8.0", MemoryBytes: 39 * gib, FP32TFLOPS: 18.9, BandwidthGBs: 1300}, ""},
		{"unknown model passes", "H20", Result{CC: "9.0", FP32TFLOPS: 1, BandwidthGBs: 1}, ""},
		{"empty model passes", "", Result{}, ""},
	}
	for _, c := range cases {
		err := Check(c.model, c.r)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.want != "" && (!errors.Is(err, ErrMismatch) || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: got %v, want ErrMismatch containing %q", c.name, err, c.want)
		}
	}
}

func nan() float64 { var z float64; return z / z }

func TestExpectationsAreSane(t *testing.T) {
	cc := regexp.MustCompile(`^\d+\.\d$`)
	for m, e := range Expectations {
		if !cc.MatchString(e.CC) || e.FP32Low <= 0 || e.FP32Low > e.FP32High || e.BandwidthLow <= 0 ||
			e.BandwidthLow > e.BandwidthHigh || e.MinMemoryGiB <= 0 || labelValue(m) != m {
			t.Errorf("%s: %+v", m, e)
		}
		// A spec-sheet GPU running at 85% passes its own model.
		r := Result{CC: e.CC, MemoryBytes: uint64(e.MinMemoryGiB+1) * gib, FP32TFLOPS: 0.85 * e.FP32Low, BandwidthGBs: 0.85 * e.BandwidthLow}
		if err := Check(m, r); err != nil {
			t.Errorf("%s at 85%% of spec: %v", m, err)
		}
	}
}

func TestLabels(t *testing.T) {
	h := h100()
	a := Result{Model: "A100", Passed: true, FP32TFLOPS: 18.7, BandwidthGBs: 1702.9}
	failed := h
	failed.Passed, failed.Reason = false, "kernel result mismatch"
	quick := h
	quick.Quick, quick.FP32TFLOPS, quick.BandwidthGBs = true, 0, 0
	slower := h
	slower.FP32TFLOPS, slower.BandwidthGBs = 51.9, 2650

	cases := []struct {
		name string
		rs   []Result
		want map[string]string
	}{
		{"none", nil, nil},
		{"one H100", []Result{h}, map[string]string{
			LabelVerified: "true", LabelCount: "1", LabelModel: "H100", LabelFP32TFLOPS: "59", LabelBandwidthGBs: "2904"}},
		{"minimum of the passed GPUs", []Result{h, slower}, map[string]string{
			LabelVerified: "true", LabelCount: "2", LabelModel: "H100", LabelFP32TFLOPS: "51", LabelBandwidthGBs: "2650"}},
		{"a failed GPU is not counted", []Result{h, failed}, map[string]string{
			LabelVerified: "false", LabelCount: "1", LabelModel: "H100", LabelFP32TFLOPS: "59", LabelBandwidthGBs: "2904"}},
		{"all failed", []Result{failed}, map[string]string{LabelVerified: "false", LabelCount: "0"}},
		{"mixed models", []Result{h, a}, map[string]string{
			LabelVerified: "true", LabelCount: "2", LabelModel: "A100_H100", LabelFP32TFLOPS: "18", LabelBandwidthGBs: "1702"}},
		{"quick results carry no numbers", []Result{quick}, map[string]string{
			LabelVerified: "true", LabelCount: "1", LabelModel: "H100"}},
	}
	valid := regexp.MustCompile(`^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$`)
	for _, c := range cases {
		got := Labels(c.rs)
		if !maps.Equal(got, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, got, c.want)
		}
		for k, v := range got {
			if !valid.MatchString(v) || !strings.HasPrefix(k, "gray.io/gpu-") {
				t.Errorf("%s: bad label %s=%q", c.name, k, v)
			}
		}
	}
}

func TestLabelValue(t *testing.T) {
	for in, want := range map[string]string{
		"H100":                  "H100",
		"GeForce-RTX-4090":      "GeForce-RTX-4090",
		"weird name (rev 2)":    "weird-name--rev-2",
		"-x-":                   "x",
		strings.Repeat("a", 70): strings.Repeat("a", 63),
		"":                      "",
	} {
		if got := labelValue(in); got != want {
			t.Errorf("labelValue(%q) = %q, want %q", in, got, want)
		}
	}
}

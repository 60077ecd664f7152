package watch

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"

	"github.com/gray-cluster/gray/gpu"
	"github.com/gray-cluster/gray/gpu/verify"
)

// fakeChecker passes every GPU of an 8-GPU H100 machine except those
// marked bad; it records the options it was asked with.
type fakeChecker struct {
	mu    sync.Mutex
	n     int
	bad   map[int]string
	err   error
	uuids []string // by index, as NVML shows them
	asked []verify.Options
}

func (f *fakeChecker) set(n int, bad map[int]string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n, f.bad, f.err = n, bad, err
}

func (f *fakeChecker) Check(_ context.Context, opts func(int) verify.Options) ([]verify.Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	f.asked = f.asked[:0]
	out := make([]verify.Result, f.n)
	for i := range out {
		o := opts(i)
		f.asked = append(f.asked, o)
		r := verify.Result{Index: i, Name: "NVIDIA H100 80GB HBM3", Model: "H100",
			Passed: true, FP32TFLOPS: 60, BandwidthGBs: 3000, Quick: o.CorrectnessOnly}
		if i < len(f.uuids) {
			r.UUID = f.uuids[i]
		}
		if o.CorrectnessOnly {
			r.FP32TFLOPS, r.BandwidthGBs = 0, 0
		}
		if reason, ok := f.bad[i]; ok {
			r.Passed, r.Reason = false, reason
		}
		out[i] = r
	}
	return out, nil
}

func h100Watcher(t *testing.T, c verify.Checker, cfg Config) *Watcher {
	t.Helper()
	devs, err := gpu.Inventory(dgxh100.New())
	if err != nil {
		t.Fatal(err)
	}
	base := map[string]float64{"CPU": 8}
	for k, v := range gpu.Resources(devs) {
		base[k] = v
	}
	cfg.Base, cfg.Devices = base, devs
	if fc, ok := c.(*fakeChecker); ok {
		for _, d := range devs {
			fc.uuids = append(fc.uuids, d.UUID)
		}
	}
	if c != nil {
		cfg.Checker = c
	}
	return New(cfg)
}

func TestPassFailPassWithdrawsAndRestores(t *testing.T) {
	ctx := context.Background()
	fc := &fakeChecker{n: 8}
	w := h100Watcher(t, fc, Config{})

	st, changed := w.Verify(ctx, nil)
	if changed || st.Total["GPU"] != 8 || st.Total["accelerator_type:H100"] != 1 || st.Labels[verify.LabelVerified] != "true" {
		t.Fatalf("all pass: changed=%v status=%+v", changed, st)
	}

	fc.set(8, map[int]string{3: "kernel result mismatch: gray_hash: 12 of 1048576 words wrong"}, nil)
	st, changed = w.Verify(ctx, nil)
	if !changed || st.Total["GPU"] != 7 || st.Total["accelerator_type:H100"] != 1 || !st.Off[3] {
		t.Fatalf("GPU 3 fails: changed=%v total=%v off=%v", changed, st.Total, st.Off)
	}
	if st.Labels[verify.LabelVerified] != "false" || st.Labels[verify.LabelCount] != "7" {
		t.Errorf("labels = %v", st.Labels)
	}
	var marked []int
	for _, d := range st.Devices {
		if d.Withdrawn {
			marked = append(marked, d.Index)
		}
	}
	if len(marked) != 1 || marked[0] != 3 {
		t.Errorf("withdrawn devices = %v, want [3]", marked)
	}

	// Failing again changes nothing.
	if _, changed = w.Verify(ctx, nil); changed {
		t.Error("a second failure reported a change")
	}

	fc.set(8, nil, nil)
	st, changed = w.Verify(ctx, nil)
	if !changed || st.Total["GPU"] != 8 || st.Off[3] || st.Labels[verify.LabelVerified] != "true" {
		t.Fatalf("GPU 3 passes again: changed=%v status=%+v", changed, st)
	}
	for _, d := range st.Devices {
		if d.Withdrawn {
			t.Errorf("device %d still withdrawn", d.Index)
		}
	}
}

func TestDeviceGoneAndNoDriver(t *testing.T) {
	ctx := context.Background()
	fc := &fakeChecker{n: 8}
	w := h100Watcher(t, fc, Config{})
	w.Verify(ctx, nil)

	fc.set(6, nil, nil)
	st, changed := w.Verify(ctx, nil)
	if !changed || st.Total["GPU"] != 6 || !st.Off[6] || !st.Off[7] {
		t.Fatalf("two devices gone: %+v", st)
	}

	fc.set(0, nil, verify.ErrNoDriver)
	st, _ = w.Verify(ctx, nil)
	if _, ok := st.Total["GPU"]; ok {
		t.Errorf("no driver: GPU still offered: %v", st.Total)
	}
	if _, ok := st.Total["accelerator_type:H100"]; ok {
		t.Errorf("no driver: accelerator type still offered: %v", st.Total)
	}
	if st.Total["CPU"] != 8 {
		t.Errorf("CPU must stay: %v", st.Total)
	}
}

func TestBusyGPUsGetTheQuickCheckAndKeepTheirNumbers(t *testing.T) {
	ctx := context.Background()
	fc := &fakeChecker{n: 8}
	w := h100Watcher(t, fc, Config{})
	st, _ := w.Verify(ctx, nil)
	want := st.Labels[verify.LabelFP32TFLOPS]
	if want == "" {
		t.Fatalf("no TFLOP/s label after a full check: %v", st.Labels)
	}
	busy := make([]bool, 8)
	busy[2] = true
	st, _ = w.Verify(ctx, func() []bool { return busy })
	if !fc.asked[2].CorrectnessOnly || fc.asked[1].CorrectnessOnly {
		t.Errorf("options = %+v", fc.asked)
	}
	if fc.asked[2].Claim != "H100" {
		t.Errorf("claim = %q, want the model first verified", fc.asked[2].Claim)
	}
	if st.Labels[verify.LabelFP32TFLOPS] != want {
		t.Errorf("a busy GPU's quick check lost the numbers: %v", st.Labels)
	}
}

func TestDeviceSwappedIsWithdrawn(t *testing.T) {
	ctx := context.Background()
	first := true
	c := verify.CheckFunc(func(ctx context.Context, opts func(int) verify.Options) ([]verify.Result, error) {
		out := []verify.Result{{Index: 0, Model: "H100", UUID: "GPU-a", Passed: true}}
		if !first {
			out[0].UUID = "GPU-b"
		}
		first = false
		return out, nil
	})
	w := New(Config{Base: map[string]float64{"GPU": 1}, Checker: c})
	w.Verify(ctx, nil)
	st, changed := w.Verify(ctx, nil)
	if !changed || !st.Off[0] {
		t.Fatalf("swapped device still offered: %+v", st)
	}
}

func TestRunAppliesChangesOnTicks(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fc := &fakeChecker{n: 8}
	vt := make(chan time.Time)
	w := h100Watcher(t, fc, Config{VerifyTick: vt})
	w.Verify(ctx, nil)
	applied := make(chan Status)
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.Run(ctx, func() []bool { return nil }, func(s Status) { applied <- s })
	}()

	fc.set(8, map[int]string{5: "gpu does not match its claimed model H100: FP32 20.0 TFLOP/s"}, nil)
	vt <- time.Time{}
	if st := <-applied; st.Total["GPU"] != 7 || !st.Off[5] {
		t.Fatalf("after failing tick: %+v", st)
	}
	fc.set(8, nil, nil)
	vt <- time.Time{}
	if st := <-applied; st.Total["GPU"] != 8 || st.Off[5] {
		t.Fatalf("after passing tick: %+v", st)
	}
	cancel()
	<-done
}

func TestSampleReadsLiveNumbersFromMockH100(t *testing.T) {
	lib := dgxh100.New()
	for i, d := range lib.Devices {
		dev := d.(*server.Device)
		pct := uint32(10 * (i + 1))
		dev.GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) {
			return nvml.Utilization{Gpu: pct}, nvml.SUCCESS
		}
		dev.MemoryInfo.Used = uint64(i+1) << 30
	}
	s := gpu.NewSampler(lib)
	defer s.Close()
	sampleTick := make(chan time.Time)
	w := h100Watcher(t, nil, Config{Sample: s.Sample, SampleTick: sampleTick})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	applied := make(chan Status)
	go w.Run(ctx, nil, func(s Status) { applied <- s })
	sampleTick <- time.Time{}
	st := <-applied
	if len(st.Devices) != 8 {
		t.Fatalf("devices = %d", len(st.Devices))
	}
	for i, d := range st.Devices {
		if d.UtilizationPct != 10*(i+1) || d.MemoryUsedBytes != uint64(i+1)<<30 || d.MemoryBytes == 0 || d.UUID == "" || d.AcceleratorType != "H100" {
			t.Errorf("device %d: %+v", i, d)
		}
	}
	if st.Total["GPU"] != 8 || st.Labels != nil {
		t.Errorf("no checker: status %+v", st)
	}
}

func TestSampleWithoutDriverKeepsInventory(t *testing.T) {
	lib := dgxh100.New()
	lib.InitFunc = func() nvml.Return { return nvml.ERROR_LIBRARY_NOT_FOUND }
	s := gpu.NewSampler(lib)
	w := h100Watcher(t, nil, Config{Sample: s.Sample})
	if _, ok := w.Sample(); ok {
		t.Fatal("a sample without a driver reported news")
	}
	if len(w.Status().Devices) != 8 {
		t.Fatal("the start inventory was lost")
	}
}

func TestOfferPolicy(t *testing.T) {
	base := map[string]float64{"CPU": 4, "GPU": 2, "accelerator_type:H100": 1, "accelerator_type:A100": 1}
	models := []string{"H100", "A100"}
	got := Offer(base, models, []bool{false, true})
	if got["GPU"] != 1 || got["accelerator_type:H100"] != 1 || got["accelerator_type:A100"] != 0 || got["CPU"] != 4 {
		t.Errorf("A100 withdrawn: %v", got)
	}
	if _, ok := got["accelerator_type:A100"]; ok {
		t.Errorf("A100 type must leave: %v", got)
	}
	got = Offer(base, nil, []bool{true, false})
	if got["GPU"] != 1 || got["accelerator_type:H100"] != 1 || got["accelerator_type:A100"] != 1 {
		t.Errorf("unknown models keep their types: %v", got)
	}
	if base["GPU"] != 2 {
		t.Error("Offer changed its input")
	}
}

func TestJudgeNoDriver(t *testing.T) {
	vs := Judge(2, nil, verify.ErrNoDriver, nil)
	for _, v := range vs {
		if v.OK || !errors.Is(verify.ErrNoDriver, verify.ErrNoDriver) || v.Reason == "" {
			t.Errorf("verdict %+v", v)
		}
	}
}

func TestWorkStartingDuringTheCheckDoesNotWithdrawOnNumbers(t *testing.T) {
	ctx := context.Background()
	fc := &fakeChecker{n: 8}
	w := h100Watcher(t, fc, Config{})
	w.Verify(ctx, nil)
	calls := 0
	busy := func() []bool { // idle before the check, GPU 4 busy after it
		calls++
		b := make([]bool, 8)
		b[4] = calls%2 == 0
		return b
	}
	fc.set(8, map[int]string{4: verify.ErrMismatch.Error() + " H100: FP32 12.0 TFLOP/s, below 42.0"}, nil)
	if st, changed := w.Verify(ctx, busy); changed || st.Off[4] {
		t.Fatalf("disturbed numbers withdrew GPU 4: %+v", st.Off)
	}
	fc.set(8, map[int]string{4: "kernel result mismatch: gray_fma: thread 9 got 1 want 2"}, nil)
	if st, changed := w.Verify(ctx, busy); !changed || !st.Off[4] {
		t.Fatalf("wrong results must withdraw GPU 4 whatever runs there: %+v", st.Off)
	}
}

func TestSlotsBeyondTheDevicesAreNotJudged(t *testing.T) {
	fc := &fakeChecker{n: 1}
	w := New(Config{Base: map[string]float64{"GPU": 4}, Devices: []gpu.Device{{Index: 0, AcceleratorType: "H100"}}, Checker: fc})
	if st, _ := w.Verify(context.Background(), nil); st.Total["GPU"] != 4 {
		t.Fatalf("an override of 4 GPUs on one device: %+v", st)
	}
}

package verify

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/ebitengine/purego"
)

// These tests load testdata/fakecuda.c, compiled here into a fake
// libcuda.so.1, through the same purego bindings as the real driver, and
// run Verify end to end on it. The C compiler is the one cgo uses (the gpu
// package already needs it).

const (
	knobInitRC = iota
	knobCount
	knobCorruptHash
	knobBadPTX
	knobSlowCopyNS
	knobNameH100
)

type fakeLib struct {
	path       string
	set        func(k int32, v int64)
	liveAllocs func() int64
	liveEvents func() int64
	ctxRefs    func() int64
	launches   func() int64
}

var (
	fakeOnce sync.Once
	fake     *fakeLib
	fakeErr  error
	fakeDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if fakeDir != "" {
		os.RemoveAll(fakeDir)
	}
	os.Exit(code)
}

func loadFake(t *testing.T) *fakeLib {
	t.Helper()
	fakeOnce.Do(func() {
		cc := "gcc"
		if out, err := exec.Command("go", "env", "CC").Output(); err == nil && strings.TrimSpace(string(out)) != "" {
			cc = strings.Fields(string(out))[0]
		}
		if fakeDir, fakeErr = os.MkdirTemp("", "fakecuda"); fakeErr != nil {
			return
		}
		path := filepath.Join(fakeDir, "libcuda.so.1")
		out, err := exec.Command(cc, "-shared", "-fPIC", "-O2", "-o", path, "testdata/fakecuda.c", "-lm").CombinedOutput()
		if err != nil {
			fakeErr = errors.New(cc + ": " + err.Error() + ": " + string(out))
			return
		}
		h, err := purego.Dlopen(path, purego.RTLD_NOW|purego.RTLD_GLOBAL)
		if err != nil {
			fakeErr = err
			return
		}
		f := &fakeLib{path: path}
		purego.RegisterLibFunc(&f.set, h, "fakecuda_set")
		purego.RegisterLibFunc(&f.liveAllocs, h, "fakecuda_live_allocs")
		purego.RegisterLibFunc(&f.liveEvents, h, "fakecuda_live_events")
		purego.RegisterLibFunc(&f.ctxRefs, h, "fakecuda_ctx_refs")
		purego.RegisterLibFunc(&f.launches, h, "fakecuda_launches")
		fake = f
	})
	if fakeErr != nil {
		t.Fatalf("building the fake libcuda: %v", fakeErr)
	}
	// Defaults for every test.
	for k, v := range map[int32]int64{knobInitRC: 0, knobCount: 1, knobCorruptHash: 0, knobBadPTX: 0, knobSlowCopyNS: 0, knobNameH100: 0} {
		fake.set(k, v)
	}
	return fake
}

// fakeOpts keep the host-side "GPU" work small.
var fakeOpts = Options{Seed: 12345, Bytes: 8 << 20, FMAIters: 64, HashN: 5000, HashRounds: 16}

func openFake(t *testing.T) (*Driver, *fakeLib) {
	f := loadFake(t)
	d, err := open([]string{"libcuda-gray-test-absent.so.1", f.path})
	if err != nil {
		t.Fatal(err)
	}
	return d, f
}

func assertReleased(t *testing.T, f *fakeLib) {
	t.Helper()
	if a, e, c := f.liveAllocs(), f.liveEvents(), f.ctxRefs(); a != 0 || e != 0 || c != 0 {
		t.Errorf("leaked: %d allocations/modules, %d events, %d context refs", a, e, c)
	}
}

func TestFakeDriverVerifyPasses(t *testing.T) {
	d, f := openFake(t)
	if d.Version != 13000 || d.Path != f.path {
		t.Errorf("driver %+v", d)
	}
	r, err := d.Verify(context.Background(), 0, fakeOpts)
	if err != nil || !r.Passed || r.Reason != "" {
		t.Fatalf("Verify: %+v, %v", r, err)
	}
	if r.Name != "NVIDIA Fake Test GPU" || r.Model != "Fake-Test-GPU" || r.CC != "9.0" || r.SMs != 2 ||
		r.UUID != "GPU-a0a1a2a3-a4a5-a6a7-a8a9-aaabacadaeaf" || r.PCIBusID != "00000000:06:00.0" || r.MemoryBytes != 80<<30 {
		t.Errorf("identity %+v", r)
	}
	if r.HashChecked != int(fakeOpts.HashN) || r.FP32TFLOPS <= 0 || r.BandwidthGBs <= 0 || r.Duration <= 0 || r.Phases.JIT <= 0 {
		t.Errorf("numbers %+v", r)
	}
	// hash check, bandwidth fill, FMA warm-up and timed run.
	if n := f.launches(); n < 4 {
		t.Errorf("%d launches", n)
	}
	assertReleased(t, f)
}

func TestFakeDriverWrongHashFails(t *testing.T) {
	d, f := openFake(t)
	f.set(knobCorruptHash, 1)
	r, err := d.Verify(context.Background(), 0, fakeOpts)
	if !errors.Is(err, ErrKernel) || r.Passed || !strings.Contains(r.Reason, "first at 777") {
		t.Fatalf("got %+v, %v; want ErrKernel at 777", r, err)
	}
	assertReleased(t, f)
}

func TestFakeDriverJITErrorCarriesTheLog(t *testing.T) {
	d, f := openFake(t)
	f.set(knobBadPTX, 1)
	r, err := d.Verify(context.Background(), 0, fakeOpts)
	var ce *CUDAError
	if !errors.As(err, &ce) || !errors.Is(err, ErrCUDA) || ce.Name != "CUDA_ERROR_INVALID_PTX" ||
		!strings.Contains(ce.Log, "fake JIT rejected") || r.Passed {
		t.Fatalf("got %+v, %v", r, err)
	}
	assertReleased(t, f)
}

func TestFakeDriverTooSlowForItsName(t *testing.T) {
	d, f := openFake(t)
	f.set(knobNameH100, 1)
	r, err := d.Verify(context.Background(), 0, fakeOpts)
	if !errors.Is(err, ErrMismatch) || r.Passed || r.Model != "H100" || !strings.Contains(r.Reason, "FP32") {
		t.Fatalf("got %+v, %v; want ErrMismatch", r, err)
	}
	// The same numbers against a claim made by the provider.
	f.set(knobNameH100, 0)
	r, err = d.Verify(context.Background(), 0, Options{Seed: 1, Bytes: 8 << 20, FMAIters: 64, HashN: 5000, Claim: "H100"})
	if !errors.Is(err, ErrMismatch) || r.Claim != "H100" {
		t.Fatalf("claim: got %+v, %v", r, err)
	}
	// Correctness only: no numbers, so only cc and memory are held to H100.
	r, err = d.Verify(context.Background(), 0, Options{Seed: 1, HashN: 5000, Claim: "H100", CorrectnessOnly: true})
	if err != nil || !r.Quick || r.FP32TFLOPS != 0 || r.BandwidthGBs != 0 {
		t.Fatalf("quick: got %+v, %v", r, err)
	}
	assertReleased(t, f)
}

func TestFakeDriverCancelledContext(t *testing.T) {
	d, f := openFake(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r, err := d.Verify(ctx, 0, fakeOpts)
	if !errors.Is(err, context.Canceled) || r.Passed {
		t.Fatalf("got %+v, %v", r, err)
	}
	assertReleased(t, f)
}

func TestFakeDriverBadIndex(t *testing.T) {
	d, f := openFake(t)
	r, err := d.Verify(context.Background(), 5, fakeOpts)
	if !errors.Is(err, ErrCUDA) || !strings.Contains(err.Error(), "cuDeviceGet") || r.Passed {
		t.Fatalf("got %+v, %v", r, err)
	}
	assertReleased(t, f)
}

func TestFakeDriverVerifyAllInParallel(t *testing.T) {
	d, f := openFake(t)
	f.set(knobCount, 3)
	rs, err := d.VerifyAll(context.Background(), fakeOpts)
	if err != nil || len(rs) != 3 {
		t.Fatalf("%v, %v", rs, err)
	}
	seen := map[string]bool{}
	for i, r := range rs {
		if r.Index != i || !r.Passed || seen[r.PCIBusID] || seen[r.UUID] {
			t.Errorf("result %d: %+v", i, r)
		}
		seen[r.PCIBusID], seen[r.UUID] = true, true
	}
	if l := Labels(rs); l[LabelVerified] != "true" || l[LabelCount] != "3" || l[LabelModel] != "Fake-Test-GPU" {
		t.Errorf("labels %v", l)
	}
	if _, err := d.VerifyAll(context.Background(), Options{Claim: "H100"}); !errors.Is(err, ErrMismatch) {
		t.Errorf("one claim for 3 devices: %v", err)
	}
	assertReleased(t, f)
}

func TestFakeDriverInitErrors(t *testing.T) {
	f := loadFake(t)
	for rc, want := range map[int64]error{100: ErrNoDevice, 34: ErrNoDriver, 35: ErrNoDriver, 999: ErrCUDA} {
		f.set(knobInitRC, rc)
		d, err := open([]string{f.path})
		if d != nil || !errors.Is(err, want) {
			t.Errorf("cuInit -> %d: got %v, %v; want %v", rc, d, err, want)
		}
	}
	f.set(knobInitRC, 0)
}

package verify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestOpenWithoutLibraryIsErrNoDriver(t *testing.T) {
	d, err := open([]string{"libcuda-gray-test-absent.so.1"})
	if d != nil || !errors.Is(err, ErrNoDriver) {
		t.Fatalf("got %v, %v; want ErrNoDriver", d, err)
	}
	if !strings.Contains(err.Error(), "libcuda-gray-test-absent.so.1") {
		t.Errorf("error does not name the library: %v", err)
	}
}

func TestOpenOnThisMachine(t *testing.T) {
	d, err := Open()
	switch {
	case err == nil:
		t.Logf("driver %s, CUDA %d", d.Path, d.Version)
	case errors.Is(err, ErrNoDriver):
		t.Logf("no driver, as on CI: %v", err)
	case errors.Is(err, ErrNoDevice):
		t.Logf("driver but no device: %v", err)
	default:
		t.Fatalf("Open: %v (want nil, ErrNoDriver or ErrNoDevice)", err)
	}
	// Open is memoised: the same answer again.
	d2, err2 := Open()
	if d2 != d || err2 != err {
		t.Fatalf("second Open differs: %v %v", d2, err2)
	}
}

func TestOpenOfALibraryThatIsNotCUDA(t *testing.T) {
	// libc loads but exports no cuInit: a clean error, not a panic.
	d, err := open([]string{"libc.so.6"})
	if d != nil || !errors.Is(err, ErrDriverTooOld) {
		t.Fatalf("got %v, %v; want ErrDriverTooOld", d, err)
	}
}

func TestCUDAErrorWrapsErrCUDA(t *testing.T) {
	err := error(&CUDAError{Call: "cuModuleLoadDataEx", Code: 218, Name: "CUDA_ERROR_INVALID_PTX", Message: "a PTX JIT compilation failed", Log: "ptxas fatal"})
	if !errors.Is(err, ErrCUDA) {
		t.Fatal("not ErrCUDA")
	}
	for _, want := range []string{"cuModuleLoadDataEx", "CUDA_ERROR_INVALID_PTX", "218", "ptxas fatal"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q lacks %q", err, want)
		}
	}
	var d Driver // no cuGetErrorName bound: the code still shows
	if e := d.err("cuInit", 100); e == nil || !strings.Contains(e.Error(), "CUresult(100)") {
		t.Errorf("unbound name lookup: %v", e)
	}
	if d.err("cuInit", 0) != nil {
		t.Error("CUDA_SUCCESS is an error")
	}
}

func TestRunCheckReport(t *testing.T) {
	_, openErr := Open()
	var buf bytes.Buffer
	err := RunCheck(context.Background(), &buf)
	var rep Report
	if jerr := json.Unmarshal(buf.Bytes(), &rep); jerr != nil {
		t.Fatalf("%v: %s", jerr, buf.String())
	}
	if errors.Is(openErr, ErrNoDriver) {
		// CI: nothing to verify is not a failure.
		if err != nil || rep.Available || rep.Passed || len(rep.Devices) != 0 || !strings.Contains(rep.Note, "no CUDA driver") {
			t.Fatalf("err %v, report %+v", err, rep)
		}
		return
	}
	t.Logf("report: %s", buf.String())
	if !rep.Available || rep.Passed != (err == nil) || len(rep.Devices) == 0 || rep.Labels[LabelVerified] != "true" {
		t.Fatalf("err %v, report %+v", err, rep)
	}
}

// TestVerifyRealGPU runs the kernels on every device of this machine. It
// skips only when there is no CUDA driver at all.
func TestVerifyRealGPU(t *testing.T) {
	d, err := Open()
	if errors.Is(err, ErrNoDriver) {
		t.Skipf("no CUDA driver on this machine (%v): the real-kernel test needs a GPU", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rs, err := d.VerifyAll(ctx, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) == 0 {
		t.Fatal("driver loaded but no device")
	}
	for _, r := range rs {
		t.Logf("%d %s (%s, cc %s, %d SMs): passed=%v fp32=%.1f TFLOP/s bw=%.0f GB/s hash=%d took %v %+v",
			r.Index, r.Name, r.UUID, r.CC, r.SMs, r.Passed, r.FP32TFLOPS, r.BandwidthGBs, r.HashChecked, r.Duration, r.Phases)
		if !r.Passed {
			t.Errorf("device %d failed: %s", r.Index, r.Reason)
		}
	}
	// A second, quick pass (warm JIT cache, CorrectnessOnly).
	r, err := d.Verify(ctx, 0, Options{CorrectnessOnly: true})
	if err != nil || !r.Quick || r.FP32TFLOPS != 0 {
		t.Fatalf("quick verify: %+v, %v", r, err)
	}
	t.Logf("quick verify took %v", r.Duration)
	t.Logf("labels %v", Labels(rs))
}

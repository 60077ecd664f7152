package noderes

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/gray-cluster/gray/gpu/verify"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// failOne fails GPU bad of an 8-GPU machine.
func failOne(bad int) verify.Checker {
	return verify.CheckFunc(func(_ context.Context, opts func(int) verify.Options) ([]verify.Result, error) {
		out := make([]verify.Result, 8)
		for i := range out {
			out[i] = verify.Result{Index: i, Model: "H100", Passed: i != bad, FP32TFLOPS: 60, BandwidthGBs: 3000}
			if i == bad {
				out[i].Reason = "kernel result mismatch"
			}
		}
		return out, nil
	})
}

func TestOnlyGPUsThatPassAreOffered(t *testing.T) {
	res, rep, err := DetectVerified(context.Background(), Options{
		NumCPUs: 4, NumGPUs: -1, GPUMock: "dgxh100", Memory: 1 << 30, ObjectStoreMemory: 1 << 30,
		Verify: true, Checker: failOne(2),
	}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	if res["GPU"] != 7 || res["accelerator_type:H100"] != 1 || res["CPU"] != 4 {
		t.Errorf("resources = %v", res)
	}
	if rep.Labels[verify.LabelVerified] != "false" || rep.Labels[verify.LabelCount] != "7" {
		t.Errorf("labels = %v", rep.Labels)
	}
	if rep.Watch == nil || rep.Watch.Base()["GPU"] != 8 || !rep.Watch.Status().Off[2] {
		t.Fatalf("watcher: %+v", rep.Watch)
	}
}

func TestMockWithoutCheckerIsNotVerifiedButWatched(t *testing.T) {
	res, rep, err := DetectVerified(context.Background(), Options{
		NumCPUs: 4, NumGPUs: -1, GPUMock: "dgxh100", Memory: 1 << 30, ObjectStoreMemory: 1 << 30, Verify: true,
	}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	if res["GPU"] != 8 || rep.Labels != nil || rep.Watch == nil || rep.Watch.Verifies() {
		t.Errorf("res %v labels %v", res, rep.Labels)
	}
	if st, ok := rep.Watch.Sample(); !ok || len(st.Devices) != 8 {
		t.Errorf("the mock was not sampled: %+v", st)
	}
}

func TestNoGPUsNoWatcher(t *testing.T) {
	res, rep, err := DetectVerified(context.Background(), Options{
		NumCPUs: 2, NumGPUs: 0, Memory: 1 << 30, ObjectStoreMemory: 1 << 30, Verify: true, Checker: failOne(0),
	}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := res["GPU"]; ok || rep.Watch != nil || rep.Labels != nil {
		t.Errorf("res %v report %+v", res, rep)
	}
}

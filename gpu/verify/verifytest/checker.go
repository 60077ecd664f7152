// Package verifytest has test doubles for GPU verification.
package verifytest

import (
	"context"
	"sync"

	"github.com/gray-cluster/gray/gpu/verify"
)

// H100Checker is a verify.Checker for the 8 GPUs of a go-nvml mock DGX H100:
// every GPU passes with H100 numbers except those Fail names.
type H100Checker struct {
	mu  sync.Mutex
	bad map[int]string
}

var _ verify.Checker = (*H100Checker)(nil)

// Fail makes the GPUs in bad (index → reason) fail from the next check on;
// nil makes every GPU pass again.
func (c *H100Checker) Fail(bad map[int]string) {
	c.mu.Lock()
	c.bad = bad
	c.mu.Unlock()
}

// Check implements verify.Checker.
func (c *H100Checker) Check(_ context.Context, opts func(int) verify.Options) ([]verify.Result, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]verify.Result, 8)
	for i := range out {
		o := opts(i)
		out[i] = verify.Result{Index: i, Name: "NVIDIA H100 80GB HBM3", Model: "H100", Passed: true,
			FP32TFLOPS: 60, BandwidthGBs: 3000, Quick: o.CorrectnessOnly}
		if r, ok := c.bad[i]; ok {
			out[i].Passed, out[i].Reason = false, r
		}
	}
	return out, nil
}

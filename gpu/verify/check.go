package verify

import (
	"context"
	"sync"
)

// Checker verifies a machine's GPUs: at start and again periodically, so
// that tests can put a fake in its place. Check returns one Result per
// device the driver shows, by CUDA ordinal; opts gives each device's
// options (its claimed model, a quick check for a GPU in use). An error
// means nothing could be verified (no driver, no device).
type Checker interface {
	Check(ctx context.Context, opts func(index int) Options) ([]Result, error)
}

// CheckFunc adapts a function to Checker.
type CheckFunc func(ctx context.Context, opts func(index int) Options) ([]Result, error)

// Check calls f.
func (f CheckFunc) Check(ctx context.Context, opts func(index int) Options) ([]Result, error) {
	return f(ctx, opts)
}

// DriverChecker checks GPUs through the CUDA driver (Open).
type DriverChecker struct{}

// Check opens the driver and verifies every device in parallel.
func (DriverChecker) Check(ctx context.Context, opts func(index int) Options) ([]Result, error) {
	d, err := Open()
	if err != nil {
		return nil, err
	}
	n, err := d.Count()
	if err != nil {
		return nil, err
	}
	res := make([]Result, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var o Options
			if opts != nil {
				o = opts(i)
			}
			res[i], _ = d.Verify(ctx, i, o)
		}()
	}
	wg.Wait()
	return res, nil
}

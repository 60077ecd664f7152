// Package verify proves that a provider's GPUs are real and as fast as the
// model they claim, by running CUDA kernels through the driver API.
//
// libcuda is loaded at run time with purego (no cgo, no CUDA headers or
// toolkit at build time), so the same binary builds everywhere and, on a
// machine without a driver, Open simply returns ErrNoDriver.
//
// Verify runs, on one device:
//   - gray_hash, an integer hash kernel whose output the host recomputes and
//     compares bit for bit (a GPU that computes wrongly, or not at all, fails);
//   - gray_fma, an FP32 FMA loop timed with CUDA events (TFLOP/s), whose result
//     is also exact and checked;
//   - a device-to-device copy of a hashed buffer, timed with events (GB/s,
//     counted read+write like CUDA's bandwidthTest), sampled bit for bit.
//
// Check compares the numbers with the floors in Expectations for the model
// the GPU claims; Labels turns the results into node labels.
package verify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"runtime"
	"sync"
	"time"
)

// Options tune one verification. Zero values take the defaults.
type Options struct {
	// Seed varies the hash kernel's input so that a stale buffer from an
	// earlier run cannot pass. 0 picks a fresh one from the clock.
	Seed uint32
	// Bytes is the size of the bandwidth test's buffer (two are allocated);
	// it is capped at a quarter of the free memory. Default 256 MiB.
	Bytes uint64
	// FMAIters is gray_fma's loop count: each thread does 64*FMAIters FMAs.
	// Default 32768 (about 10 ms on an H100); at most maxFMAIters.
	FMAIters uint32
	// HashN is how many elements gray_hash computes and the host checks.
	// Default 1<<20.
	HashN uint32
	// HashRounds is gray_hash's rounds per element. Default 16.
	HashRounds uint32
	// CorrectnessOnly runs only the bit-exact checks, skipping the timed
	// parts and the model floors: for periodic checks of a GPU in use.
	CorrectnessOnly bool
	// Claim is the model the provider advertises for this GPU (the NVML
	// accelerator type, e.g. "H100"); empty means Model(name) of the driver's
	// device name. The measured numbers are checked against its floors.
	Claim string
}

// Defaults.
const (
	DefaultBytes      = 256 << 20
	DefaultFMAIters   = 32768
	DefaultHashN      = 1 << 20
	DefaultHashRounds = 16
	bandwidthReps     = 8
	blockSize         = 256
	sampleWords       = 16 << 10 // words checked at each of 3 places in the copy
)

func (o Options) withDefaults() Options {
	if o.Seed == 0 {
		o.Seed = uint32(time.Now().UnixNano()) | 1
	}
	if o.Bytes == 0 {
		o.Bytes = DefaultBytes
	}
	if o.FMAIters == 0 {
		o.FMAIters = DefaultFMAIters
	}
	if o.FMAIters > maxFMAIters {
		o.FMAIters = maxFMAIters
	}
	if o.HashN == 0 {
		o.HashN = DefaultHashN
	}
	if o.HashRounds == 0 {
		o.HashRounds = DefaultHashRounds
	}
	return o
}

// Result is the outcome for one device.
type Result struct {
	Index       int    `json:"index"`
	Name        string `json:"name"`
	Model       string `json:"model"`           // Model(Name), e.g. "H100"
	Claim       string `json:"claim,omitempty"` // the model checked against, when not Model
	UUID        string `json:"uuid,omitempty"`
	PCIBusID    string `json:"pci_bus_id,omitempty"`
	CC          string `json:"compute_capability"` // "9.0"
	SMs         int    `json:"sms"`
	MemoryBytes uint64 `json:"memory_bytes"`

	Passed bool   `json:"passed"`
	Reason string `json:"reason,omitempty"` // why not, when !Passed

	HashChecked  int     `json:"hash_checked"` // words compared bit for bit
	BandwidthGBs float64 `json:"bandwidth_gbs"`
	FP32TFLOPS   float64 `json:"fp32_tflops"`
	Quick        bool    `json:"quick,omitempty"` // CorrectnessOnly: no numbers

	Duration time.Duration `json:"duration_ns"`
	Phases   Phases        `json:"phases"`
}

// Phases is where a verification's time went.
type Phases struct {
	Context   time.Duration `json:"context_ns"`   // primary context retain (first use of the GPU)
	JIT       time.Duration `json:"jit_ns"`       // PTX load and compile
	Hash      time.Duration `json:"hash_ns"`      // kernel, copy back, host check
	FMA       time.Duration `json:"fma_ns"`       // warm-up and timed FMA kernel
	Bandwidth time.Duration `json:"bandwidth_ns"` // alloc, fill, copies, sample check
}

// Verify runs the kernels on device index and checks them. It always
// returns a filled Result; the error is nil exactly when r.Passed, and
// otherwise wraps ErrCUDA, ErrKernel, ErrMismatch or the context's error.
// The device's primary context is released before it returns.
func (d *Driver) Verify(ctx context.Context, index int, opts Options) (r Result, err error) {
	start := time.Now()
	opts = opts.withDefaults()
	r.Index = index
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: panic: %v", ErrCUDA, p)
		}
		r.Duration = time.Since(start)
		r.Passed = err == nil
		if err != nil {
			r.Reason = err.Error()
		}
	}()
	info, err := d.Info(index)
	if err != nil {
		return r, err
	}
	r.Name, r.Model, r.UUID, r.PCIBusID = info.Name, Model(info.Name), info.UUID, info.PCIBusID
	r.CC = fmt.Sprintf("%d.%d", info.CCMajor, info.CCMinor)
	r.SMs, r.MemoryBytes = info.SMs, info.MemoryBytes
	if err := ctx.Err(); err != nil {
		return r, err
	}

	// A CUDA context is current per OS thread: keep this goroutine on one.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	t := time.Now()
	s, err := d.openSession(index)
	if err != nil {
		return r, err
	}
	defer s.close()
	r.Phases.Context = time.Since(t)

	t = time.Now()
	if err := s.loadModule(ptxFor(info.CCMajor, info.CCMinor)); err != nil {
		return r, err
	}
	hashFn, err := s.function(hashEntry)
	if err != nil {
		return r, err
	}
	fmaFn, err := s.function(fmaEntry)
	if err != nil {
		return r, err
	}
	r.Phases.JIT = time.Since(t)

	t = time.Now()
	if r.HashChecked, err = s.checkHash(hashFn, opts); err != nil {
		return r, err
	}
	r.Phases.Hash = time.Since(t)
	if err := ctx.Err(); err != nil {
		return r, err
	}

	t = time.Now()
	threads := uint32(info.SMs * max(info.MaxThreads, blockSize))
	if opts.CorrectnessOnly {
		threads = uint32(max(info.SMs, 1) * blockSize)
		opts.FMAIters = min(opts.FMAIters, 64)
	}
	if r.FP32TFLOPS, err = s.measureFMA(fmaFn, threads, opts.FMAIters); err != nil {
		return r, err
	}
	r.Phases.FMA = time.Since(t)
	if err := ctx.Err(); err != nil {
		return r, err
	}

	if opts.CorrectnessOnly {
		r.Quick, r.FP32TFLOPS = true, 0
	} else {
		t = time.Now()
		if r.BandwidthGBs, err = s.measureBandwidth(hashFn, opts); err != nil {
			return r, err
		}
		r.Phases.Bandwidth = time.Since(t)
	}

	claim := opts.Claim
	if claim == "" {
		claim = r.Model
	} else if claim != r.Model {
		r.Claim = claim
	}
	return r, Check(claim, r)
}

// checkHash runs gray_hash over HashN elements and compares every word with
// hashRef. The buffer is poisoned first so that a kernel that never ran
// cannot pass on what an earlier run left there.
func (s *session) checkHash(fn uintptr, o Options) (int, error) {
	n := o.HashN
	buf, err := s.alloc(uint64(n) * 4)
	if err != nil {
		return 0, err
	}
	if err := s.d.err("cuMemsetD32_v2", s.d.cuMemsetD32(buf, ^hashRef(0, o.Seed, o.HashRounds), uintptr(n))); err != nil {
		return 0, err
	}
	seed, rounds := o.Seed, o.HashRounds
	if err := s.launch(fn, (n+blockSize-1)/blockSize, blockSize, &buf, &n, &seed, &rounds); err != nil {
		return 0, err
	}
	if err := s.sync(); err != nil {
		return 0, err
	}
	got, err := s.readU32(buf, int(n))
	if err != nil {
		return 0, err
	}
	if err := compareHash(got, 0, o.Seed, o.HashRounds); err != nil {
		return 0, err
	}
	return int(n), nil
}

// compareHash checks got[k] == hashRef(first+k) for every k, splitting the
// host work across CPUs.
func compareHash(got []uint32, first, seed, rounds uint32) error {
	workers := min(runtime.GOMAXPROCS(0), 8)
	chunk := (len(got) + workers - 1) / workers
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		lo, hi := w*chunk, min((w+1)*chunk, len(got))
		if lo >= hi {
			break
		}
		wg.Add(1)
		go func(w, lo, hi int) {
			defer wg.Done()
			bad, firstBad := 0, -1
			for k := lo; k < hi; k++ {
				if got[k] != hashRef(first+uint32(k), seed, rounds) {
					if firstBad < 0 {
						firstBad = k
					}
					bad++
				}
			}
			if bad > 0 {
				i := first + uint32(firstBad)
				errs[w] = fmt.Errorf("%w: gray_hash: %d of %d words wrong, first at %d: got %#08x want %#08x",
					ErrKernel, bad, hi-lo, i, got[firstBad], hashRef(i, seed, rounds))
			}
		}(w, lo, hi)
	}
	wg.Wait()
	return errors.Join(errs...)
}

// measureFMA warms the GPU up, then times one gray_fma launch over threads
// threads and returns TFLOP/s (2 flops per FMA). Every thread's result is
// checked against fmaRef.
func (s *session) measureFMA(fn uintptr, threads, iters uint32) (float64, error) {
	threads = max(threads/blockSize, 1) * blockSize
	out, err := s.alloc(uint64(threads) * 4)
	if err != nil {
		return 0, err
	}
	start, err := s.event()
	if err != nil {
		return 0, err
	}
	end, err := s.event()
	if err != nil {
		return 0, err
	}
	a, b := float32(1), float32(1)
	warm := max(iters/8, 1)
	if err := s.launch(fn, threads/blockSize, blockSize, &out, &warm, &a, &b); err != nil {
		return 0, err
	}
	if err := s.record(start); err != nil {
		return 0, err
	}
	if err := s.launch(fn, threads/blockSize, blockSize, &out, &iters, &a, &b); err != nil {
		return 0, err
	}
	if err := s.record(end); err != nil {
		return 0, err
	}
	sec, err := s.elapsed(start, end)
	if err != nil {
		return 0, err
	}
	words, err := s.readU32(out, int(threads))
	if err != nil {
		return 0, err
	}
	for gid, w := range words {
		if want := fmaRef(uint32(gid), iters); math.Float32frombits(w) != want {
			return 0, fmt.Errorf("%w: gray_fma: thread %d got %v want %v", ErrKernel, gid, math.Float32frombits(w), want)
		}
	}
	if sec <= 0 {
		return 0, fmt.Errorf("%w: gray_fma: event timer reported %v s", ErrKernel, sec)
	}
	flops := 2 * float64(FMAPerIter) * float64(iters) * float64(threads)
	return flops / sec / 1e12, nil
}

// measureBandwidth fills a buffer with gray_hash (1 round), times
// bandwidthReps device-to-device copies of it, and checks three windows of
// the copy bit for bit. GB/s counts each byte read and written (2*size per
// copy), as CUDA's bandwidthTest does.
func (s *session) measureBandwidth(hashFn uintptr, o Options) (float64, error) {
	var free, total uintptr
	if err := s.d.err("cuMemGetInfo_v2", s.d.cuMemGetInfo(&free, &total)); err != nil {
		return 0, err
	}
	size := min(o.Bytes, uint64(free)/4)
	size &^= 1<<20 - 1 // whole MiB
	if size < 4<<20 {
		return 0, fmt.Errorf("%w: bandwidth test: only %d bytes free", ErrCUDA, free)
	}
	words := uint32(size / 4)
	src, err := s.alloc(size)
	if err != nil {
		return 0, err
	}
	dst, err := s.alloc(size)
	if err != nil {
		return 0, err
	}
	seed, rounds := o.Seed^0x5bd1e995, uint32(1)
	if err := s.launch(hashFn, (words+blockSize-1)/blockSize, blockSize, &src, &words, &seed, &rounds); err != nil {
		return 0, err
	}
	if err := s.d.err("cuMemsetD32_v2", s.d.cuMemsetD32(dst, 0, uintptr(words))); err != nil {
		return 0, err
	}
	start, err := s.event()
	if err != nil {
		return 0, err
	}
	end, err := s.event()
	if err != nil {
		return 0, err
	}
	copyOnce := func() error {
		return s.d.err("cuMemcpyDtoDAsync_v2", s.d.cuMemcpyDtoDAsync(dst, src, uintptr(size), 0))
	}
	if err := copyOnce(); err != nil { // warm-up
		return 0, err
	}
	if err := s.record(start); err != nil {
		return 0, err
	}
	for i := 0; i < bandwidthReps; i++ {
		if err := copyOnce(); err != nil {
			return 0, err
		}
	}
	if err := s.record(end); err != nil {
		return 0, err
	}
	sec, err := s.elapsed(start, end)
	if err != nil {
		return 0, err
	}
	if err := s.sync(); err != nil {
		return 0, err
	}
	n := min(uint32(sampleWords), words)
	for _, at := range []uint32{0, words/2 - n/2, words - n} {
		got, err := s.readU32(dst+uint64(at)*4, int(n))
		if err != nil {
			return 0, err
		}
		if err := compareHash(got, at, seed, rounds); err != nil {
			return 0, fmt.Errorf("copy: %w", err)
		}
	}
	if sec <= 0 {
		return 0, fmt.Errorf("%w: copy: event timer reported %v s", ErrKernel, sec)
	}
	return 2 * float64(size) * bandwidthReps / sec / 1e9, nil
}

// VerifyAll verifies every device the driver shows, in parallel (each on
// its own OS thread and context), and returns the results by index.
func (d *Driver) VerifyAll(ctx context.Context, opts Options) ([]Result, error) {
	n, err := d.Count()
	if err != nil {
		return nil, err
	}
	if opts.Claim != "" && n > 1 {
		return nil, fmt.Errorf("%w: Options.Claim names one device's model; set it per device with Verify", ErrMismatch)
	}
	res := make([]Result, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			r, err := d.Verify(ctx, i, opts)
			res[i] = r
			if err != nil {
				slog.Warn("gpu verification failed", "index", i, "name", r.Name, "uuid", r.UUID, "err", err)
				return
			}
			slog.Info("gpu verified", "index", i, "name", r.Name, "fp32_tflops", math.Round(r.FP32TFLOPS),
				"bandwidth_gbs", math.Round(r.BandwidthGBs), "took", r.Duration.Round(time.Millisecond))
		}(i)
	}
	wg.Wait()
	return res, nil
}

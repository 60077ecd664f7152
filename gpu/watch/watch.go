// Package watch keeps a node's GPUs honest while it runs: it re-runs the
// verification of the start every so often, withdraws a GPU that now fails
// (wrong kernel results, numbers below its model, device gone) and offers
// it again once it passes, and samples NVML for live per-GPU utilisation
// and memory. The owner (provider or head) applies each new Status to its
// raylet and tells the head.
package watch

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gray-cluster/gray/gpu"
	"github.com/gray-cluster/gray/gpu/verify"
)

// Defaults for the intervals.
const (
	DefaultVerifyEvery = time.Hour
	DefaultSampleEvery = 10 * time.Second
)

// Status is a node's GPUs as it offers them now.
type Status struct {
	// Total is the node's resources with withdrawn GPUs taken out.
	Total map[string]float64
	// Off marks withdrawn GPUs by slot (CUDA ordinal, CUDA_VISIBLE_DEVICES).
	Off []bool
	// Labels are the gray.io/gpu-* labels of the last verification (nil
	// when the GPUs are not verified).
	Labels map[string]string
	// Devices are the GPUs as NVML last saw them, withdrawn ones marked.
	Devices []gpu.Device
	// Sampled is when Devices were read.
	Sampled time.Time
}

// Config configures a Watcher.
type Config struct {
	// Base is the node's resources with every GPU offered.
	Base map[string]float64
	// Devices is the NVML inventory taken at start (the first sample; the
	// models of the GPUs by index).
	Devices []gpu.Device
	// Checker verifies the GPUs; nil when they are not verified.
	Checker verify.Checker
	// Sample reads NVML again; nil: no live numbers.
	Sample func() ([]gpu.Device, error)
	// VerifyEvery and SampleEvery are the intervals (0: never again).
	VerifyEvery, SampleEvery time.Duration
	// VerifyTick and SampleTick, when set, drive the loop instead of the
	// intervals (tests).
	VerifyTick, SampleTick <-chan time.Time
	Now                    func() time.Time
	Logger                 *slog.Logger
}

// Watcher tracks which GPUs a node offers.
type Watcher struct {
	cfg    Config
	log    *slog.Logger
	n      int
	models []string // accelerator type by slot, from the NVML inventory

	mu       sync.Mutex
	verdicts []Verdict
	claims   []string        // model each slot was first verified as
	uuids    []string        // UUID each slot was first seen with
	full     []verify.Result // last full (timed) passing result by slot
	labels   map[string]string
	devices  []gpu.Device
	sampled  time.Time
}

// New builds a watcher; nothing is verified until Verify or Run.
func New(cfg Config) *Watcher {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	n := int(cfg.Base["GPU"] + 1e-9)
	w := &Watcher{
		cfg: cfg, log: cfg.Logger.With("component", "gpu-watch"), n: n,
		models: make([]string, n), verdicts: make([]Verdict, n),
		claims: make([]string, n), uuids: make([]string, n), full: make([]verify.Result, n),
		devices: slices.Clone(cfg.Devices), sampled: cfg.Now(),
	}
	for i := range w.verdicts {
		w.verdicts[i].OK = true
	}
	for _, d := range cfg.Devices {
		if d.Index >= 0 && d.Index < n {
			w.models[d.Index] = d.AcceleratorType
		}
	}
	return w
}

// Base is the node's resources with every GPU offered (the raylet's GPU
// slots).
func (w *Watcher) Base() map[string]float64 { return maps.Clone(w.cfg.Base) }

// Verifies reports whether the watcher verifies GPUs (has a checker).
func (w *Watcher) Verifies() bool { return w.cfg.Checker != nil }

// Verify runs one verification round and reports the new status and
// whether a GPU was withdrawn or offered again. busy (nil: none) reports
// the GPUs in use: those get the quick correctness check, so that work
// running on them does not fail their numbers, and a GPU that work started
// on during its timed check keeps its previous verdict if only its numbers
// fell short.
func (w *Watcher) Verify(ctx context.Context, busy func() []bool) (Status, bool) {
	if w.cfg.Checker == nil {
		return w.Status(), false
	}
	before := busyNow(busy)
	w.mu.Lock()
	claims := slices.Clone(w.claims)
	w.mu.Unlock()
	results, err := w.cfg.Checker.Check(ctx, func(i int) verify.Options {
		var o verify.Options
		if i < len(claims) {
			o.Claim = claims[i]
		}
		if i < len(before) && before[i] {
			o.CorrectnessOnly = true
		}
		return o
	})
	if ctx.Err() != nil {
		// Stopping is not a verdict on the GPUs.
		return w.Status(), false
	}
	after := busyNow(busy)
	w.mu.Lock()
	defer w.mu.Unlock()
	verdicts := Judge(w.n, results, err, w.uuids)
	if len(w.cfg.Devices) > 0 {
		for i := len(w.cfg.Devices); i < w.n; i++ {
			// More slots than GPUs (a --num-gpus override): nothing to verify.
			verdicts[i] = Verdict{OK: true}
		}
	}
	changed := false
	for i, v := range verdicts {
		if !v.OK && startedDuringCheck(i, before, after) && strings.HasPrefix(v.Reason, verify.ErrMismatch.Error()) {
			w.log.Info("GPU numbers disturbed by work that started during the check; keeping its verdict", "slot", i, "reason", v.Reason)
			verdicts[i] = w.verdicts[i]
			continue
		}
		if r := v.Result; r.UUID != "" && w.uuids[i] == "" {
			w.uuids[i] = r.UUID
		}
		if r := v.Result; v.OK && w.claims[i] == "" {
			w.claims[i] = r.Model
		}
		if v.OK && !v.Result.Quick {
			w.full[i] = v.Result
		}
		if v.OK != w.verdicts[i].OK {
			changed = true
			if v.OK {
				w.log.Info("GPU passed verification again; offering it", "slot", i, "uuid", w.uuids[i])
			} else {
				w.log.Warn("GPU failed verification; withdrawing it", "slot", i, "uuid", w.uuids[i], "reason", v.Reason)
			}
		}
	}
	w.verdicts = verdicts
	w.labels = verify.Labels(w.labelResults())
	return w.statusLocked(), changed
}

func busyNow(busy func() []bool) []bool {
	if busy == nil {
		return nil
	}
	return busy()
}

// startedDuringCheck reports whether work took GPU i during its check.
func startedDuringCheck(i int, before, after []bool) bool {
	return i < len(after) && after[i] && (i >= len(before) || !before[i])
}

// labelResults are the results labels are made of: a GPU checked quickly
// (it was busy) keeps the numbers of its last full check.
func (w *Watcher) labelResults() []verify.Result {
	out := make([]verify.Result, w.n)
	for i, v := range w.verdicts {
		switch {
		case !v.OK:
			out[i] = verify.Result{Index: i, Reason: v.Reason}
		case v.Result.Quick && w.full[i].Passed:
			out[i] = w.full[i]
		default:
			out[i] = v.Result
		}
	}
	return out
}

// Sample reads NVML again and reports the new status; ok is false when
// there is nothing new (no sampler, an NVML error, no devices).
func (w *Watcher) Sample() (Status, bool) {
	if w.cfg.Sample == nil {
		return w.Status(), false
	}
	devs, err := w.cfg.Sample()
	if err != nil || len(devs) == 0 {
		if err != nil {
			w.log.Debug("GPU sample failed", "err", err)
		}
		return w.Status(), false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.devices, w.sampled = devs, w.cfg.Now()
	return w.statusLocked(), true
}

// Status is the current status.
func (w *Watcher) Status() Status {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.statusLocked()
}

func (w *Watcher) statusLocked() Status {
	off := make([]bool, w.n)
	for i, v := range w.verdicts {
		off[i] = !v.OK
	}
	return Status{
		Total: Offer(w.cfg.Base, w.models, off), Off: off, Labels: maps.Clone(w.labels),
		Devices: Mark(w.devices, w.verdicts, w.uuids), Sampled: w.sampled,
	}
}

// Run re-verifies and samples until ctx ends, calling apply with every
// status that changed what the node offers and with every sample. busy
// reports the GPUs in use (nil: none).
func (w *Watcher) Run(ctx context.Context, busy func() []bool, apply func(Status)) {
	vt, stop := w.tick(w.cfg.VerifyTick, w.cfg.VerifyEvery, w.cfg.Checker != nil)
	defer stop()
	st, stop2 := w.tick(w.cfg.SampleTick, w.cfg.SampleEvery, w.cfg.Sample != nil)
	defer stop2()
	for {
		select {
		case <-ctx.Done():
			return
		case <-vt:
			if s, changed := w.Verify(ctx, busy); changed {
				apply(s)
			}
		case <-st:
			if s, ok := w.Sample(); ok {
				apply(s)
			}
		}
	}
}

// tick is the channel driving one activity: the injected one, a ticker, or
// none (nil blocks for ever).
func (w *Watcher) tick(injected <-chan time.Time, every time.Duration, enabled bool) (<-chan time.Time, func()) {
	switch {
	case !enabled:
		return nil, func() {}
	case injected != nil:
		return injected, func() {}
	case every > 0:
		t := time.NewTicker(every)
		return t.C, t.Stop
	}
	return nil, func() {}
}

// Package testcluster starts an in-process gray pool (head, front end and a
// local raylet on loopback) for Go integration tests.
package testcluster

import (
	"context"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/gray-cluster/gray/gpu"
	"github.com/gray-cluster/gray/gpu/verify"
	"github.com/gray-cluster/gray/gpu/watch"
	"github.com/gray-cluster/gray/head"
	"github.com/gray-cluster/gray/provider"
)

// Options tune the pool.
type Options struct {
	NumCPUs         float64
	PrestartWorkers int
	// ObjectStoreMemory in bytes (default 1 GiB).
	ObjectStoreMemory int64
	// GPUMock names a go-nvml mock machine ("dgxh100") to offer as GPUs.
	GPUMock string
	// GPUChecker verifies the head's mock GPUs (nil: not verified), at
	// start and at each GPUVerifyTick; GPUSampleTick samples the mock.
	GPUChecker                   verify.Checker
	GPUVerifyTick, GPUSampleTick <-chan time.Time
}

// Python returns the interpreter for workers: $GRAY_PYTHON, the repo's
// .venv, or python3.
func Python() string {
	if p := os.Getenv("GRAY_PYTHON"); p != "" {
		return p
	}
	wd, _ := os.Getwd()
	for dir := wd; dir != "/" && dir != "."; dir = filepath.Dir(dir) {
		p := filepath.Join(dir, ".venv", "bin", "python")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "python3"
}

// HasRay reports whether the worker Python can import ray.
func HasRay() bool {
	return exec.Command(Python(), "-c", "import ray.util.client").Run() == nil
}

// Start runs a pool for the test and stops it at cleanup.
func Start(t testing.TB, o Options) *head.Head {
	t.Helper()
	if o.NumCPUs == 0 {
		o.NumCPUs = 2
	}
	if o.ObjectStoreMemory == 0 {
		o.ObjectStoreMemory = 1 << 30
	}
	h, err := head.New(head.Config{
		ClientAddr:        "127.0.0.1:0",
		Python:            Python(),
		NumCPUs:           o.NumCPUs,
		ObjectStoreMemory: o.ObjectStoreMemory,
		PrestartWorkers:   o.PrestartWorkers,
		NumGPUs:           -1,
		GPUMock:           o.GPUMock,
		VerifyGPUs:        o.GPUChecker != nil,
		GPUChecker:        o.GPUChecker,
		GPUVerifyTick:     o.GPUVerifyTick,
		GPUSampleTick:     o.GPUSampleTick,
		SessionDir:        t.TempDir(),
		Logger:            slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := h.Start(ctx); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		h.Close()
		cancel()
	})
	return h
}

// Cluster is a head with providers joined over real QUIC on loopback.
type Cluster struct {
	Head      *head.Head
	Providers []*provider.Provider
}

// MultiOptions tune a multi-node test cluster.
type MultiOptions struct {
	Options
	// Providers is how many provider daemons join (in this process).
	Providers    int
	ProviderCPUs float64
	// Regions, when set, labels provider i with Regions[i].
	Regions []string
	// SuspectAfter and DeadAfter tune the head's failure detection.
	SuspectAfter, DeadAfter time.Duration
	// ProviderGPUMock gives every provider a go-nvml mock machine's GPUs
	// ("dgxh100"), verified by ProviderGPUChecker (nil: not verified) at
	// start and again at each ProviderGPUVerifyTick; ProviderGPUSampleTick
	// makes them sample the mock's NVML.
	ProviderGPUMock       string
	ProviderGPUChecker    verify.Checker
	ProviderGPUVerifyTick <-chan time.Time
	ProviderGPUSampleTick <-chan time.Time
	// ProviderGPUSample replaces the mock's NVML samples (live numbers).
	ProviderGPUSample func() ([]gpu.Device, error)
	// Provider, when set, adjusts provider i's configuration before it
	// starts (e.g. its peer service settings).
	Provider func(i int, cfg *provider.Config)
}

// StartCluster runs a head and o.Providers providers for the test.
func StartCluster(t testing.TB, o MultiOptions) *Cluster {
	t.Helper()
	if o.NumCPUs == 0 {
		o.NumCPUs = 1
	}
	if o.ProviderCPUs == 0 {
		o.ProviderCPUs = 2
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	h, err := head.New(head.Config{
		ClientAddr: "127.0.0.1:0", NodeAddr: "127.0.0.1:0", Python: Python(), NumCPUs: o.NumCPUs,
		ObjectStoreMemory: 1 << 30, PrestartWorkers: o.PrestartWorkers, NumGPUs: -1, GPUMock: o.GPUMock,
		SessionDir: t.TempDir(), StateDir: t.TempDir(), Logger: log,
		SuspectAfter: o.SuspectAfter, DeadAfter: o.DeadAfter,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := h.Start(ctx); err != nil {
		cancel()
		t.Fatal(err)
	}
	c := &Cluster{Head: h}
	t.Cleanup(func() {
		for _, p := range c.Providers {
			p.Close()
		}
		h.Close()
		cancel()
	})
	for i := range o.Providers {
		labels := map[string]string{}
		if i < len(o.Regions) {
			labels["ray.io/availability-region"] = o.Regions[i]
		}
		res := map[string]float64{"CPU": o.ProviderCPUs}
		gpus := providerGPUs(t, ctx, o, res, labels, log)
		cfg := provider.Config{
			HeadAddr: h.NodeAddr(), Token: h.JoinToken(), StateDir: t.TempDir(), NodeIP: "127.0.0.1",
			Python: Python(), Resources: res, Labels: labels,
			ObjectStoreMemory: 256 << 20, SessionDir: t.TempDir(), PrestartWorkers: o.PrestartWorkers, Logger: log,
			GPUWatch: gpus,
			PeerBind: "127.0.0.1:0",
		}
		if o.Provider != nil {
			o.Provider(i, &cfg)
		}
		p, err := provider.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Start(ctx); err != nil {
			t.Fatal(err)
		}
		c.Providers = append(c.Providers, p)
	}
	return c
}

// providerGPUs adds a provider's mock GPUs to res (as verified at start)
// and labels, and returns their watcher; nil without ProviderGPUMock.
func providerGPUs(t testing.TB, ctx context.Context, o MultiOptions, res map[string]float64, labels map[string]string, log *slog.Logger) *watch.Watcher {
	t.Helper()
	if o.ProviderGPUMock == "" {
		return nil
	}
	devs, err := gpu.DetectMock(o.ProviderGPUMock)
	if err != nil {
		t.Fatal(err)
	}
	sampler, err := gpu.NewMockSampler(o.ProviderGPUMock)
	if err != nil {
		t.Fatal(err)
	}
	base := maps.Clone(res)
	maps.Copy(base, gpu.Resources(devs))
	sample := sampler.Sample
	if o.ProviderGPUSample != nil {
		sample = o.ProviderGPUSample
	}
	w := watch.New(watch.Config{
		Base: base, Devices: devs, Checker: o.ProviderGPUChecker, Sample: sample,
		VerifyTick: o.ProviderGPUVerifyTick, SampleTick: o.ProviderGPUSampleTick, Logger: log,
	})
	st, _ := w.Verify(ctx, nil)
	clear(res)
	maps.Copy(res, st.Total)
	maps.Copy(labels, st.Labels)
	return w
}

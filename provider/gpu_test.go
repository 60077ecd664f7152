package provider_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/gray-cluster/gray/gcs"
	"github.com/gray-cluster/gray/gpu"
	"github.com/gray-cluster/gray/gpu/verify"
	"github.com/gray-cluster/gray/gpu/verify/verifytest"
	"github.com/gray-cluster/gray/internal/testcluster"
)

// waitProvider waits until the head's view of the one provider satisfies ok.
func waitProvider(t *testing.T, c *testcluster.Cluster, what string, ok func(gcs.NodeInfo) bool) gcs.NodeInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		ch := c.Head.GPUsChanged()
		for _, n := range c.Head.Cluster.Nodes() {
			if !n.IsHead && n.State == gcs.NodeAlive && ok(n) {
				return n
			}
		}
		select {
		case <-ch:
		case <-ctx.Done():
			t.Fatalf("head never saw %s: %+v", what, c.Head.Cluster.Nodes())
		}
	}
}

func metricsText(c *testcluster.Cluster) string {
	rec := httptest.NewRecorder()
	c.Head.Metrics().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	return rec.Body.String()
}

func TestGPUFailingReverificationIsWithdrawnAndComesBack(t *testing.T) {
	checker := &verifytest.H100Checker{}
	verifyTick := make(chan time.Time)
	c := testcluster.StartCluster(t, testcluster.MultiOptions{
		Providers: 1, ProviderGPUMock: "dgxh100", ProviderGPUChecker: checker, ProviderGPUVerifyTick: verifyTick,
	})
	n := waitProvider(t, c, "8 GPUs", func(n gcs.NodeInfo) bool { return n.Total["GPU"] == 8 })
	if n.Labels[verify.LabelVerified] != "true" || n.Labels[verify.LabelCount] != "8" || n.GPUs != "8xH100" {
		t.Fatalf("at start: labels %v gpus %q", n.Labels, n.GPUs)
	}
	if got := c.Head.Cluster.Total()["GPU"]; got != 8 {
		t.Fatalf("cluster GPUs = %v", got)
	}
	id := n.ID.Hex()

	// GPU 3 now computes wrongly: it leaves the head's view.
	checker.Fail(map[int]string{3: "kernel result mismatch: gray_hash: 7 of 1048576 words wrong"})
	verifyTick <- time.Now()
	n = waitProvider(t, c, "GPU 3 withdrawn", func(n gcs.NodeInfo) bool { return n.Labels[verify.LabelVerified] == "false" })
	if n.Total["GPU"] != 7 || n.Total["accelerator_type:H100"] != 1 || n.Labels[verify.LabelCount] != "7" {
		t.Errorf("after the failure: total %v labels %v", n.Total, n.Labels)
	}
	if n.GPUs != "7xH100 (1 withdrawn)" {
		t.Errorf("summary %q", n.GPUs)
	}
	if got := c.Head.Cluster.Total()["GPU"]; got != 7 {
		t.Errorf("cluster GPUs = %v, want 7", got)
	}
	text := metricsText(c)
	withdrawn := regexp.MustCompile(`gray_gpu_withdrawn\{index="3",model="H100",node="` + id + `",uuid="[^"]+"\} 1`)
	if !withdrawn.MatchString(text) {
		t.Errorf("metrics do not show GPU 3 withdrawn:\n%s", text)
	}
	if !regexp.MustCompile(`gray_node_resource_total\{node="` + id + `",region="",resource="GPU"\} 7`).MatchString(text) {
		t.Errorf("metrics do not show 7 GPUs on the provider:\n%s", text)
	}
	for _, ns := range c.Head.Snapshot().Nodes {
		if ns.NodeID != id {
			continue
		}
		if len(ns.GPUDevices) != 8 || !ns.GPUDevices[3].Withdrawn || ns.GPUDevices[3].Reason == "" || ns.GPUDevices[2].Withdrawn {
			t.Errorf("status GPUs: %+v", ns.GPUDevices)
		}
	}

	// It passes again: it is offered again.
	checker.Fail(nil)
	verifyTick <- time.Now()
	n = waitProvider(t, c, "GPU 3 back", func(n gcs.NodeInfo) bool { return n.Labels[verify.LabelVerified] == "true" })
	if n.Total["GPU"] != 8 || n.Labels[verify.LabelCount] != "8" || n.GPUs != "8xH100" {
		t.Errorf("after passing again: total %v labels %v gpus %q", n.Total, n.Labels, n.GPUs)
	}
	if got := c.Head.Cluster.Total()["GPU"]; got != 8 {
		t.Errorf("cluster GPUs = %v, want 8", got)
	}
	if regexp.MustCompile(`gray_gpu_withdrawn\{[^}]*\} 1`).MatchString(metricsText(c)) {
		t.Error("metrics still show a withdrawn GPU")
	}
}

func TestProviderGPUSamplesReachHeadMetrics(t *testing.T) {
	sampleTick := make(chan time.Time)
	var mu sync.Mutex
	util := 0
	sample := func() ([]gpu.Device, error) {
		devs, err := gpu.DetectMock("dgxh100")
		mu.Lock()
		defer mu.Unlock()
		for i := range devs {
			devs[i].UtilizationPct = util + i
			devs[i].MemoryUsedBytes = uint64(i+1) << 30
		}
		return devs, err
	}
	c := testcluster.StartCluster(t, testcluster.MultiOptions{
		Providers: 1, ProviderGPUMock: "dgxh100", ProviderGPUSampleTick: sampleTick, ProviderGPUSample: sample,
	})
	n := waitProvider(t, c, "8 GPUs", func(n gcs.NodeInfo) bool { return n.Total["GPU"] == 8 })
	if got := len(c.Head.NodeGPUs(n.ID)); got != 8 {
		t.Fatalf("head knows %d of the provider's GPUs at registration, want 8", got)
	}
	for _, want := range []int{40, 70} {
		mu.Lock()
		util = want
		mu.Unlock()
		changed := c.Head.GPUsChanged()
		sampleTick <- time.Now()
		select {
		case <-changed:
		case <-time.After(30 * time.Second):
			t.Fatal("the head never heard of the sample")
		}
		text := metricsText(c)
		for i := range 8 {
			line := fmt.Sprintf(`gray_gpu_utilization_percent\{index="%d",model="H100",node="%s",uuid="GPU-[^"]+"\} %d\n`, i, n.ID.Hex(), want+i)
			if !regexp.MustCompile(line).MatchString(text) {
				t.Fatalf("no line %s in:\n%s", line, text)
			}
		}
	}
	for _, ns := range c.Head.Snapshot().Nodes {
		if ns.NodeID != n.ID.Hex() {
			continue
		}
		if len(ns.GPUDevices) != 8 {
			t.Fatalf("status GPUs: %+v", ns.GPUDevices)
		}
		for i, d := range ns.GPUDevices {
			if d.UtilizationPct != 70+i || d.MemoryUsedBytes != uint64(i+1)<<30 || d.MemoryBytes == 0 {
				t.Errorf("status GPU %d: %+v", i, d)
			}
		}
	}
}

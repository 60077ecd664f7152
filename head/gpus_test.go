package head_test

import (
	"context"
	"net/http/httptest"
	"regexp"
	"testing"
	"time"

	"github.com/gray-cluster/gray/gcs"
	"github.com/gray-cluster/gray/gpu/verify"
	"github.com/gray-cluster/gray/gpu/verify/verifytest"
	"github.com/gray-cluster/gray/head"
	"github.com/gray-cluster/gray/internal/testcluster"
)

// waitHead waits until the head node, as the cluster shows it, satisfies ok.
func waitHead(t *testing.T, h *head.Head, what string, ok func(gcs.NodeInfo) bool) gcs.NodeInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		ch := h.GPUsChanged()
		for _, n := range h.Cluster.Nodes() {
			if n.IsHead && ok(n) {
				return n
			}
		}
		select {
		case <-ch:
		case <-ctx.Done():
			t.Fatalf("never saw %s: %+v", what, h.Cluster.Nodes())
		}
	}
}

func metrics(h *head.Head) string {
	rec := httptest.NewRecorder()
	h.Metrics().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	return rec.Body.String()
}

func TestHeadGPUsReverifiedAndSampled(t *testing.T) {
	c := &verifytest.H100Checker{}
	c.Fail(map[int]string{6: "no answer from the GPU"})
	verifyTick, sampleTick := make(chan time.Time), make(chan time.Time)
	h := testcluster.Start(t, testcluster.Options{GPUMock: "dgxh100", GPUChecker: c, GPUVerifyTick: verifyTick, GPUSampleTick: sampleTick})

	// GPU 6 failed at start: it is not offered.
	n := waitHead(t, h, "7 GPUs", func(n gcs.NodeInfo) bool { return n.Total["GPU"] == 7 })
	if n.Labels[verify.LabelVerified] != "false" || n.Available["GPU"] != 7 {
		t.Fatalf("at start: labels %v available %v", n.Labels, n.Available)
	}
	if !regexp.MustCompile(`gray_gpu_withdrawn\{index="6",[^}]*\} 1`).MatchString(metrics(h)) {
		t.Errorf("metrics do not show GPU 6 withdrawn:\n%s", metrics(h))
	}

	// It passes now; GPU 1 fails instead.
	c.Fail(map[int]string{1: "gpu does not match its claimed model H100: bandwidth 900.0 GB/s"})
	verifyTick <- time.Now()
	n = waitHead(t, h, "GPU 1 withdrawn", func(n gcs.NodeInfo) bool { return h.NodeGPUs(n.ID)[1].Withdrawn })
	if n.GPUs != "7xH100 (1 withdrawn)" || n.Labels[verify.LabelCount] != "7" || n.Total["GPU"] != 7 {
		t.Errorf("GPU 1 withdrawn: %+v", n)
	}
	for _, d := range h.NodeGPUs(n.ID) {
		if d.Withdrawn != (d.Index == 1) {
			t.Errorf("GPU %d withdrawn=%v", d.Index, d.Withdrawn)
		}
	}
	c.Fail(nil)
	verifyTick <- time.Now()
	n = waitHead(t, h, "8 GPUs", func(n gcs.NodeInfo) bool { return n.Total["GPU"] == 8 && n.Labels[verify.LabelVerified] == "true" })
	if n.Available["GPU"] != 8 || h.Cluster.Total()["accelerator_type:H100"] != 1 {
		t.Errorf("restored: %+v", n)
	}

	// A sample reaches the metrics.
	changed := h.GPUsChanged()
	sampleTick <- time.Now()
	select {
	case <-changed:
	case <-time.After(30 * time.Second):
		t.Fatal("a sample changed nothing")
	}
	text := metrics(h)
	if got := len(regexp.MustCompile(`(?m)^gray_gpu_memory_total_bytes\{[^}]*model="H100"[^}]*\} `).FindAllString(text, -1)); got != 8 {
		t.Errorf("%d GPU memory lines, want 8:\n%s", got, text)
	}
}

package head

import (
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/gray-cluster/gray/gcs"
)

// metrics exports the pool's state for Prometheus at /metrics: nodes and
// their resources, the object store, and every node's GPUs as last sampled
// (NVML, every --gpu-sample-interval on each node), withdrawn ones marked.
type metrics struct {
	h *Head

	nodes, resTotal, resAvail           *prometheus.Desc
	storeUsed, storeSpilled, storeCount *prometheus.Desc
	gpuUtil, gpuMemUsed, gpuMemTotal    *prometheus.Desc
	gpuWithdrawn                        *prometheus.Desc
	sessions                            *prometheus.Desc
	pulled                              *prometheus.Desc
}

func newMetrics(h *Head) *metrics {
	return &metrics{
		h:            h,
		nodes:        prometheus.NewDesc("gray_nodes", "Nodes by state.", []string{"state"}, nil),
		resTotal:     prometheus.NewDesc("gray_node_resource_total", "A node's resources.", []string{"node", "region", "resource"}, nil),
		resAvail:     prometheus.NewDesc("gray_node_resource_available", "A node's free resources.", []string{"node", "region", "resource"}, nil),
		storeUsed:    prometheus.NewDesc("gray_object_store_used_bytes", "Object bytes in the head's memory.", nil, nil),
		storeSpilled: prometheus.NewDesc("gray_object_store_spilled_bytes", "Object bytes spilled to disk.", nil, nil),
		storeCount:   prometheus.NewDesc("gray_object_store_objects", "Objects in the head's store.", nil, nil),
		gpuUtil:      prometheus.NewDesc("gray_gpu_utilization_percent", "GPU utilisation (NVML).", []string{"node", "index", "uuid", "model"}, nil),
		gpuMemUsed:   prometheus.NewDesc("gray_gpu_memory_used_bytes", "GPU memory in use (NVML).", []string{"node", "index", "uuid", "model"}, nil),
		gpuMemTotal:  prometheus.NewDesc("gray_gpu_memory_total_bytes", "GPU memory (NVML).", []string{"node", "index", "uuid", "model"}, nil),
		gpuWithdrawn: prometheus.NewDesc("gray_gpu_withdrawn", "1 while a GPU is withdrawn after failing verification.", []string{"node", "index", "uuid", "model"}, nil),
		sessions:     prometheus.NewDesc("gray_client_sessions", "Connected Ray Client sessions.", nil, nil),
		pulled: prometheus.NewDesc("gray_object_pulled_bytes_total",
			"Object bytes providers pulled, directly from other providers (path=direct) or relayed by the head (path=relayed).",
			[]string{"node", "path"}, nil),
	}
}

func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.nodes, m.resTotal, m.resAvail, m.storeUsed, m.storeSpilled, m.storeCount,
		m.gpuUtil, m.gpuMemUsed, m.gpuMemTotal, m.gpuWithdrawn, m.sessions, m.pulled} {
		ch <- d
	}
}

func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	h := m.h
	states := map[string]int{}
	for _, n := range h.Cluster.Nodes() {
		states[string(n.State)]++
		region := n.Labels[RegionLabel]
		for k, v := range n.Total {
			ch <- prometheus.MustNewConstMetric(m.resTotal, prometheus.GaugeValue, v, n.ID.Hex(), region, k)
		}
		for k, v := range n.Available {
			ch <- prometheus.MustNewConstMetric(m.resAvail, prometheus.GaugeValue, v, n.ID.Hex(), region, k)
		}
	}
	for st, c := range states {
		ch <- prometheus.MustNewConstMetric(m.nodes, prometheus.GaugeValue, float64(c), st)
	}
	ch <- prometheus.MustNewConstMetric(m.storeUsed, prometheus.GaugeValue, float64(h.Store.Used()))
	ch <- prometheus.MustNewConstMetric(m.storeSpilled, prometheus.GaugeValue, float64(h.Store.SpilledBytes()))
	ch <- prometheus.MustNewConstMetric(m.storeCount, prometheus.GaugeValue, float64(h.Store.Len()))
	ch <- prometheus.MustNewConstMetric(m.sessions, prometheus.GaugeValue, float64(len(h.Client.Sessions())))
	if h.Nodes != nil {
		for id, t := range h.Nodes.Transfers() {
			ch <- prometheus.MustNewConstMetric(m.pulled, prometheus.CounterValue, float64(t.Direct), id.Hex(), "direct")
			ch <- prometheus.MustNewConstMetric(m.pulled, prometheus.CounterValue, float64(t.Relayed), id.Hex(), "relayed")
		}
	}
	for _, n := range h.Cluster.Nodes() {
		if n.State == gcs.NodeDead {
			continue
		}
		for _, d := range h.NodeGPUs(n.ID) {
			labels := []string{n.ID.Hex(), strconv.Itoa(d.Index), d.UUID, d.AcceleratorType}
			if d.UtilizationPct >= 0 {
				ch <- prometheus.MustNewConstMetric(m.gpuUtil, prometheus.GaugeValue, float64(d.UtilizationPct), labels...)
			}
			ch <- prometheus.MustNewConstMetric(m.gpuMemUsed, prometheus.GaugeValue, float64(d.MemoryUsedBytes), labels...)
			ch <- prometheus.MustNewConstMetric(m.gpuMemTotal, prometheus.GaugeValue, float64(d.MemoryBytes), labels...)
			withdrawn := 0.0
			if d.Withdrawn {
				withdrawn = 1
			}
			ch <- prometheus.MustNewConstMetric(m.gpuWithdrawn, prometheus.GaugeValue, withdrawn, labels...)
		}
	}
}

func (h *Head) metricsHandler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(newMetrics(h))
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}

// Metrics serves the Prometheus text /metrics serves (for tests and
// embedding).
func (h *Head) Metrics() http.Handler { return h.metricsHandler() }

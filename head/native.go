package head

import (
	"context"
	"fmt"
	"net"

	"github.com/gray-cluster/gray/gcs"
	"github.com/gray-cluster/gray/native/node"
	"github.com/gray-cluster/gray/resledger"
)

// NativeConfig turns on the head's native Ray node: Ray's GCS gRPC
// services, a raylet and a plasma store, so that stock core workers and
// `ray.init(address="HEAD:PORT")` drivers run on gray unmodified.
type NativeConfig struct {
	Enabled bool
	// GCSPort is the GCS gRPC port (0 picks one).
	GCSPort int
	// Required makes a native node that cannot start (its port taken) fail
	// the head; otherwise the head goes on serving ray:// without it.
	Required bool
	// TempDir is Ray's temp dir for the session directory ("" = /tmp/ray).
	TempDir string
	// NodeID is the native raylet's 28-byte id (nil = random); the CLI
	// puts it on the process command line, where stock drivers look.
	NodeID []byte
}

// startNative starts the native node over the head's KV, offering the
// same resources as the head's own raylet.
// Both draw from one resource ledger, so a CPU or GPU is granted to one
// world at a time.
func (h *Head) startNative(ctx context.Context, res map[string]float64, ledger *resledger.Ledger, pyVersion string) error {
	nc := h.cfg.Native
	gpuIDs := make([]int, 0, len(h.GPUs))
	for i := range h.GPUs {
		gpuIDs = append(gpuIDs, i)
	}
	n, err := node.New(node.Config{
		GCSPort: nc.GCSPort, TempDir: nc.TempDir, NodeID: nc.NodeID, Python: h.cfg.Python, PythonVersion: pyVersion,
		Resources: res, Labels: h.cfg.Labels, GPUIDs: gpuIDs, Ledger: ledger, ObjectStoreMemory: h.cfg.ObjectStoreMemory,
		PrestartWorkers: h.cfg.PrestartWorkers, IdleWorkerTimeout: h.cfg.IdleWorkerTimeout,
		KV: h.KV, Tables: gcs.NewNativeTables(h.gcsStore), NextJobID: h.Jobs.NextID, Logger: h.log,
		// A head whose Ray Client port is on loopback serves this machine
		// only; so does its native node, though it listens on the node IP.
		// In token mode it serves this machine only too: stock native
		// drivers carry no gray token (see README, native GCS and tokens).
		LocalOnly: loopbackHost(h.cfg.ClientAddr) || h.auth.Enabled(),
	})
	if err != nil {
		return fmt.Errorf("native node: %w", err)
	}
	if err := n.Start(ctx); err != nil {
		return fmt.Errorf("native node: %w", err)
	}
	h.Native = n
	return nil
}

func loopbackHost(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// GCSAddress is the native GCS address ("" when native mode is off).
func (h *Head) GCSAddress() string {
	if h.Native == nil {
		return ""
	}
	return h.Native.GCSAddress()
}

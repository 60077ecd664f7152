package head

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/gray-cluster/gray/gcs"
	"github.com/gray-cluster/gray/tunnel"
)

// takeLease makes this head the store's only active head. With a Redis
// store (which several heads may share) it waits for the leader lease, as a
// standby while another head holds it, then keeps renewing it; a head that
// loses it stops at once (Config.OnLeaseLost). Other stores belong to one
// process and need none.
func (h *Head) takeLease(ctx context.Context, st gcs.Store) error {
	rs, ok := st.(*gcs.RedisStore)
	if !ok {
		return nil
	}
	l := rs.Lease(h.leaseOwner(), h.cfg.GCSLeaseTTL)
	var proxy *tunnel.Forwarder
	acquired, err := l.Acquire(ctx, func(holder string) {
		h.log.Warn("standby head: another head holds the GCS lease; waiting to take over",
			"holder", holder, "storage", st.Describe(), "ttl", l.TTL())
		// While waiting, its Ray Client port forwards to the active head.
		p, bound, err := startStandbyProxy(h.cfg.ClientAddr, l, h.log)
		if err != nil {
			h.log.Warn("standby head: cannot forward the Ray Client port to the active head", "addr", h.cfg.ClientAddr, "err", err)
			return
		}
		proxy = p
		h.log.Info("standby head: Ray Client port forwards to the active head", "addr", bound)
	})
	if proxy != nil {
		_ = proxy.Close()
	}
	if err != nil {
		return fmt.Errorf("head: GCS lease on %s: %w", st.Describe(), err)
	}
	h.log.Info("GCS lease taken: this head is active", "owner", l.Owner(), "ttl", l.TTL(),
		"waited", time.Since(acquired).Round(time.Millisecond))
	h.lease = l
	go func() {
		err := l.Hold(ctx, acquired)
		if err == nil {
			return
		}
		h.log.Error("lost the GCS lease: another head may be active; stopping", "err", err)
		if h.cfg.OnLeaseLost != nil {
			h.cfg.OnLeaseLost(err)
			return
		}
		os.Exit(3)
	}()
	return nil
}

// leaseOwner names this head in the lease: its host and state directory,
// so that a head restarted on the same state after a kill -9 takes its own
// lease back at once instead of waiting for it to expire (two live heads
// cannot share one state directory: they would share its ports).
func (h *Head) leaseOwner() string {
	if h.cfg.StateDir == "" {
		return gcs.NewLeaseOwner()
	}
	dir, err := filepath.Abs(h.cfg.StateDir)
	if err != nil {
		dir = h.cfg.StateDir
	}
	host, _ := os.Hostname()
	return host + ":" + dir
}

// releaseLease hands the lease over at once (a standby need not wait for
// it to expire).
func (h *Head) releaseLease() {
	if h.lease == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := h.lease.Release(ctx); err != nil {
		h.log.Warn("releasing the GCS lease", "err", err)
	}
	h.lease = nil
}

package head

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/gray-cluster/gray/gcs"
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
	l := rs.Lease("", h.cfg.GCSLeaseTTL)
	acquired, err := l.Acquire(ctx, func(holder string) {
		h.log.Warn("standby head: another head holds the GCS lease; waiting to take over",
			"holder", holder, "storage", st.Describe(), "ttl", l.TTL())
	})
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

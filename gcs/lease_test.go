package gcs

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func TestLeaseTiming(t *testing.T) {
	t0 := time.Unix(1000, 0)
	for _, c := range []struct {
		ttl          time.Duration
		every, after time.Duration
	}{
		{3 * time.Second, time.Second, 2700 * time.Millisecond},
		{10 * time.Second, 10 * time.Second / 3, 9 * time.Second},
		{300 * time.Millisecond, 100 * time.Millisecond, 270 * time.Millisecond},
	} {
		if got := RenewEvery(c.ttl); got != c.every {
			t.Errorf("RenewEvery(%s) = %s, want %s", c.ttl, got, c.every)
		}
		got := StepDownAt(t0, c.ttl)
		if got != t0.Add(c.after) {
			t.Errorf("StepDownAt(t0, %s) = t0+%s, want t0+%s", c.ttl, got.Sub(t0), c.after)
		}
		// A holder steps down before the key can expire, with room for at
		// least two renewals first.
		if !got.Before(t0.Add(c.ttl)) || got.Sub(t0) < 2*RenewEvery(c.ttl) {
			t.Errorf("ttl %s: step down at t0+%s", c.ttl, got.Sub(t0))
		}
	}
}

func openRedisForLease(t *testing.T) *RedisStore {
	t.Helper()
	ctx := context.Background()
	s, err := OpenRedisStore(ctx, redisNamespaceURL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestLeaseOneHolder(t *testing.T) {
	ctx := context.Background()
	s := openRedisForLease(t)
	a, b := s.Lease("a", 1500*time.Millisecond), s.Lease("b", 1500*time.Millisecond)
	if ok, _, err := a.TryAcquire(ctx); err != nil || !ok {
		t.Fatalf("a: %v %v", ok, err)
	}
	if ok, holder, err := b.TryAcquire(ctx); err != nil || ok || holder != "a" {
		t.Fatalf("b while a holds: ok=%v holder=%q err=%v", ok, holder, err)
	}
	// a renews: b keeps waiting past several ttls.
	hctx, stop := context.WithCancel(ctx)
	held := make(chan error, 1)
	go func() { held <- a.Hold(hctx, time.Now()) }()
	var waitedFor string
	bctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	_, err := b.Acquire(bctx, func(h string) { waitedFor = h })
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) || waitedFor != "a" {
		t.Fatalf("b.Acquire while a holds: %v (waited for %q)", err, waitedFor)
	}
	stop()
	if err := <-held; err != nil {
		t.Fatalf("a.Hold: %v", err)
	}
	// a stops renewing (as a killed head): b takes the lease on expiry.
	if _, err := b.Acquire(ctx, nil); err != nil {
		t.Fatal(err)
	}
	// a finds it lost at its next renewal.
	if err := a.Hold(ctx, time.Now()); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("a.Hold after b took over: %v", err)
	}
	// Release is compare-and-delete: a's does nothing, b's frees it.
	if err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if ok, holder, _ := a.TryAcquire(ctx); ok || holder != "b" {
		t.Fatalf("after a's release: ok=%v holder=%q", ok, holder)
	}
	if err := b.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if ok, _, err := a.TryAcquire(ctx); err != nil || !ok {
		t.Fatalf("after b's release: %v %v", ok, err)
	}
}

func TestLeaseRedisUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nobody listens there now
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer c.Close()
	l := &Lease{c: c, key: "k", owner: "o", ttl: 300 * time.Millisecond}
	start := time.Now()
	err = l.Hold(context.Background(), start)
	if !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("Hold without Redis: %v", err)
	}
	if since := time.Since(start); since < StepDownAt(start, l.ttl).Sub(start) {
		t.Fatalf("stepped down after %s, before its deadline", since)
	}
}

func TestLeaseClientAddrOnlyFromTheHolder(t *testing.T) {
	ctx := context.Background()
	s := openRedisForLease(t)
	a, b := s.Lease("a", 1500*time.Millisecond), s.Lease("b", 1500*time.Millisecond)
	if addr, err := b.LeaderClientAddr(ctx); err != nil || addr != "" {
		t.Fatalf("before any leader: %q %v", addr, err)
	}
	if ok, _, err := a.TryAcquire(ctx); err != nil || !ok {
		t.Fatalf("a: %v %v", ok, err)
	}
	if err := b.PublishClientAddr(ctx, "10.0.0.2:10001"); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("a non-holder published: %v", err)
	}
	if err := a.PublishClientAddr(ctx, "10.0.0.1:10001"); err != nil {
		t.Fatal(err)
	}
	if addr, err := b.LeaderClientAddr(ctx); err != nil || addr != "10.0.0.1:10001" {
		t.Fatalf("standby reads %q %v", addr, err)
	}
}

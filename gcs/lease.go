package gcs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/redis/go-redis/v9"
)

// The leader lease: at most one head serves a Redis store's tables. The
// active head holds a key in Redis (SET key owner NX PX ttl) and extends it
// every ttl/3 while it still owns it; a head that cannot extend it steps
// down before the key can expire, so that a standby that takes the key
// after expiry never serves beside it.

// ErrLeaseLost: the lease is another owner's, or it could not be renewed
// in time (Redis unreachable).
var ErrLeaseLost = errors.New("gcs lease: lost")

// DefaultLeaseTTL is the lease's time to live when none is given.
const DefaultLeaseTTL = 3 * time.Second

// extendScript extends the lease when it is still the caller's.
var extendScript = redis.NewScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then
  return redis.call("PEXPIRE", KEYS[1], ARGV[2])
end
return 0`)

// releaseScript deletes the lease when it is still the caller's.
var releaseScript = redis.NewScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then
  return redis.call("DEL", KEYS[1])
end
return 0`)

// Lease is one head's claim on the leader key of a Redis store.
type Lease struct {
	c     *redis.Client
	key   string
	owner string
	ttl   time.Duration
}

// Lease returns the store's leader lease for owner ("" picks
// host:pid:random) with the given ttl (<= 0: DefaultLeaseTTL).
func (s *RedisStore) Lease(owner string, ttl time.Duration) *Lease {
	if ttl <= 0 {
		ttl = DefaultLeaseTTL
	}
	if owner == "" {
		owner = NewLeaseOwner()
	}
	return &Lease{c: s.c, key: s.prefix + "lease", owner: owner, ttl: ttl}
}

// NewLeaseOwner is a fresh owner name: host, pid and a random part.
func NewLeaseOwner() string {
	host, _ := os.Hostname()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%s:%d:%s", host, os.Getpid(), hex.EncodeToString(b))
}

// Owner is this lease's owner name; TTL its time to live.
func (l *Lease) Owner() string      { return l.owner }
func (l *Lease) TTL() time.Duration { return l.ttl }

// RenewEvery is how often a holder extends a lease of this ttl.
func RenewEvery(ttl time.Duration) time.Duration { return ttl / 3 }

// StepDownAt is when a holder whose last successful renewal was sent at
// sent must stop serving: before the key can expire in Redis (it was set
// to expire ttl after Redis ran the renewal, which is after sent), less a
// margin of a tenth of the ttl for clock rate differences.
func StepDownAt(sent time.Time, ttl time.Duration) time.Time {
	return sent.Add(ttl - ttl/10)
}

// TryAcquire takes the lease if no one holds it. It reports whether it
// did and, when not, the holder.
func (l *Lease) TryAcquire(ctx context.Context) (ok bool, holder string, err error) {
	ok, err = l.c.SetNX(ctx, l.key, l.owner, l.ttl).Result()
	if err != nil {
		return false, "", redisErr(err)
	}
	if ok {
		return true, l.owner, nil
	}
	holder, err = l.c.Get(ctx, l.key).Result()
	if errors.Is(err, redis.Nil) {
		return false, "", nil // expired in between: the next try takes it
	}
	if err != nil {
		return false, "", redisErr(err)
	}
	if holder == l.owner { // ours already (a retried SET)
		return true, holder, l.extend(ctx)
	}
	return false, holder, nil
}

// Acquire waits until the lease is this owner's, trying every ttl/3;
// waiting is called once, with the holder, when a try finds it held.
// Errors reaching Redis are retried until ctx ends. It returns when the
// successful try was sent (what Hold counts from).
func (l *Lease) Acquire(ctx context.Context, waiting func(holder string)) (time.Time, error) {
	told := false
	for {
		sent := time.Now()
		ok, holder, err := l.TryAcquire(ctx)
		if err == nil && ok {
			return sent, nil
		}
		if err == nil && !told && holder != "" {
			told = true
			if waiting != nil {
				waiting(holder)
			}
		}
		select {
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("gcs lease: %w", ctx.Err())
		case <-time.After(RenewEvery(l.ttl)):
		}
	}
}

func (l *Lease) extend(ctx context.Context) error {
	n, err := extendScript.Run(ctx, l.c, []string{l.key}, l.owner, l.ttl.Milliseconds()).Int64()
	if err != nil {
		return redisErr(err)
	}
	if n == 0 {
		return fmt.Errorf("%w: another head holds it", ErrLeaseLost)
	}
	return nil
}

// Hold renews the lease (acquired at acquired) every ttl/3 until ctx ends
// (it returns nil) or the lease is lost: another owner holds it, or no
// renewal succeeded in time (it returns an error wrapping ErrLeaseLost, at
// StepDownAt of the last success).
func (l *Lease) Hold(ctx context.Context, acquired time.Time) error {
	last := acquired
	tick := time.NewTicker(RenewEvery(l.ttl))
	defer tick.Stop()
	for {
		deadline := StepDownAt(last, l.ttl)
		if !time.Now().Before(deadline) {
			return fmt.Errorf("%w: not renewed within %s", ErrLeaseLost, l.ttl)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Until(deadline)):
			return fmt.Errorf("%w: not renewed within %s", ErrLeaseLost, l.ttl)
		case <-tick.C:
		}
		sent := time.Now()
		rctx, cancel := context.WithDeadline(ctx, deadline)
		err := l.extend(rctx)
		cancel()
		switch {
		case err == nil:
			last = sent
		case errors.Is(err, ErrLeaseLost):
			return err
		case ctx.Err() != nil:
			return nil
		}
		// Another error (Redis unreachable): retried at the next tick,
		// until the deadline.
	}
}

// Release gives the lease up if it is still this owner's.
func (l *Lease) Release(ctx context.Context) error {
	if err := releaseScript.Run(ctx, l.c, []string{l.key}, l.owner).Err(); err != nil {
		return redisErr(err)
	}
	return nil
}

// The active head's Ray Client address, published beside the lease so that
// a standby can forward its own Ray Client port to it: a stock client
// knows one address, and one given the standby's follows the failover.

// PublishClientAddr records addr as the leader's Ray Client address. Only
// the holder publishes (a head that lost the lease gets ErrLeaseLost).
func (l *Lease) PublishClientAddr(ctx context.Context, addr string) error {
	holder, err := l.c.Get(ctx, l.key).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return redisErr(err)
	}
	if holder != l.owner {
		return ErrLeaseLost
	}
	if err := l.c.Set(ctx, l.key+":client", addr, 0).Err(); err != nil {
		return redisErr(err)
	}
	return nil
}

// LeaderClientAddr is the Ray Client address the leader published ("" when
// none has).
func (l *Lease) LeaderClientAddr(ctx context.Context) (string, error) {
	addr, err := l.c.Get(ctx, l.key+":client").Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", redisErr(err)
	}
	return addr, nil
}

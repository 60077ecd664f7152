package linkemu

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/bits"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Link shapes one direction of traffic. The zero Link forwards everything at
// once.
type Link struct {
	// Delay is the one-way propagation delay.
	Delay time.Duration
	// Jitter adds a uniform random offset in [−Jitter, +Jitter] to Delay for
	// each packet (the sum is never below zero), so no packet arrives before
	// Delay−Jitter. UDP packets may reorder within the jitter window unless
	// InOrder is set; TCP data never reorders.
	Jitter time.Duration
	// Loss is the probability, 0 to 1, that a UDP packet is dropped,
	// independently of every other packet. TCP ignores it: the proxy carries
	// a byte stream, and a lost segment would only show up as the sender's
	// retransmission delay, which we do not model. TCP is delay + bandwidth.
	Loss float64
	// Bandwidth is the link rate in bits per second (payload bytes only, no
	// IP/UDP/TCP headers); 0 means unlimited. See ParseBandwidth.
	Bandwidth int64
	// QueueBytes bounds the bottleneck queue in front of a Bandwidth-limited
	// link: UDP packets that do not fit are dropped (drop-tail), TCP readers
	// wait. Default: the bandwidth-delay product (at least 64 KiB, at most
	// 64 MiB), or 1 MiB when Delay is zero. Unused without Bandwidth.
	QueueBytes int
	// InOrder keeps UDP packets in arrival order despite Jitter, by never
	// letting a packet be due before the one ahead of it.
	InOrder bool
}

func (l Link) validate() error {
	switch {
	case l.Delay < 0:
		return fmt.Errorf("linkemu: negative delay %v", l.Delay)
	case l.Jitter < 0:
		return fmt.Errorf("linkemu: negative jitter %v", l.Jitter)
	case !(l.Loss >= 0 && l.Loss <= 1):
		return fmt.Errorf("linkemu: loss %v outside [0, 1]", l.Loss)
	case l.Bandwidth < 0:
		return fmt.Errorf("linkemu: negative bandwidth %d", l.Bandwidth)
	case l.QueueBytes < 0:
		return fmt.Errorf("linkemu: negative queue size %d", l.QueueBytes)
	}
	return nil
}

// queueLimit is QueueBytes with its default applied.
func (l Link) queueLimit() int {
	if l.QueueBytes > 0 {
		return l.QueueBytes
	}
	if l.Delay == 0 || l.Bandwidth == 0 {
		return 1 << 20
	}
	bdp := float64(l.Bandwidth) / 8 * l.Delay.Seconds()
	return int(min(max(bdp, 64<<10), 64<<20))
}

// String describes the link for logs.
func (l Link) String() string {
	var parts []string
	if l.Delay > 0 {
		parts = append(parts, "delay "+l.Delay.String())
	}
	if l.Jitter > 0 {
		parts = append(parts, "jitter ±"+l.Jitter.String())
	}
	if l.Loss > 0 {
		parts = append(parts, "loss "+strconv.FormatFloat(l.Loss*100, 'g', -1, 64)+"%")
	}
	if l.Bandwidth > 0 {
		parts = append(parts, "bandwidth "+FormatBandwidth(l.Bandwidth), "queue "+strconv.Itoa(l.queueLimit())+"B")
	}
	if l.InOrder {
		parts = append(parts, "in order")
	}
	if len(parts) == 0 {
		return "transparent"
	}
	return strings.Join(parts, ", ")
}

// Config configures a proxy.
type Config struct {
	// Up shapes client→target traffic, Down target→client.
	Up, Down Link
	// Seed seeds the loss and jitter draws (each direction its own streams),
	// so a run can be repeated packet for packet. Every value, 0 included,
	// is a fixed seed.
	Seed int64
	// Logger receives session and connection events at debug level and
	// unexpected errors at warn. Default slog.Default().
	Logger *slog.Logger
	// IdleTimeout expires a UDP session (its upstream socket) after this long
	// without a packet either way. A client heard again afterwards gets a new
	// session, and the target sees a new source port. Default 2 minutes.
	IdleTimeout time.Duration
	// MaxSessions bounds the UDP sessions; datagrams from further clients are
	// dropped (Stats: DroppedError). Default 1024.
	MaxSessions int
	// MaxInFlightBytes bounds the bytes held in propagation: for UDP per
	// direction of the proxy (excess packets are dropped, counted as
	// DroppedQueue), for TCP per direction of each connection (the reader
	// stops reading until the writer catches up). Default 16 MiB.
	MaxInFlightBytes int
}

const (
	defaultIdleTimeout = 2 * time.Minute
	defaultMaxSessions = 1024
	defaultMaxInFlight = 32 << 20
)

func (c *Config) normalize() error {
	if err := c.Up.validate(); err != nil {
		return fmt.Errorf("up: %w", err)
	}
	if err := c.Down.validate(); err != nil {
		return fmt.Errorf("down: %w", err)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = defaultIdleTimeout
	}
	if c.MaxSessions <= 0 {
		c.MaxSessions = defaultMaxSessions
	}
	if c.MaxInFlightBytes <= 0 {
		c.MaxInFlightBytes = defaultMaxInFlight
	}
	return nil
}

// Stats counts the traffic of a proxy.
type Stats struct {
	Up, Down DirStats
	// Sessions is the number of live UDP sessions or TCP connections.
	Sessions int
}

// DirStats counts one direction. For TCP a "packet" is one chunk read from a
// connection. Received − Forwarded − Dropped are in flight (for TCP, also
// what was still in flight when its connection was torn down, which is not
// counted as dropped).
type DirStats struct {
	Received, ReceivedBytes   uint64 // entered the emulator
	Forwarded, ForwardedBytes uint64 // delivered to the far side
	Dropped, DroppedBytes     uint64 // all drops: the sum of the four below
	DroppedLoss               uint64 // random loss (Link.Loss)
	DroppedQueue              uint64 // bottleneck queue or MaxInFlightBytes full
	DroppedPartition          uint64 // arrived, or came due, while partitioned
	DroppedError              uint64 // no session could be had, or the send failed
}

type dropReason int

const (
	keep dropReason = iota
	dropLoss
	dropQueue
	dropPartition
	dropError
)

// counters are one direction's DirStats, updated atomically.
type counters struct {
	received, receivedBytes   atomic.Uint64
	forwarded, forwardedBytes atomic.Uint64
	droppedBytes              atomic.Uint64
	drops                     [dropError + 1]atomic.Uint64
}

func (c *counters) receive(n int) {
	c.received.Add(1)
	c.receivedBytes.Add(uint64(n))
}

func (c *counters) forward(n int) {
	c.forwarded.Add(1)
	c.forwardedBytes.Add(uint64(n))
}

func (c *counters) drop(why dropReason, n int) {
	c.drops[why].Add(1)
	c.droppedBytes.Add(uint64(n))
}

func (c *counters) snapshot() DirStats {
	s := DirStats{
		Forwarded:        c.forwarded.Load(),
		ForwardedBytes:   c.forwardedBytes.Load(),
		DroppedBytes:     c.droppedBytes.Load(),
		DroppedLoss:      c.drops[dropLoss].Load(),
		DroppedQueue:     c.drops[dropQueue].Load(),
		DroppedPartition: c.drops[dropPartition].Load(),
		DroppedError:     c.drops[dropError].Load(),
	}
	s.Dropped = s.DroppedLoss + s.DroppedQueue + s.DroppedPartition + s.DroppedError
	// Read last, so that Received >= Forwarded + Dropped in every snapshot.
	s.Received, s.ReceivedBytes = c.received.Load(), c.receivedBytes.Load()
	return s
}

// clock measures monotonic time since a proxy was made.
type clock struct{ epoch time.Time }

func newClock() clock                        { return clock{epoch: time.Now()} }
func (c clock) now() time.Duration           { return time.Since(c.epoch) }
func (c clock) at(d time.Duration) time.Time { return c.epoch.Add(d) }

// shaper is the state of one direction's link: the transmitter's busy time
// and the random streams. All packets of the direction pass through it.
type shaper struct {
	link     Link
	queueDur time.Duration // QueueBytes expressed as transmit time
	c        counters

	mu        sync.Mutex
	busyUntil time.Duration // when the transmitter is done with what it has accepted
	lastDue   time.Duration // for InOrder
	loss      *rand.Rand
	jitter    *rand.Rand
}

func newShaper(l Link, seed int64, dir uint64) *shaper {
	s := &shaper{
		link:   l,
		loss:   rand.New(rand.NewPCG(uint64(seed), dir<<1)),
		jitter: rand.New(rand.NewPCG(uint64(seed), dir<<1|1)),
	}
	if l.Bandwidth > 0 {
		s.queueDur = s.txTime(l.queueLimit())
	}
	return s
}

// txTime is how long n bytes take to serialize, rounded up so that nothing
// ever arrives early.
func (s *shaper) txTime(n int) time.Duration {
	bw := s.link.Bandwidth
	if bw <= 0 || n <= 0 {
		return 0
	}
	hi, lo := bits.Mul64(uint64(n)*8, uint64(time.Second))
	if hi >= uint64(bw) {
		return math.MaxInt64 // does not fit: forever
	}
	q, r := bits.Div64(hi, lo, uint64(bw))
	if r != 0 {
		q++
	}
	return time.Duration(min(q, math.MaxInt64))
}

// propagation draws one packet's propagation time. Called with mu held.
func (s *shaper) propagation() time.Duration {
	d := s.link.Delay
	if j := s.link.Jitter; j > 0 {
		d += time.Duration(s.jitter.Int64N(2*int64(j)+1)) - j
	}
	return max(d, 0)
}

// admit decides the fate of an n-byte UDP packet arriving at now: dropped
// (and why), or due at the returned time.
func (s *shaper) admit(n int, now time.Duration) (time.Duration, dropReason) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.link.Loss > 0 && s.loss.Float64() < s.link.Loss {
		return 0, dropLoss
	}
	start := max(now, s.busyUntil)
	tx := s.txTime(n)
	if s.link.Bandwidth > 0 && start > now && start-now+tx > s.queueDur {
		return 0, dropQueue
	}
	s.busyUntil = start + tx
	due := s.busyUntil + s.propagation()
	if s.link.InOrder {
		due = max(due, s.lastDue)
		s.lastDue = due
	}
	return due, keep
}

// reserve books the transmitter for n bytes of a TCP stream arriving at now
// and returns when they are due. If the bottleneck queue is full it books
// nothing and returns how long to wait before asking again.
func (s *shaper) reserve(n int, now time.Duration) (due, wait time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.link.Bandwidth > 0 && s.busyUntil-now > s.queueDur {
		return 0, s.busyUntil - now - s.queueDur
	}
	s.busyUntil = max(now, s.busyUntil) + s.txTime(n)
	return s.busyUntil + s.propagation(), 0
}

// ParseBandwidth parses a link rate into bits per second. It accepts a
// number (fractions allowed) and a unit:
//
//   - bits per second: "bit", "kbit", "mbit", "gbit", "tbit" (powers of
//     1000), "kibit", "mibit", "gibit", "tibit" (powers of 1024), optionally
//     written "kbit/s", and "bps", "kbps", "Mbps", "Gbps" (bits: the usual
//     networking sense, not tc's bytes), "Kb/s", "Mb/s", "Gb/s";
//   - bytes per second, with a capital B: "B/s", "KB/s" or "kB/s", "MB/s",
//     "GB/s", "TB/s" (powers of 1000), "KiB/s", "MiB/s", "GiB/s" (1024).
//
// Units other than the "B/s" ones are case-insensitive. A bare number is bits
// per second, as in tc. "", "0", "none", "off" and "unlimited" mean 0
// (unlimited).
func ParseBandwidth(s string) (int64, error) {
	t := strings.TrimSpace(s)
	switch strings.ToLower(t) {
	case "", "0", "none", "off", "unlimited":
		return 0, nil
	}
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	num, err := strconv.ParseFloat(t[:i], 64)
	if i == 0 || err != nil {
		return 0, fmt.Errorf("linkemu: bandwidth %q: want a number and a unit, like 100mbit or 10MB/s", s)
	}
	unit := strings.TrimSpace(t[i:])
	mult, err := bandwidthUnit(unit)
	if err != nil {
		return 0, fmt.Errorf("linkemu: bandwidth %q: %w", s, err)
	}
	bps := num * mult
	if bps == 0 {
		return 0, nil
	}
	if bps < 1 || bps > math.MaxInt64/2 || math.IsInf(bps, 0) || math.IsNaN(bps) {
		return 0, fmt.Errorf("linkemu: bandwidth %q out of range", s)
	}
	return int64(math.Round(bps)), nil
}

var bandwidthPrefixes = map[string]float64{
	"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12,
	"ki": 1 << 10, "mi": 1 << 20, "gi": 1 << 30, "ti": 1 << 40,
}

// bandwidthUnit returns bits per second per unit.
func bandwidthUnit(unit string) (float64, error) {
	bytes := false
	var prefix string
	switch u := strings.ToLower(unit); {
	case strings.HasSuffix(unit, "B/s"):
		bytes, prefix = true, strings.ToLower(strings.TrimSuffix(unit, "B/s"))
	case u == "":
		prefix = ""
	case strings.HasSuffix(u, "bit/s"):
		prefix = strings.TrimSuffix(u, "bit/s")
	case strings.HasSuffix(u, "bit"):
		prefix = strings.TrimSuffix(u, "bit")
	case strings.HasSuffix(u, "bps"):
		prefix = strings.TrimSuffix(u, "bps")
	case strings.HasSuffix(u, "b/s"):
		prefix = strings.TrimSuffix(u, "b/s")
	default:
		return 0, errors.New("unknown unit (want e.g. kbit, mbit, gbit, Mbps or MB/s)")
	}
	m, ok := bandwidthPrefixes[prefix]
	if !ok {
		return 0, fmt.Errorf("unknown unit prefix %q", prefix)
	}
	if bytes {
		m *= 8
	}
	return m, nil
}

// FormatBandwidth writes bits per second the way ParseBandwidth reads them.
func FormatBandwidth(bps int64) string {
	switch {
	case bps <= 0:
		return "unlimited"
	case bps%1e9 == 0:
		return strconv.FormatInt(bps/1e9, 10) + "gbit"
	case bps%1e6 == 0:
		return strconv.FormatInt(bps/1e6, 10) + "mbit"
	case bps%1e3 == 0:
		return strconv.FormatInt(bps/1e3, 10) + "kbit"
	}
	return strconv.FormatInt(bps, 10) + "bit"
}

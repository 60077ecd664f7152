package metering

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/big"
	"net/url"
	"strconv"
	"time"
	"unicode/utf8"
)

// ErrBadRecord: a usage record is malformed (see UsageRecord.Validate).
var ErrBadRecord = errors.New("metering: bad usage record")

const (
	// AmountResolution is Ray's resource granularity: amounts are counted in
	// units of 1/AmountResolution (0.0001 GPU, 0.0001 GiB) when priced.
	AmountResolution = 10_000
	// MaxAmount bounds UsageRecord.Amount so that every cost computation
	// stays exact.
	MaxAmount = 1e9
	// MaxFieldLen bounds the string fields of a record, in bytes.
	MaxFieldLen = 1024
)

// Timestamps must lie in [1970-01-01, 2262-04-11]: the range where
// time.Time.UnixNano is defined, which the canonical encoding uses.
var (
	minTime = time.Unix(0, 0)
	maxTime = time.Unix(0, math.MaxInt64)
)

// UsageRecord says that node NodeID held Amount of Resource for lease LeaseID
// of job JobID during [Start, End). ID is RecordID(NodeID, LeaseID, Seq).
//
// Durations are wall-clock nanoseconds, End.UnixNano() - Start.UnixNano();
// monotonic clock readings and locations are ignored.
type UsageRecord struct {
	ID       string    `json:"id"`
	NodeID   string    `json:"node_id"`
	JobID    string    `json:"job_id"`
	LeaseID  string    `json:"lease_id"`
	Resource string    `json:"resource"`
	Amount   float64   `json:"amount"`
	Start    time.Time `json:"start"`
	End      time.Time `json:"end"`
	Seq      uint64    `json:"seq"`
}

// RecordID is the ID of the record with sequence number seq of lease leaseID
// on node nodeID: PathEscape(nodeID) "/" PathEscape(leaseID) "/" seq in
// decimal. Escaping keeps the mapping one-to-one, so one node can never claim
// (and so block) another node's IDs.
func RecordID(nodeID, leaseID string, seq uint64) string {
	return url.PathEscape(nodeID) + "/" + url.PathEscape(leaseID) + "/" + strconv.FormatUint(seq, 10)
}

// Nanos is the record's length in nanoseconds.
func (u UsageRecord) Nanos() int64 { return u.End.UnixNano() - u.Start.UnixNano() }

// Seconds is the record's length in seconds.
func (u UsageRecord) Seconds() float64 { return float64(u.Nanos()) / 1e9 }

// Validate reports whether the record is well formed: non-empty string
// fields of at most MaxFieldLen bytes of UTF-8, ID == RecordID(NodeID,
// LeaseID, Seq), an Amount that is finite, > 0, at least 1/AmountResolution
// and at most MaxAmount, Start and End inside [1970, 2262) with End after
// Start. Errors wrap ErrBadRecord.
func (u UsageRecord) Validate() error {
	for _, f := range [...]struct{ name, v string }{
		{"id", u.ID}, {"node id", u.NodeID}, {"job id", u.JobID},
		{"lease id", u.LeaseID}, {"resource", u.Resource},
	} {
		if !validField(f.v) {
			return fmt.Errorf("%w: %s %q: empty, longer than %d bytes or not UTF-8", ErrBadRecord, f.name, f.v, MaxFieldLen)
		}
	}
	if want := RecordID(u.NodeID, u.LeaseID, u.Seq); u.ID != want {
		return fmt.Errorf("%w: id %q, want %q", ErrBadRecord, u.ID, want)
	}
	if err := checkAmount(u.Amount); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrBadRecord, u.Resource, err)
	}
	for _, t := range [...]time.Time{u.Start, u.End} {
		if !inRange(t) {
			return fmt.Errorf("%w: time %v outside [1970, 2262)", ErrBadRecord, t)
		}
	}
	if u.Nanos() <= 0 {
		return fmt.Errorf("%w: end %v not after start %v", ErrBadRecord, u.End, u.Start)
	}
	return nil
}

// validField accepts non-empty UTF-8 strings of at most MaxFieldLen bytes.
func validField(s string) bool { return s != "" && len(s) <= MaxFieldLen && utf8.ValidString(s) }

// inRange reports whether t is inside [1970, 2262), where UnixNano is
// defined.
func inRange(t time.Time) bool { return !t.Before(minTime) && !t.After(maxTime) }

// checkAmount accepts finite amounts in [1/AmountResolution, MaxAmount].
func checkAmount(a float64) error {
	switch {
	case math.IsNaN(a) || math.IsInf(a, 0):
		return fmt.Errorf("amount %v is not finite", a)
	case a <= 0:
		return fmt.Errorf("amount %v is not positive", a)
	case a > MaxAmount:
		return fmt.Errorf("amount %v above %v", a, float64(MaxAmount))
	case amountUnits(a) < 1:
		return fmt.Errorf("amount %v below the resolution 1/%d", a, AmountResolution)
	}
	return nil
}

// amountUnits is a (finite, bounded) amount in units of 1/AmountResolution,
// rounded to the nearest unit (so 0.29 GPU is 2900 units, not 2899).
func amountUnits(a float64) int64 { return int64(math.Round(a * AmountResolution)) }

// Cost prices the record: units × nanoseconds × price / (AmountResolution ×
// 3600e9), where units is Amount rounded to the nearest 1/AmountResolution.
// It is computed exactly in integers and rounded down, so it is the same on
// every machine. The record must be valid (ErrBadRecord), the price listed
// (ErrNoPrice, ErrBadPrice) and the result fit an int64 (ErrOverflow).
func (u UsageRecord) Cost(prices PriceList) (int64, error) {
	if err := u.Validate(); err != nil {
		return 0, err
	}
	price, err := prices.Lookup(u.Resource)
	if err != nil {
		return 0, err
	}
	n := new(big.Int).SetInt64(amountUnits(u.Amount))
	n.Mul(n, big.NewInt(u.Nanos()))
	n.Mul(n, big.NewInt(price))
	n.Quo(n, big.NewInt(AmountResolution*3600*int64(time.Second))) // all operands >= 0: Quo is floor
	if !n.IsInt64() {
		return 0, fmt.Errorf("%w: record %s", ErrOverflow, u.ID)
	}
	return n.Int64(), nil
}

// canonicalTag starts every canonical encoding, so a usage-record signature
// can never be replayed as a signature over any other kind of message.
const canonicalTag = "gray/billing/usage-record/v1"

// CanonicalBytes is the encoding that Sign signs and Verify checks. It is a
// length-prefixed binary encoding, big-endian throughout:
//
//	str(canonicalTag = "gray/billing/usage-record/v1")
//	str(ID) str(NodeID) str(JobID) str(LeaseID) str(Resource)
//	u64(math.Float64bits(Amount))
//	i64(Start.UnixNano()) i64(End.UnixNano())
//	u64(Seq)
//
// where str(s) is u32(len(s)) followed by the bytes of s. Two records have
// the same encoding exactly when all their fields are equal (times compared
// by UnixNano). Call it on valid records only (Validate); for others the
// times may not be representable.
func (u UsageRecord) CanonicalBytes() []byte {
	b := make([]byte, 0, 4*6+len(canonicalTag)+len(u.ID)+len(u.NodeID)+len(u.JobID)+len(u.LeaseID)+len(u.Resource)+8*4)
	for _, s := range [...]string{canonicalTag, u.ID, u.NodeID, u.JobID, u.LeaseID, u.Resource} {
		b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
		b = append(b, s...)
	}
	b = binary.BigEndian.AppendUint64(b, math.Float64bits(u.Amount))
	b = binary.BigEndian.AppendUint64(b, uint64(u.Start.UnixNano()))
	b = binary.BigEndian.AppendUint64(b, uint64(u.End.UnixNano()))
	b = binary.BigEndian.AppendUint64(b, u.Seq)
	return b
}

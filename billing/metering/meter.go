package metering

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"
)

// ErrLeaseExists: Grant was called twice for the same lease.
var ErrLeaseExists = errors.New("metering: lease already granted")

// Meter is the raylet side of metering: it tracks the open leases of one node
// and cuts UsageRecords for them. It is safe for concurrent use and does no
// I/O; the raylet signs the records (Sign) and sends them to the head.
//
// Each open lease has a segment start. Release cuts records for [start, at)
// and forgets the lease; Flush cuts records for [start, at) for every open
// lease and moves the start to at, so long-running actors are billed
// periodically and a crash loses at most one flush period. Void forgets a
// lease without a record (for attempts that failed through the provider's
// fault). An empty segment (at not after start) yields no record.
type Meter struct {
	mu     sync.Mutex
	nodeID string
	seq    uint64
	open   map[string]*openLease
}

type openLease struct {
	jobID string
	res   map[string]float64
	since time.Time
}

// NewMeter returns a meter for node nodeID whose first record gets sequence
// number firstSeq. Record IDs are RecordID(node, lease, seq), so a restarted
// raylet must start above every seq it issued before under the same node ID
// (for example uint64(now.UnixNano()) at start), or its new records would be
// taken for duplicates.
func NewMeter(nodeID string, firstSeq uint64) *Meter {
	return &Meter{nodeID: nodeID, seq: firstSeq, open: map[string]*openLease{}}
}

// NextSeq is the sequence number the next record will get.
func (m *Meter) NextSeq() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.seq
}

// Open returns the IDs of the open leases, sorted.
func (m *Meter) Open() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Sorted(maps.Keys(m.open))
}

// Grant starts metering lease leaseID of job jobID, holding resources from
// at. Resources with amount 0 are ignored; every other amount must be valid
// for a record (finite, > 0, at least 1/AmountResolution, at most MaxAmount).
// Errors wrap ErrBadRecord or ErrLeaseExists; on error nothing changes.
func (m *Meter) Grant(leaseID, jobID string, resources map[string]float64, at time.Time) error {
	for _, f := range [...]struct{ name, v string }{{"node id", m.nodeID}, {"lease id", leaseID}, {"job id", jobID}} {
		if !validField(f.v) {
			return fmt.Errorf("%w: %s %q", ErrBadRecord, f.name, f.v)
		}
	}
	if !inRange(at) {
		return fmt.Errorf("%w: grant time %v outside [1970, 2262)", ErrBadRecord, at)
	}
	res := make(map[string]float64, len(resources))
	for name, amount := range resources {
		if amount == 0 {
			continue
		}
		if !validField(name) {
			return fmt.Errorf("%w: resource name %q", ErrBadRecord, name)
		}
		if err := checkAmount(amount); err != nil {
			return fmt.Errorf("%w: lease %s, %s: %v", ErrBadRecord, leaseID, name, err)
		}
		res[name] = amount
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.open[leaseID]; ok {
		return fmt.Errorf("%w: %s", ErrLeaseExists, leaseID)
	}
	m.open[leaseID] = &openLease{jobID: jobID, res: res, since: wall(at)}
	return nil
}

// Release stops metering leaseID and returns its records for [start, at),
// one per resource in resource-name order, with increasing Seq. An unknown
// lease returns nil; so does an at outside [1970, 2262), which also leaves
// the lease open.
func (m *Meter) Release(leaseID string, at time.Time) []UsageRecord {
	if !inRange(at) {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	l, ok := m.open[leaseID]
	if !ok {
		return nil
	}
	delete(m.open, leaseID)
	return m.cut(leaseID, l, wall(at))
}

// Void stops metering leaseID without a record for its open segment, for an
// attempt that failed through the provider's fault. Records already cut by
// Flush stand. It reports whether the lease was open.
func (m *Meter) Void(leaseID string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.open[leaseID]
	delete(m.open, leaseID)
	return ok
}

// Flush cuts records for [start, at) for every open lease, in lease-ID then
// resource-name order, and continues each lease from at. Leases whose start
// is not before at are left alone, and an at outside [1970, 2262) does
// nothing.
func (m *Meter) Flush(at time.Time) []UsageRecord {
	if !inRange(at) {
		return nil
	}
	at = wall(at)
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []UsageRecord
	for _, id := range slices.Sorted(maps.Keys(m.open)) {
		l := m.open[id]
		if at.UnixNano() <= l.since.UnixNano() {
			continue
		}
		out = append(out, m.cut(id, l, at)...)
		l.since = at
	}
	return out
}

// cut returns the records of lease id for [l.since, end); m.mu is held.
func (m *Meter) cut(id string, l *openLease, end time.Time) []UsageRecord {
	if end.UnixNano() <= l.since.UnixNano() {
		return nil
	}
	out := make([]UsageRecord, 0, len(l.res))
	for _, name := range slices.Sorted(maps.Keys(l.res)) {
		seq := m.seq
		m.seq++
		out = append(out, UsageRecord{
			ID: RecordID(m.nodeID, id, seq), NodeID: m.nodeID, JobID: l.jobID, LeaseID: id,
			Resource: name, Amount: l.res[name], Start: l.since, End: end, Seq: seq,
		})
	}
	return out
}

// wall drops the monotonic reading and location, keeping the instant.
func wall(t time.Time) time.Time { return t.Round(0).UTC() }

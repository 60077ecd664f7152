package resledger

import "sync"

// Ledger is one Pool shared by the raylets that offer the same machine.
// Each raylet joins as a Member and grants only through it; a Member's
// Changed channel tells it that another member (or the GPU offer) changed
// the ledger, so work it queued may fit now. Methods are safe for
// concurrent use; the ledger never calls out while locked, so a raylet may
// call it under its own lock.
type Ledger struct {
	mu      sync.Mutex
	pool    *Pool
	members []*Member
}

// New builds a ledger with the node's totals; gpuIDs name the GPU
// instances (default 0..n-1).
func New(total map[string]float64, gpuIDs []int) *Ledger {
	return &Ledger{pool: NewPool(total, gpuIDs)}
}

// Member is one raylet's handle on a ledger.
type Member struct {
	l    *Ledger
	name string
	ch   chan struct{}
}

// Join adds a member named name (for logs) and returns its handle.
func (l *Ledger) Join(name string) *Member {
	m := &Member{l: l, name: name, ch: make(chan struct{}, 1)}
	l.mu.Lock()
	l.members = append(l.members, m)
	l.mu.Unlock()
	return m
}

// Name is the member's name.
func (m *Member) Name() string { return m.name }

// Changed receives a signal (coalesced) each time another member takes or
// gives back resources, or the offer changes.
func (m *Member) Changed() <-chan struct{} { return m.ch }

// signalLocked tells every member but self (nil: all) of a change.
func (l *Ledger) signalLocked(self *Member) {
	for _, o := range l.members {
		if o == self {
			continue
		}
		select {
		case o.ch <- struct{}{}:
		default:
		}
	}
}

// change runs f on the pool under the lock and signals the others.
func (m *Member) change(f func(p *Pool)) {
	m.l.mu.Lock()
	defer m.l.mu.Unlock()
	f(m.l.pool)
	m.l.signalLocked(m)
}

func (m *Member) read(f func(p *Pool)) {
	m.l.mu.Lock()
	defer m.l.mu.Unlock()
	f(m.l.pool)
}

// Acquire takes req if it fits now, all or nothing.
func (m *Member) Acquire(req map[string]float64) (Allocation, bool) {
	var a Allocation
	var ok bool
	m.l.mu.Lock()
	defer m.l.mu.Unlock()
	if a, ok = m.l.pool.Allocate(req); ok {
		m.l.signalLocked(m)
	}
	return a, ok
}

// Release gives an allocation back.
func (m *Member) Release(a Allocation) {
	if len(a) == 0 {
		return
	}
	m.change(func(p *Pool) { p.Release(a) })
}

// ReleaseOnly gives back one resource of a (a blocked worker's CPU) and
// returns the part released, for Reacquire.
func (m *Member) ReleaseOnly(a Allocation, name string) (parts []Part) {
	m.change(func(p *Pool) { parts = p.ReleaseOnly(a, name) })
	return parts
}

// Reacquire takes parts of name back, oversubscribing if need be.
func (m *Member) Reacquire(name string, parts []Part) {
	m.change(func(p *Pool) { p.Reacquire(name, parts) })
}

// PrepareBundle reserves a placement-group bundle (native raylet).
func (m *Member) PrepareBundle(unit map[string]float64) (b *Bundle, ok bool) {
	m.l.mu.Lock()
	defer m.l.mu.Unlock()
	if b, ok = m.l.pool.PrepareBundle(unit); ok {
		m.l.signalLocked(m)
	}
	return b, ok
}

// CommitBundle makes a prepared bundle schedulable by its group names.
func (m *Member) CommitBundle(k BundleKey, b *Bundle) {
	m.change(func(p *Pool) { p.CommitBundle(k, b) })
}

// ReturnBundle gives a bundle back.
func (m *Member) ReturnBundle(k BundleKey, b *Bundle) {
	m.change(func(p *Pool) { p.ReturnBundle(k, b) })
}

// SetOffer withdraws or offers GPUs and sets the other offered totals (see
// Pool.SetOffer); every member hears of it.
func (m *Member) SetOffer(off []bool, total map[string]float64) {
	m.l.mu.Lock()
	defer m.l.mu.Unlock()
	m.l.pool.SetOffer(off, total)
	m.l.signalLocked(nil)
}

// Fits reports whether req fits now.
func (m *Member) Fits(req map[string]float64) (ok bool) {
	m.read(func(p *Pool) { ok = p.Fits(req) })
	return ok
}

// Feasible reports whether req could ever fit.
func (m *Member) Feasible(req map[string]float64) (ok bool) {
	m.read(func(p *Pool) { ok = p.Feasible(req) })
	return ok
}

// Available is what is free, by name.
func (m *Member) Available() (out map[string]float64) {
	m.read(func(p *Pool) { out = p.Available() })
	return out
}

// Total is what is offered, by name.
func (m *Member) Total() (out map[string]float64) {
	m.read(func(p *Pool) { out = p.Total() })
	return out
}

// GPUsBusy reports which GPUs (by position in id order) have work granted.
func (m *Member) GPUsBusy() (out []bool) {
	m.read(func(p *Pool) { out = p.Busy("GPU") })
	return out
}

// Snapshot is a private copy of the pool now, for trying grants without
// taking anything.
func (m *Member) Snapshot() (out *Pool) {
	m.read(func(p *Pool) { out = p.Clone() })
	return out
}

// AddMissing adds the quantity resources of total the ledger lacks (a
// raylet's implicit node:<ip> resources); those it has keep their amounts.
func (l *Ledger) AddMissing(total map[string]float64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for name, v := range total {
		if _, ok := l.pool.res[name]; !ok && v > 0 && !IsUnitResource(name) {
			f := ToFixed(v)
			l.pool.res[name] = []instance{{id: 0, total: f, avail: f}}
		}
	}
}

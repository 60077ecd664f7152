// Package accounting is the head's side of billing: it knows each
// provider's metering key and prices, remembers which node holds which
// lease, accepts signed usage records (verified, at most once, only from the
// lease holder), prices them and charges the session's escrow in the ledger,
// crediting the provider and the protocol fee. A session whose escrow is
// spent is refused new work.
package accounting

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/gray-cluster/gray/billing/ledger"
	"github.com/gray-cluster/gray/billing/metering"
)

// Sentinel errors.
var (
	ErrUnknownNode = errors.New("accounting: unknown node")
	ErrExhausted   = errors.New("accounting: session escrow exhausted")
	ErrBadKey      = errors.New("accounting: bad metering key")
)

// Config configures accounting.
type Config struct {
	Ledger *ledger.Ledger
	// FeeBps is the protocol fee in basis points of each charge (200 = 2%).
	FeeBps int
	// SessionBudget is the most a session's escrow takes from its client's
	// balance (micro-USD); 0 takes the whole balance.
	SessionBudget int64
	Now           func() time.Time
	Logger        *slog.Logger
}

// Accounting meters a pool.
type Accounting struct {
	cfg      Config
	log      *slog.Logger
	verifier *metering.Verifier

	mu        sync.Mutex
	prices    map[string]metering.PriceList
	payout    map[string]string
	leases    map[string]string // task hex -> node
	leaseFIFO []string
	sessions  map[string]*session
}

type session struct {
	client    string
	exhausted bool
	charged   int64
}

// New returns accounting over a ledger.
func New(cfg Config) *Accounting {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Accounting{
		cfg: cfg, log: cfg.Logger.With("component", "accounting"), verifier: metering.NewVerifier(),
		prices: map[string]metering.PriceList{}, payout: map[string]string{}, leases: map[string]string{},
		sessions: map[string]*session{},
	}
}

// AddNode registers a provider's metering key, prices and payout address.
// Bad prices are refused with metering.ErrBadPrice.
func (a *Accounting) AddNode(node string, key []byte, prices metering.PriceList, payoutAddress string) error {
	if len(key) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: %d bytes", ErrBadKey, len(key))
	}
	if err := prices.Validate(); err != nil {
		return err
	}
	if err := a.verifier.AddNode(node, ed25519.PublicKey(key)); err != nil {
		return err
	}
	a.mu.Lock()
	a.prices[node] = prices
	a.payout[node] = payoutAddress
	a.mu.Unlock()
	return nil
}

// PayoutAddress is where a provider is paid ("" if it named none).
func (a *Accounting) PayoutAddress(node string) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.payout[node]
}

const maxLeases = 1 << 20

// Leased records that node holds the leases of a task (all its attempts).
func (a *Accounting) Leased(node, taskHex string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.leases[taskHex]; !ok {
		a.leaseFIFO = append(a.leaseFIFO, taskHex)
	}
	a.leases[taskHex] = node
	for len(a.leaseFIFO) > maxLeases {
		delete(a.leases, a.leaseFIFO[0])
		a.leaseFIFO = a.leaseFIFO[1:]
	}
}

func (a *Accounting) holds(node, lease string) bool {
	task, _, _ := strings.Cut(lease, ":")
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.leases[task] == node
}

// openID is the ID of the transaction that opens session's escrow.
func openID(session string) string { return "escrow-open:" + session }

// OpenSession opens a session's escrow from its client's balance. A session
// whose escrow is open already (one a restarted head resumes) gets that
// escrow back as it is: nothing more is taken from the client, and it is
// refused new work only if the escrow is empty.
func (a *Accounting) OpenSession(sessionID, client string) error {
	if _, open, err := a.cfg.Ledger.Transaction(openID(sessionID)); err != nil {
		return err
	} else if open {
		left, err := a.cfg.Ledger.Balance(ledger.Escrow(sessionID))
		if err != nil {
			return err
		}
		a.mu.Lock()
		a.sessions[sessionID] = &session{client: client, exhausted: left <= 0}
		a.mu.Unlock()
		return nil
	}
	bal, err := a.cfg.Ledger.Balance(ledger.Client(client))
	if err != nil {
		return err
	}
	budget := bal
	if a.cfg.SessionBudget > 0 && budget > a.cfg.SessionBudget {
		budget = a.cfg.SessionBudget
	}
	a.mu.Lock()
	a.sessions[sessionID] = &session{client: client, exhausted: budget <= 0}
	a.mu.Unlock()
	if budget <= 0 {
		return nil
	}
	tx, err := ledger.OpenEscrow(sessionID, client, budget, openID(sessionID), a.cfg.Now())
	if err != nil {
		return err
	}
	if err := a.cfg.Ledger.Post(tx); err != nil && !errors.Is(err, ledger.ErrDuplicate) {
		return err
	}
	return nil
}

// CloseSession returns what is left in a session's escrow to its client.
func (a *Accounting) CloseSession(sessionID string) (int64, error) {
	a.mu.Lock()
	s := a.sessions[sessionID]
	delete(a.sessions, sessionID)
	a.mu.Unlock()
	if s == nil {
		return 0, nil
	}
	return a.cfg.Ledger.CloseEscrow(sessionID, s.client, a.cfg.Now())
}

// Admit reports whether a session may submit new work.
func (a *Accounting) Admit(sessionID string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if s := a.sessions[sessionID]; s != nil && s.exhausted {
		return fmt.Errorf("%w: session %s (client %s) has spent its budget; deposit more and reconnect", ErrExhausted, sessionID, s.client)
	}
	return nil
}

// Usage accepts one signed record from node: verified, charged to the
// record's job session, credited to the node less the fee. A record of an
// unpriced resource costs nothing.
func (a *Accounting) Usage(node string, sr metering.SignedRecord) error {
	if sr.Record.NodeID != node {
		return fmt.Errorf("%w: record of node %q sent by %q", metering.ErrNotLeaseHolder, sr.Record.NodeID, node)
	}
	if err := a.verifier.Accept(sr, a.holds); err != nil {
		return err
	}
	a.mu.Lock()
	prices := a.prices[node]
	s := a.sessions[sr.Record.JobID]
	a.mu.Unlock()
	cost, err := sr.Record.Cost(prices)
	a.log.Debug("usage", "node", node, "lease", sr.Record.LeaseID, "resource", sr.Record.Resource,
		"seconds", sr.Record.Seconds(), "cost", cost, "session", s != nil, "err", err)
	if errors.Is(err, metering.ErrNoPrice) {
		return nil
	}
	if err != nil {
		return err
	}
	if cost == 0 || s == nil {
		return nil
	}
	tx, err := ledger.Charge(sr.Record.JobID, node, a.cfg.FeeBps, cost, "usage:"+sr.Record.ID, a.cfg.Now())
	if err != nil {
		return err
	}
	err = a.cfg.Ledger.Post(tx)
	switch {
	case err == nil:
		a.mu.Lock()
		s.charged += cost
		a.mu.Unlock()
	case errors.Is(err, ledger.ErrInsufficientFunds):
		a.mu.Lock()
		s.exhausted = true
		a.mu.Unlock()
		a.log.Warn("session escrow exhausted", "session", sr.Record.JobID, "client", s.client, "cost", cost)
		return fmt.Errorf("%w: %v", ErrExhausted, err)
	case errors.Is(err, ledger.ErrDuplicate):
		return nil
	}
	return err
}

package ledger

import (
	"fmt"
	"time"
)

// Account names.
const (
	// Protocol collects protocol fees.
	Protocol = "protocol"
	// ExternalDeposits is where client deposits come from; its balance is
	// minus the total deposited.
	ExternalDeposits = "external:deposits"
)

// Client is the account of client id: "client:<id>".
func Client(id string) string { return "client:" + id }

// Provider is the account of the provider running node: "provider:<node>".
func Provider(node string) string { return "provider:" + node }

// Escrow is the account holding session's budget: "escrow:<session>".
func Escrow(session string) string { return "escrow:" + session }

// MaxFeeBps is the largest protocol fee: 100%.
const MaxFeeBps = 10_000

// Fee is the protocol's part of cost at feeBps basis points, rounded down:
// floor(cost × feeBps / 10000), computed without overflow. cost must be >= 0
// and feeBps in [0, MaxFeeBps].
func Fee(cost int64, feeBps int) int64 {
	bps := int64(feeBps)
	return cost/MaxFeeBps*bps + cost%MaxFeeBps*bps/MaxFeeBps
}

// Deposit moves amount from ExternalDeposits to Client(client): money the
// client paid in. id is the idempotency key (e.g. the on-chain transfer
// signature).
func Deposit(client string, amount int64, id string, at time.Time) (Transaction, error) {
	if err := helperArgs(id, amount, client); err != nil {
		return Transaction{}, fmt.Errorf("deposit: %w", err)
	}
	return Transaction{ID: id, At: at, Memo: "deposit",
		Entries: []Entry{{ExternalDeposits, -amount}, {Client(client), amount}}}, nil
}

// OpenEscrow moves budget from Client(client) to Escrow(session). Posting it
// again under a new id tops the escrow up. Posting fails with
// ErrInsufficientFunds when the client's balance is below budget.
func OpenEscrow(session, client string, budget int64, id string, at time.Time) (Transaction, error) {
	if err := helperArgs(id, budget, session, client); err != nil {
		return Transaction{}, fmt.Errorf("open escrow: %w", err)
	}
	return Transaction{ID: id, At: at, Memo: "escrow " + session,
		Entries: []Entry{{Client(client), -budget}, {Escrow(session), budget}}}, nil
}

// Charge pays cost out of Escrow(session): Fee(cost, protocolFeeBps) to
// Protocol and the rest to Provider(provider); zero parts get no entry. id is
// the idempotency key, normally the usage record ID. Posting it fails with
// ErrInsufficientFunds when the escrow cannot cover cost (the session's
// escrow is exhausted), and ErrAccountClosed after CloseEscrow. cost must be
// > 0: zero-cost records need no charge.
func Charge(session, provider string, protocolFeeBps int, cost int64, id string, at time.Time) (Transaction, error) {
	if err := helperArgs(id, cost, session, provider); err != nil {
		return Transaction{}, fmt.Errorf("charge: %w", err)
	}
	if protocolFeeBps < 0 || protocolFeeBps > MaxFeeBps {
		return Transaction{}, fmt.Errorf("%w: charge %s: fee %d bps not in [0, %d]", ErrBadTransaction, id, protocolFeeBps, MaxFeeBps)
	}
	fee := Fee(cost, protocolFeeBps)
	entries := []Entry{{Escrow(session), -cost}}
	if cost > fee {
		entries = append(entries, Entry{Provider(provider), cost - fee})
	}
	if fee > 0 {
		entries = append(entries, Entry{Protocol, fee})
	}
	return Transaction{ID: id, At: at, Memo: "charge " + session, Entries: entries}, nil
}

func helperArgs(id string, amount int64, names ...string) error {
	if amount <= 0 {
		return fmt.Errorf("%w: %s: amount %d not positive", ErrBadTransaction, id, amount)
	}
	for _, n := range names {
		if n == "" {
			return fmt.Errorf("%w: %s: empty client, session or provider id", ErrBadTransaction, id)
		}
	}
	return nil
}

// CloseID is the ID of the transaction that refunds session's escrow.
func CloseID(session string) string { return "escrow-close:" + session }

// CloseEscrow closes Escrow(session): in one atomic step it moves the
// remainder to Client(client) under ID CloseID(session) and marks the escrow
// closed, so late charges fail with ErrAccountClosed instead of spending
// money that was refunded. It returns the amount refunded. Closing again
// returns 0 and an error wrapping ErrDuplicate, changing nothing.
func (l *Ledger) CloseEscrow(session, client string, at time.Time) (int64, error) {
	if session == "" || client == "" {
		return 0, fmt.Errorf("%w: close escrow: empty session or client id", ErrBadTransaction)
	}
	escrow := Escrow(session)
	if err := checkAccount(escrow); err != nil {
		return 0, err
	}
	if err := checkAccount(Client(client)); err != nil {
		return 0, err
	}
	return l.b.closeEscrow(escrow, Client(client), CloseID(session), "refund "+session, at)
}

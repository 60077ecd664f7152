// Package ledger is gray's durable double-entry ledger of micro-USD, kept in
// a bbolt file (Open, the default) or in Redis (OpenRedis), for heads that
// share one ledger for high availability.
//
// Conventions:
//
//   - Amounts are int64 micro-USD (1 USD = 1_000_000).
//   - An Entry's Amount is added to its account's balance: positive credits
//     the account (its balance grows), negative debits it. A transaction
//     balances when its amounts sum to zero, so money only moves.
//   - Accounts are strings: "client:<id>", "provider:<node>", "protocol",
//     "escrow:<session>", "external:<source>" (see the helpers Client,
//     Provider, Escrow). Only "external:" accounts may go negative: they are
//     the world outside the ledger (external:deposits is minus what clients
//     paid in). Every other balance stays >= 0, and the sum of all balances
//     is always 0.
//   - Transaction.ID is an idempotency key. Posting an ID a second time
//     changes nothing and returns an error wrapping ErrDuplicate (and also
//     ErrIDConflict when the entries differ from the first posting). Callers
//     that retry treat ErrDuplicate as "already done".
//
// Each Post applies entirely or not at all. With bbolt it is one read-write
// transaction, on disk when Post returns; bbolt serializes writers. With
// Redis it is one Lua script, which Redis runs atomically, so any number of
// Ledgers (in any number of processes) may post to one Redis database; it is
// as durable as that server's persistence and replication settings make it.
// A Ledger is safe for concurrent use.
package ledger

import (
	"errors"
	"fmt"
	"time"
)

// Errors returned by this package, always wrapped with detail; test with
// errors.Is.
var (
	// ErrBadTransaction: a transaction is malformed (no ID, no entries, a
	// zero amount, a bad or repeated account, ...), or so is a helper's input.
	ErrBadTransaction = errors.New("ledger: bad transaction")
	// ErrUnbalanced: the entries do not sum to zero.
	ErrUnbalanced = errors.New("ledger: transaction does not balance")
	// ErrInsufficientFunds: the transaction would drive a non-external
	// account below zero. For a Charge it means the escrow is exhausted.
	ErrInsufficientFunds = errors.New("ledger: insufficient funds")
	// ErrDuplicate: the transaction ID was posted before; nothing changed.
	ErrDuplicate = errors.New("ledger: duplicate transaction id")
	// ErrIDConflict: a duplicate ID whose entries differ from the first
	// posting's. It also matches ErrDuplicate.
	ErrIDConflict = fmt.Errorf("%w with different entries", ErrDuplicate)
	// ErrAccountClosed: the transaction touches a closed account (an escrow
	// after CloseEscrow).
	ErrAccountClosed = errors.New("ledger: account closed")
	// ErrOverflow: an amount or a balance would not fit in an int64.
	ErrOverflow = errors.New("ledger: amount overflows int64")
	// ErrCorrupt: the database holds something this package did not write.
	ErrCorrupt = errors.New("ledger: corrupt database")
)

// Limits on transactions.
const (
	MaxIDLen      = 512
	MaxAccountLen = 256
	MaxMemoLen    = 4096
	MaxEntries    = 256
)

// Entry adds Amount micro-USD to Account: positive credits, negative debits.
type Entry struct {
	Account string `json:"account"`
	Amount  int64  `json:"amount"`
}

// Transaction is a set of entries applied together. ID is its idempotency
// key (for a usage charge, the usage record ID). At is stored in UTC,
// without a monotonic reading.
type Transaction struct {
	ID      string    `json:"id"`
	Entries []Entry   `json:"entries"`
	Memo    string    `json:"memo,omitempty"`
	At      time.Time `json:"at"`
}

// Posting is one entry of an account's history.
type Posting struct {
	Seq     uint64    // order of the transaction in the ledger, from 1
	TxID    string    // the transaction's ID
	Amount  int64     // this entry's amount
	Balance int64     // the account's balance after it
	Memo    string    // the transaction's memo
	At      time.Time // the transaction's time
}

// Ledger is an open ledger: a bbolt file (Open) or a Redis database
// (OpenRedis).
type Ledger struct {
	b backend
}

// backend is a ledger store. Ledger validates what it can without reading
// the store (check, helper arguments) and leaves the rest to the backend,
// which must implement each method atomically with the semantics documented
// on the Ledger method of the same name.
type backend interface {
	// post applies t, which passed check, as one atomic step.
	post(t Transaction) error
	// closeEscrow refunds and closes escrow to client (both valid account
	// names; the refund posts under id) as one atomic step.
	closeEscrow(escrow, client, id, memo string, at time.Time) (int64, error)
	balance(account string) (int64, error)
	balances() (map[string]int64, error)
	entries(account string) ([]Posting, error)
	transaction(id string) (Transaction, bool, error)
	isClosed(account string) (bool, error)
	close() error
}

// Close closes the ledger. Later calls fail.
func (l *Ledger) Close() error { return l.b.close() }

// Post applies tx atomically. It returns, wrapped:
//
//   - ErrBadTransaction or ErrUnbalanced or ErrOverflow for a malformed
//     transaction (checked first, without reading the ledger);
//   - ErrDuplicate (and ErrIDConflict if the entries differ) when tx.ID was
//     posted before;
//   - ErrAccountClosed when an entry's account is closed;
//   - ErrOverflow when a balance would overflow;
//   - ErrInsufficientFunds when a non-external account would go negative.
//
// On any error nothing changed.
func (l *Ledger) Post(t Transaction) error {
	if err := check(t); err != nil {
		return err
	}
	return l.b.post(t)
}

// Balance is the account's balance; unknown accounts have 0.
func (l *Ledger) Balance(account string) (int64, error) { return l.b.balance(account) }

// IsClosed reports whether the account was closed (see CloseEscrow).
func (l *Ledger) IsClosed(account string) (bool, error) { return l.b.isClosed(account) }

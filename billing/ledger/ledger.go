// Package ledger is gray's durable double-entry ledger of micro-USD, kept in
// a bbolt file.
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
// Each Post is one bbolt read-write transaction: it applies entirely or not
// at all, and is on disk when Post returns. A Ledger is safe for concurrent
// use; bbolt serializes writers.
package ledger

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
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

// Ledger is an open ledger file.
type Ledger struct {
	db *bolt.DB
}

// Bucket names; bumping schemaVersion means writing a migration.
var (
	bMeta   = []byte("meta")   // "version" → schemaVersion
	bTx     = []byte("tx")     // id → JSON storedTx; NextSequence numbers them
	bBal    = []byte("bal")    // account → big-endian int64 balance
	bHist   = []byte("hist")   // account → bucket: big-endian seq → JSON storedPosting
	bClosed = []byte("closed") // account → ID of the transaction that closed it
)

const schemaVersion = "1"

// Open opens (creating if needed) the ledger file at path. It fails after a
// second rather than wait while another process holds the file.
func Open(path string) (*Ledger, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return nil, fmt.Errorf("ledger: open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bMeta, bTx, bBal, bHist, bClosed} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bMeta)
		switch v := meta.Get([]byte("version")); {
		case v == nil:
			return meta.Put([]byte("version"), []byte(schemaVersion))
		case string(v) != schemaVersion:
			return fmt.Errorf("%w: schema version %q, want %q", ErrCorrupt, v, schemaVersion)
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("ledger: open %s: %w", path, err)
	}
	return &Ledger{db: db}, nil
}

// Close closes the file. Later calls fail.
func (l *Ledger) Close() error { return l.db.Close() }

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
	return l.db.Update(func(tx *bolt.Tx) error { return post(tx, t) })
}

// Balance is the account's balance; unknown accounts have 0.
func (l *Ledger) Balance(account string) (int64, error) {
	var b int64
	err := l.db.View(func(tx *bolt.Tx) error {
		var err error
		b, err = balance(tx, account)
		return err
	})
	return b, err
}

func balance(tx *bolt.Tx, account string) (int64, error) {
	v := tx.Bucket(bBal).Get([]byte(account))
	if v == nil {
		return 0, nil
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("%w: balance of %s is %d bytes", ErrCorrupt, account, len(v))
	}
	return int64(binary.BigEndian.Uint64(v)), nil
}

func putBalance(tx *bolt.Tx, account string, b int64) error {
	return tx.Bucket(bBal).Put([]byte(account), binary.BigEndian.AppendUint64(nil, uint64(b)))
}

// IsClosed reports whether the account was closed (see CloseEscrow).
func (l *Ledger) IsClosed(account string) (bool, error) {
	var closed bool
	err := l.db.View(func(tx *bolt.Tx) error {
		closed = tx.Bucket(bClosed).Get([]byte(account)) != nil
		return nil
	})
	return closed, err
}

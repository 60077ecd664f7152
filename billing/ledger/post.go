package ledger

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"
)

// IsExternal reports whether account is outside the ledger ("external:..."),
// the only kind allowed a negative balance.
func IsExternal(account string) bool { return strings.HasPrefix(account, "external:") }

// checkAccount accepts non-empty UTF-8 names of at most MaxAccountLen bytes
// with no control characters.
func checkAccount(a string) error {
	if a == "" || len(a) > MaxAccountLen || !utf8.ValidString(a) || strings.IndexFunc(a, unicode.IsControl) >= 0 {
		return fmt.Errorf("%w: account name %q", ErrBadTransaction, a)
	}
	return nil
}

// check validates t without reading the ledger.
func check(t Transaction) error {
	switch {
	case t.ID == "" || len(t.ID) > MaxIDLen || !utf8.ValidString(t.ID):
		return fmt.Errorf("%w: id %q: empty, longer than %d bytes or not UTF-8", ErrBadTransaction, t.ID, MaxIDLen)
	case len(t.Entries) == 0 || len(t.Entries) > MaxEntries:
		return fmt.Errorf("%w: %s: %d entries, want 1 to %d", ErrBadTransaction, t.ID, len(t.Entries), MaxEntries)
	case len(t.Memo) > MaxMemoLen:
		return fmt.Errorf("%w: %s: memo longer than %d bytes", ErrBadTransaction, t.ID, MaxMemoLen)
	}
	seen := make(map[string]bool, len(t.Entries))
	var credits, debits int64 // credits >= 0, debits <= 0, each checked for overflow
	for _, e := range t.Entries {
		if err := checkAccount(e.Account); err != nil {
			return fmt.Errorf("%s: %w", t.ID, err)
		}
		if seen[e.Account] {
			return fmt.Errorf("%w: %s: account %s appears twice", ErrBadTransaction, t.ID, e.Account)
		}
		seen[e.Account] = true
		switch {
		case e.Amount == 0:
			return fmt.Errorf("%w: %s: zero amount for %s", ErrBadTransaction, t.ID, e.Account)
		case e.Amount > 0 && credits > math.MaxInt64-e.Amount,
			e.Amount < 0 && debits < math.MinInt64-e.Amount:
			return fmt.Errorf("%w: %s: entries total beyond int64", ErrOverflow, t.ID)
		case e.Amount > 0:
			credits += e.Amount
		default:
			debits += e.Amount
		}
	}
	if credits+debits != 0 { // cannot overflow: opposite signs
		return fmt.Errorf("%w: %s: credits %d, debits %d", ErrUnbalanced, t.ID, credits, -debits)
	}
	return nil
}

// storedTx is a transaction as kept in the tx bucket.
type storedTx struct {
	Seq     uint64    `json:"seq"`
	Entries []Entry   `json:"entries"`
	Memo    string    `json:"memo,omitempty"`
	At      time.Time `json:"at"`
}

// storedPosting is a history entry; memo and time live in the transaction.
type storedPosting struct {
	TxID    string `json:"tx"`
	Amount  int64  `json:"amount"`
	Balance int64  `json:"balance"`
}

// post applies the checked transaction t inside the read-write tx.
func post(tx *bolt.Tx, t Transaction) error {
	txs := tx.Bucket(bTx)
	if prev := txs.Get([]byte(t.ID)); prev != nil {
		var st storedTx
		if err := json.Unmarshal(prev, &st); err != nil {
			return fmt.Errorf("%w: transaction %s: %v", ErrCorrupt, t.ID, err)
		}
		if !slices.Equal(st.Entries, t.Entries) {
			return fmt.Errorf("%w: %s", ErrIDConflict, t.ID)
		}
		return fmt.Errorf("%w: %s", ErrDuplicate, t.ID)
	}
	closed := tx.Bucket(bClosed)
	for _, e := range t.Entries {
		if closed.Get([]byte(e.Account)) != nil {
			return fmt.Errorf("%w: %s: %s", ErrAccountClosed, t.ID, e.Account)
		}
	}
	after := make([]int64, len(t.Entries))
	for i, e := range t.Entries {
		b, err := balance(tx, e.Account)
		if err != nil {
			return err
		}
		if (e.Amount > 0 && b > math.MaxInt64-e.Amount) || (e.Amount < 0 && b < math.MinInt64-e.Amount) {
			return fmt.Errorf("%w: %s: balance of %s", ErrOverflow, t.ID, e.Account)
		}
		after[i] = b + e.Amount
		if after[i] < 0 && !IsExternal(e.Account) {
			return fmt.Errorf("%w: %s: %s has %d, needs %d", ErrInsufficientFunds, t.ID, e.Account, b, -e.Amount)
		}
	}
	seq, err := txs.NextSequence()
	if err != nil {
		return err
	}
	st := storedTx{Seq: seq, Entries: t.Entries, Memo: t.Memo, At: t.At.Round(0).UTC()}
	if err := putJSON(txs, []byte(t.ID), st); err != nil {
		return err
	}
	key := binary.BigEndian.AppendUint64(nil, seq)
	for i, e := range t.Entries {
		if err := putBalance(tx, e.Account, after[i]); err != nil {
			return err
		}
		h, err := tx.Bucket(bHist).CreateBucketIfNotExists([]byte(e.Account))
		if err != nil {
			return err
		}
		if err := putJSON(h, key, storedPosting{TxID: t.ID, Amount: e.Amount, Balance: after[i]}); err != nil {
			return err
		}
	}
	return nil
}

func putJSON(b *bolt.Bucket, key []byte, v any) error {
	js, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(key, js)
}

package ledger

import (
	"fmt"
	"math"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
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

// storedTx is a transaction as kept in the tx bucket (bbolt) or hash (Redis).
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

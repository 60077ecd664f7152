package ledger

import (
	"fmt"
	"math/big"
)

// Balances returns every account that was ever posted to, with its balance
// (possibly 0).
func (l *Ledger) Balances() (map[string]int64, error) { return l.b.balances() }

// Sum is the sum of all balances. Double entry keeps it 0; anything else
// means the store was damaged.
func (l *Ledger) Sum() (int64, error) {
	bals, err := l.Balances()
	if err != nil {
		return 0, err
	}
	sum := new(big.Int)
	for _, b := range bals {
		sum.Add(sum, big.NewInt(b))
	}
	if !sum.IsInt64() {
		return 0, fmt.Errorf("%w: balances sum to %s", ErrCorrupt, sum)
	}
	return sum.Int64(), nil
}

// Entries returns the account's history, oldest first; an account never
// posted to has none.
func (l *Ledger) Entries(account string) ([]Posting, error) { return l.b.entries(account) }

// Transaction returns the transaction posted under id, and whether there is
// one.
func (l *Ledger) Transaction(id string) (Transaction, bool, error) { return l.b.transaction(id) }

package ledger

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/big"

	bolt "go.etcd.io/bbolt"
)

// Balances returns every account that was ever posted to, with its balance
// (possibly 0).
func (l *Ledger) Balances() (map[string]int64, error) {
	out := map[string]int64{}
	err := l.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bBal).ForEach(func(k, v []byte) error {
			if len(v) != 8 {
				return fmt.Errorf("%w: balance of %s is %d bytes", ErrCorrupt, k, len(v))
			}
			out[string(k)] = int64(binary.BigEndian.Uint64(v))
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Sum is the sum of all balances. Double entry keeps it 0; anything else
// means the file was damaged.
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
func (l *Ledger) Entries(account string) ([]Posting, error) {
	var out []Posting
	err := l.db.View(func(tx *bolt.Tx) error {
		h := tx.Bucket(bHist).Bucket([]byte(account))
		if h == nil {
			return nil
		}
		return h.ForEach(func(k, v []byte) error {
			var sp storedPosting
			if len(k) != 8 || json.Unmarshal(v, &sp) != nil {
				return fmt.Errorf("%w: history of %s", ErrCorrupt, account)
			}
			t, ok, err := lookup(tx, sp.TxID)
			if err != nil || !ok {
				return fmt.Errorf("%w: history of %s names transaction %s: %v", ErrCorrupt, account, sp.TxID, err)
			}
			out = append(out, Posting{Seq: binary.BigEndian.Uint64(k), TxID: sp.TxID, Amount: sp.Amount,
				Balance: sp.Balance, Memo: t.Memo, At: t.At})
			return nil
		})
	})
	return out, err
}

// Transaction returns the transaction posted under id, and whether there is
// one.
func (l *Ledger) Transaction(id string) (Transaction, bool, error) {
	var (
		t  Transaction
		ok bool
	)
	err := l.db.View(func(tx *bolt.Tx) error {
		var err error
		t, ok, err = lookup(tx, id)
		return err
	})
	return t, ok, err
}

func lookup(tx *bolt.Tx, id string) (Transaction, bool, error) {
	v := tx.Bucket(bTx).Get([]byte(id))
	if v == nil {
		return Transaction{}, false, nil
	}
	var st storedTx
	if err := json.Unmarshal(v, &st); err != nil {
		return Transaction{}, false, fmt.Errorf("%w: transaction %s: %v", ErrCorrupt, id, err)
	}
	return Transaction{ID: id, Entries: st.Entries, Memo: st.Memo, At: st.At}, true, nil
}

package ledger

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// boltBackend keeps the ledger in a bbolt file: the default backend.
type boltBackend struct {
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
	return &Ledger{b: &boltBackend{db: db}}, nil
}

func (b *boltBackend) close() error { return b.db.Close() }

func (b *boltBackend) post(t Transaction) error {
	return b.db.Update(func(tx *bolt.Tx) error { return post(tx, t) })
}

func (b *boltBackend) balance(account string) (int64, error) {
	var bal int64
	err := b.db.View(func(tx *bolt.Tx) error {
		var err error
		bal, err = balance(tx, account)
		return err
	})
	return bal, err
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

func (b *boltBackend) isClosed(account string) (bool, error) {
	var closed bool
	err := b.db.View(func(tx *bolt.Tx) error {
		closed = tx.Bucket(bClosed).Get([]byte(account)) != nil
		return nil
	})
	return closed, err
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

func (b *boltBackend) balances() (map[string]int64, error) {
	out := map[string]int64{}
	err := b.db.View(func(tx *bolt.Tx) error {
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

func (b *boltBackend) entries(account string) ([]Posting, error) {
	var out []Posting
	err := b.db.View(func(tx *bolt.Tx) error {
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

func (b *boltBackend) transaction(id string) (Transaction, bool, error) {
	var (
		t  Transaction
		ok bool
	)
	err := b.db.View(func(tx *bolt.Tx) error {
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

// closeEscrow: see Ledger.CloseEscrow.
func (b *boltBackend) closeEscrow(escrow, client, id, memo string, at time.Time) (int64, error) {
	var refund int64
	err := b.db.Update(func(tx *bolt.Tx) error {
		closed := tx.Bucket(bClosed)
		if closed.Get([]byte(escrow)) != nil {
			return fmt.Errorf("%w: %s already closed", ErrDuplicate, escrow)
		}
		bal, err := balance(tx, escrow)
		if err != nil {
			return err
		}
		if bal > 0 {
			t := Transaction{ID: id, At: at, Memo: memo, Entries: []Entry{{escrow, -bal}, {client, bal}}}
			if err := post(tx, t); err != nil {
				return err
			}
		}
		refund = bal
		return closed.Put([]byte(escrow), []byte(id))
	})
	if err != nil {
		return 0, err
	}
	return refund, nil
}

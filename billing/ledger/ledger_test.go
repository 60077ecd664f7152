package ledger

import (
	"errors"
	"math"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func open(t *testing.T) (*Ledger, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ledger.db")
	l, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, path
}

func mustPost(t *testing.T, l *Ledger, tx Transaction) {
	t.Helper()
	if err := l.Post(tx); err != nil {
		t.Fatalf("Post(%s): %v", tx.ID, err)
	}
}

func tx(id string, entries ...Entry) Transaction {
	return Transaction{ID: id, Entries: entries, At: t0}
}

func TestPostErrors(t *testing.T) { forEachBackend(t, testPostErrors) }

func testPostErrors(t *testing.T, store opener) {
	l := mustOpen(t, store)
	mustPost(t, l, tx("fund", Entry{"external:deposits", -100}, Entry{"client:a", 100}))
	mustPost(t, l, tx("big", Entry{"external:big", -math.MaxInt64}, Entry{"client:rich", math.MaxInt64}))
	if _, err := l.CloseEscrow("old", "a", t0); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		tx   Transaction
		want error
	}{
		{"no id", tx("", Entry{"client:a", -1}, Entry{"client:b", 1}), ErrBadTransaction},
		{"long id", tx(strings.Repeat("x", MaxIDLen+1), Entry{"client:a", -1}, Entry{"client:b", 1}), ErrBadTransaction},
		{"no entries", tx("t"), ErrBadTransaction},
		{"too many entries", Transaction{ID: "t", Entries: make([]Entry, MaxEntries+1)}, ErrBadTransaction},
		{"zero amount", tx("t", Entry{"client:a", 0}), ErrBadTransaction},
		{"empty account", tx("t", Entry{"", -1}, Entry{"client:b", 1}), ErrBadTransaction},
		{"control char", tx("t", Entry{"client:a\n", -1}, Entry{"client:b", 1}), ErrBadTransaction},
		{"long account", tx("t", Entry{strings.Repeat("a", MaxAccountLen+1), -1}, Entry{"client:b", 1}), ErrBadTransaction},
		{"account twice", tx("t", Entry{"client:a", -1}, Entry{"client:a", 1}), ErrBadTransaction},
		{"long memo", Transaction{ID: "t", Memo: strings.Repeat("m", MaxMemoLen+1),
			Entries: []Entry{{"client:a", -1}, {"client:b", 1}}}, ErrBadTransaction},
		{"unbalanced", tx("t", Entry{"client:a", -10}, Entry{"client:b", 9}), ErrUnbalanced},
		{"one-sided", tx("t", Entry{"client:b", 9}), ErrUnbalanced},
		{"credits overflow", tx("t", Entry{"client:b", math.MaxInt64}, Entry{"client:c", 1}, Entry{"external:x", -1}), ErrOverflow},
		{"debits overflow", tx("t", Entry{"external:x", math.MinInt64}, Entry{"external:y", -1}, Entry{"client:c", 1}), ErrOverflow},
		{"overdraft", tx("t", Entry{"client:a", -101}, Entry{"client:b", 101}), ErrInsufficientFunds},
		{"overdraft of empty account", tx("t", Entry{"protocol", -1}, Entry{"client:b", 1}), ErrInsufficientFunds},
		{"balance overflow", tx("t", Entry{"external:deposits", -1}, Entry{"client:rich", 1}), ErrOverflow},
		{"external underflow", tx("t", Entry{"external:big", -math.MaxInt64}, Entry{"client:x", math.MaxInt64}), ErrOverflow},
		{"closed account", tx("t", Entry{"client:a", -1}, Entry{"escrow:old", 1}), ErrAccountClosed},
		{"duplicate", tx("fund", Entry{"external:deposits", -100}, Entry{"client:a", 100}), ErrDuplicate},
		{"reused id", tx("fund", Entry{"external:deposits", -5}, Entry{"client:b", 5}), ErrIDConflict},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := balances(t, l)
			err := l.Post(tt.tx)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Post() = %v, want %v", err, tt.want)
			}
			if after := balances(t, l); !equalBalances(before, after) {
				t.Fatalf("failed Post changed balances: %v → %v", before, after)
			}
			if tt.tx.ID != "fund" {
				if _, ok, _ := l.Transaction(tt.tx.ID); ok {
					t.Fatal("failed Post stored its transaction")
				}
			}
		})
	}
	// A duplicate with different memo and time is still a plain duplicate.
	dup := tx("fund", Entry{"external:deposits", -100}, Entry{"client:a", 100})
	dup.Memo, dup.At = "retry", t0.Add(time.Hour)
	if err := l.Post(dup); !errors.Is(err, ErrDuplicate) || errors.Is(err, ErrIDConflict) {
		t.Errorf("retry with new memo: %v, want ErrDuplicate only", err)
	}
}

func balances(t *testing.T, l *Ledger) map[string]int64 {
	t.Helper()
	b, err := l.Balances()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// equalBalances treats a missing account as 0.
func equalBalances(a, b map[string]int64) bool {
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	for k, v := range b {
		if a[k] != v {
			return false
		}
	}
	return true
}

func TestPersistsAcrossReopen(t *testing.T) { forEachBackend(t, testPersistsAcrossReopen) }

func testPersistsAcrossReopen(t *testing.T, store opener) {
	l := mustOpen(t, store)
	at := time.Date(2026, 3, 1, 13, 0, 0, 5, time.FixedZone("CET", 3600))
	mustPost(t, l, Transaction{ID: "d1", Memo: "hello", At: at,
		Entries: []Entry{{"external:deposits", -500}, {"client:a", 500}}})
	mustPost(t, l, tx("t1", Entry{"client:a", -200}, Entry{"escrow:s", 200}))
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Balance("client:a"); err == nil {
		t.Error("Balance after Close succeeded")
	}
	l = mustOpen(t, store)
	for acct, want := range map[string]int64{"client:a": 300, "escrow:s": 200, "external:deposits": -500, "nobody": 0} {
		if got, err := l.Balance(acct); err != nil || got != want {
			t.Errorf("Balance(%s) = %d, %v; want %d", acct, got, err, want)
		}
	}
	if err := l.Post(tx("d1", Entry{"external:deposits", -500}, Entry{"client:a", 500})); !errors.Is(err, ErrDuplicate) {
		t.Errorf("replay after reopen: %v", err)
	}
	got, ok, err := l.Transaction("d1")
	if err != nil || !ok || got.Memo != "hello" || !got.At.Equal(at) || got.At.Location() != time.UTC || len(got.Entries) != 2 {
		t.Errorf("Transaction(d1) = %+v, %v, %v", got, ok, err)
	}
	if _, ok, err := l.Transaction("nope"); ok || err != nil {
		t.Errorf("Transaction(nope) = %v, %v", ok, err)
	}
	hist, err := l.Entries("client:a")
	if err != nil {
		t.Fatal(err)
	}
	want := []Posting{
		{Seq: 1, TxID: "d1", Amount: 500, Balance: 500, Memo: "hello", At: at.UTC()},
		{Seq: 2, TxID: "t1", Amount: -200, Balance: 300, At: t0},
	}
	if len(hist) != len(want) {
		t.Fatalf("Entries = %+v", hist)
	}
	for i := range want {
		if h := hist[i]; h.Seq != want[i].Seq || h.TxID != want[i].TxID || h.Amount != want[i].Amount ||
			h.Balance != want[i].Balance || h.Memo != want[i].Memo || !h.At.Equal(want[i].At) {
			t.Errorf("Entries[%d] = %+v, want %+v", i, h, want[i])
		}
	}
	if h, err := l.Entries("nobody"); err != nil || len(h) != 0 {
		t.Errorf("Entries(nobody) = %v, %v", h, err)
	}
	if s, err := l.Sum(); err != nil || s != 0 {
		t.Errorf("Sum() = %d, %v", s, err)
	}
}

func TestOpenErrors(t *testing.T) {
	if _, err := Open(filepath.Join(t.TempDir(), "missing", "dir", "ledger.db")); err == nil {
		t.Error("Open in a missing directory succeeded")
	}
	path := filepath.Join(t.TempDir(), "other.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket(bMeta)
		if err != nil {
			return err
		}
		return b.Put([]byte("version"), []byte("99"))
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Open of a future schema: %v, want ErrCorrupt", err)
	}
}

func TestIsExternal(t *testing.T) {
	for acct, want := range map[string]bool{"external:deposits": true, "external:": true,
		"client:external:x": false, "protocol": false, "externals": false} {
		if IsExternal(acct) != want {
			t.Errorf("IsExternal(%q) = %v", acct, !want)
		}
	}
}

// Damage written behind the ledger's back is reported as ErrCorrupt, never
// read as money.
func TestCorruptFile(t *testing.T) {
	l, path := open(t)
	mustPost(t, l, tx("d1", Entry{"external:deposits", -5}, Entry{"client:a", 5}))
	l.Close()
	damage := func(bucket, key, value []byte) {
		t.Helper()
		db, err := bolt.Open(path, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucket).Put(key, value) }); err != nil {
			t.Fatal(err)
		}
	}
	reopen := func() *Ledger {
		t.Helper()
		l, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}

	damage(bTx, []byte("d1"), []byte("{not json"))
	l = reopen()
	if err := l.Post(tx("d1", Entry{"external:deposits", -5}, Entry{"client:a", 5})); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Post over a damaged transaction: %v", err)
	}
	if _, _, err := l.Transaction("d1"); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Transaction: %v", err)
	}
	if _, err := l.Entries("client:a"); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Entries: %v", err)
	}
	l.Close()

	damage(bBal, []byte("client:a"), []byte{1, 2, 3})
	l = reopen()
	defer l.Close()
	if _, err := l.Balance("client:a"); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Balance: %v", err)
	}
	if _, err := l.Sum(); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Sum: %v", err)
	}
	if err := l.Post(tx("d2", Entry{"external:deposits", -5}, Entry{"client:a", 5})); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Post to a damaged balance: %v", err)
	}
	if _, err := l.CloseEscrow("x", "a", t0); err != nil {
		t.Errorf("CloseEscrow of an untouched escrow: %v", err)
	}
}

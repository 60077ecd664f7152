package accounting

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/gray-cluster/gray/billing/ledger"
)

// A head restarted on the same ledger reopens a resumed session: it gets
// its open escrow back, takes nothing more from the client, and admits work
// even though the escrow took the client's whole balance.
func TestOpenSessionAgainKeepsTheEscrow(t *testing.T) {
	l, err := ledger.Open(filepath.Join(t.TempDir(), "ledger.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	dep, err := ledger.Deposit("alice", 10_000_000, "d1", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Post(dep); err != nil {
		t.Fatal(err)
	}
	if err := New(Config{Ledger: l}).OpenSession("01000000", "alice"); err != nil {
		t.Fatal(err)
	}
	restarted := New(Config{Ledger: l})
	if err := restarted.OpenSession("01000000", "alice"); err != nil {
		t.Fatal(err)
	}
	if err := restarted.Admit("01000000"); err != nil {
		t.Fatalf("resumed session refused: %v", err)
	}
	for acct, want := range map[string]int64{ledger.Client("alice"): 0, ledger.Escrow("01000000"): 10_000_000} {
		if got, err := l.Balance(acct); err != nil || got != want {
			t.Fatalf("%s = %d (%v), want %d", acct, got, err, want)
		}
	}
	if n, err := restarted.CloseSession("01000000"); err != nil || n != 10_000_000 {
		t.Fatalf("close refunded %d (%v)", n, err)
	}

	// A session opened with nothing to spend is still refused after a restart.
	if err := restarted.OpenSession("02000000", "bob"); err != nil {
		t.Fatal(err)
	}
	again := New(Config{Ledger: l})
	if err := again.OpenSession("02000000", "bob"); err != nil {
		t.Fatal(err)
	}
	if err := again.Admit("02000000"); !errors.Is(err, ErrExhausted) {
		t.Fatalf("empty session admitted: %v", err)
	}
}

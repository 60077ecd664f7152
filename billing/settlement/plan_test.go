package settlement

import (
	"context"
	"errors"
	"maps"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gagliardetto/solana-go"
	bolt "go.etcd.io/bbolt"

	"github.com/gray-cluster/gray/billing/ledger"
	"github.com/gray-cluster/gray/internal/testlog"
)

// offline returns a settler whose RPC endpoint is never called: planning
// does not touch the chain.
func offline(t *testing.T, l *ledger.Ledger, mint solana.PublicKey) (*Settler, *Outbox, solana.PrivateKey) {
	t.Helper()
	ob, err := OpenOutbox(filepath.Join(t.TempDir(), "outbox.db"))
	mustNil(t, err)
	t.Cleanup(func() {
		if err := ob.Check(); err != nil {
			t.Errorf("outbox invariants: %v", err)
		}
		ob.Close()
	})
	payer, err := solana.NewRandomPrivateKey()
	mustNil(t, err)
	s, err := New(ob, Config{RPC: NewClient("http://127.0.0.1:9"), Payer: payer, USDCMint: mint, Ledger: l, Logger: testlog.New(t)})
	mustNil(t, err)
	return s, ob, payer
}

// TestPlanRejectsInvalid: malformed payouts, ID reuse with other contents
// and unaffordable ledger debits are refused with their sentinel errors,
// leaving the outbox and the ledger exactly as they were.
func TestPlanRejectsInvalid(t *testing.T) {
	l, err := ledger.Open(filepath.Join(t.TempDir(), "ledger.db"))
	mustNil(t, err)
	defer l.Close()
	for _, tx := range []func() (ledger.Transaction, error){
		func() (ledger.Transaction, error) { return ledger.Deposit("c", 5_000, "d", time.Now()) },
		func() (ledger.Transaction, error) { return ledger.OpenEscrow("s", "c", 5_000, "e", time.Now()) },
		func() (ledger.Transaction, error) { return ledger.Charge("s", "n1", 0, 5_000, "ch", time.Now()) },
	} {
		t1, err := tx()
		mustNil(t, err)
		mustNil(t, l.Post(t1))
	}
	s, ob, payer := offline(t, l, usdcMint)
	noUSDC, _, _ := offline(t, l, solana.PublicKey{})
	ctx := context.Background()
	good := Payout{ID: "ok", Provider: "n1", Recipient: wallet(t), Asset: SOL, Amount: 1_000_000, Owed: 1_000}
	ata, _, _ := solana.FindAssociatedTokenAddress(good.Recipient, usdcMint)
	with := func(f func(*Payout)) Payout { p := good; f(&p); return p }

	cases := []struct {
		name string
		s    *Settler
		p    Payout
		want error
	}{
		{"empty id", s, with(func(p *Payout) { p.ID = "" }), ErrInvalidID},
		{"long id", s, with(func(p *Payout) { p.ID = strings.Repeat("x", MaxIDLen+1) }), ErrInvalidID},
		{"control in id", s, with(func(p *Payout) { p.ID = "a\nb" }), ErrInvalidID},
		{"no provider", s, with(func(p *Payout) { p.Provider = "" }), ErrInvalidProvider},
		{"zero amount", s, with(func(p *Payout) { p.Amount = 0 }), ErrZeroAmount},
		{"dust SOL", s, with(func(p *Payout) { p.Amount = DefaultMinLamports - 1 }), ErrAmountTooSmall},
		{"absurd SOL", s, with(func(p *Payout) { p.Amount = DefaultMaxLamports + 1 }), ErrAmountTooLarge},
		{"absurd USDC", s, with(func(p *Payout) { p.Asset, p.Amount = USDC, DefaultMaxUSDC+1 }), ErrAmountTooLarge},
		{"negative owed", s, with(func(p *Payout) { p.Owed = -1 }), ErrInvalidAmount},
		{"unknown asset", s, with(func(p *Payout) { p.Asset = "BTC" }), ErrUnknownAsset},
		{"empty asset", s, with(func(p *Payout) { p.Asset = "" }), ErrUnknownAsset},
		{"USDC without mint", noUSDC, with(func(p *Payout) { p.Asset = USDC }), ErrUnknownAsset},
		{"zero recipient", s, with(func(p *Payout) { p.Recipient = solana.PublicKey{} }), ErrInvalidRecipient},
		{"payer as recipient", s, with(func(p *Payout) { p.Recipient = payer.PublicKey() }), ErrInvalidRecipient},
		{"token account as recipient", s, with(func(p *Payout) { p.Recipient = ata }), ErrInvalidRecipient},
		{"program as recipient", s, with(func(p *Payout) { p.Recipient = solana.TokenProgramID }), ErrInvalidRecipient},
		{"mint as recipient", s, with(func(p *Payout) { p.Recipient = usdcMint }), ErrInvalidRecipient},
		{"more owed than the ledger holds", s, with(func(p *Payout) { p.Owed = 5_001 }), ledger.ErrInsufficientFunds},
		{"owed by an unknown provider", s, with(func(p *Payout) { p.Provider = "n2" }), ledger.ErrInsufficientFunds},
	}
	bal0, err := l.Balances()
	mustNil(t, err)
	for _, c := range cases {
		err := c.s.Plan(ctx, c.p)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
		if !strings.HasPrefix(c.name, "more owed") && !strings.HasPrefix(c.name, "owed by") && !errors.Is(err, ErrInvalidPayout) {
			t.Errorf("%s: %v does not match ErrInvalidPayout", c.name, err)
		}
		if recs, _ := ob.Payouts(); len(recs) != 0 {
			t.Fatalf("%s: outbox holds %+v", c.name, recs)
		}
		if bal, _ := l.Balances(); !maps.Equal(bal, bal0) {
			t.Fatalf("%s: ledger changed: %v → %v", c.name, bal0, bal)
		}
	}

	// A good payout plans once; the same again is a no-op; other contents
	// under its ID are refused and change nothing.
	mustNil(t, s.Plan(ctx, good))
	mustNil(t, s.Plan(ctx, good))
	rec, ok, err := ob.Payout("ok")
	if err != nil || !ok || rec.State != StatePlanned || !rec.Debited || rec.Payout != good {
		t.Fatalf("record %+v, %v, %v", rec, ok, err)
	}
	bal1, _ := l.Balances()
	if bal1[ledger.Provider("n1")] != 4_000 || bal1[ExternalPayouts] != 1_000 {
		t.Fatalf("ledger after planning: %v", bal1)
	}
	for _, p := range []Payout{
		with(func(p *Payout) { p.Amount++ }),
		with(func(p *Payout) { p.Recipient = wallet(t) }),
		with(func(p *Payout) { p.Owed = 999 }),
		with(func(p *Payout) { p.Asset = USDC }),
	} {
		if err := s.Plan(ctx, p); !errors.Is(err, ErrIDConflict) {
			t.Errorf("reusing the id for %+v: %v, want ErrIDConflict", p, err)
		}
	}
	if again, _, _ := ob.Payout("ok"); again.Payout != good || !again.UpdatedAt.Equal(rec.UpdatedAt) {
		t.Errorf("record changed: %+v", again)
	}
	if bal, _ := l.Balances(); !maps.Equal(bal, bal1) {
		t.Errorf("ledger changed: %v → %v", bal1, bal)
	}
	// Without a ledger, Owed is refused.
	noLedger, ob2, _ := offline(t, nil, usdcMint)
	if err := noLedger.Plan(ctx, good); !errors.Is(err, ErrInvalidAmount) {
		t.Errorf("owed without a ledger: %v", err)
	}
	if recs, _ := ob2.Payouts(); len(recs) != 0 {
		t.Errorf("outbox holds %+v", recs)
	}
	if err := s.Retry(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("retry unknown: %v", err)
	}
	if err := s.Retry(ctx, "ok"); !errors.Is(err, ErrBadState) {
		t.Errorf("retry planned: %v", err)
	}
}

// TestInterruptedPlanFinished: a crash between the outbox write and the
// ledger debit leaves an undebited record; the next pass posts the debit
// once (or drops the record if the ledger refuses it).
func TestInterruptedPlanFinished(t *testing.T) {
	l, err := ledger.Open(filepath.Join(t.TempDir(), "ledger.db"))
	mustNil(t, err)
	defer l.Close()
	dep, _ := ledger.Deposit("c", 100, "d", time.Now())
	esc, _ := ledger.OpenEscrow("s", "c", 100, "e", time.Now())
	chg, _ := ledger.Charge("s", "n1", 0, 100, "ch", time.Now())
	for _, tx := range []ledger.Transaction{dep, esc, chg} {
		mustNil(t, l.Post(tx))
	}
	s, ob, _ := offline(t, l, usdcMint)
	now := time.Now()
	_, _, err = ob.plan(Payout{ID: "half", Provider: "n1", Recipient: wallet(t), Asset: USDC, Amount: 60, Owed: 60}, now)
	mustNil(t, err)
	_, _, err = ob.plan(Payout{ID: "broke", Provider: "n1", Recipient: wallet(t), Asset: USDC, Amount: 50, Owed: 50}, now.Add(time.Second))
	mustNil(t, err)
	mustNil(t, s.finishDebits(context.Background()))
	if r, ok, _ := ob.Payout("half"); !ok || !r.Debited {
		t.Errorf("half: %+v, want debited", r)
	}
	if _, ok, _ := ob.Payout("broke"); ok {
		t.Error("broke: the ledger cannot cover it, want it dropped")
	}
	mustNil(t, s.finishDebits(context.Background()))
	if b, _ := l.Balance(ledger.Provider("n1")); b != 40 {
		t.Errorf("provider balance %d, want 40", b)
	}
}

// TestCheckFindsCorruption: Check notices an index that disagrees with the
// records.
func TestCheckFindsCorruption(t *testing.T) {
	_, ob, _ := offline(t, nil, usdcMint)
	_, _, err := ob.plan(Payout{ID: "a", Provider: "n", Recipient: wallet(t), Asset: SOL, Amount: 1_000_000}, time.Now())
	mustNil(t, err)
	mustNil(t, ob.Check())
	mustNil(t, ob.db.Update(func(tx *bolt.Tx) error { return setIndex(tx, bOpen, "a", false) }))
	if err := ob.Check(); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Check: %v, want ErrCorrupt", err)
	}
	mustNil(t, ob.db.Update(func(tx *bolt.Tx) error { return setIndex(tx, bOpen, "a", true) }))
}

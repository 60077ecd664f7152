package settlement

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gagliardetto/solana-go"
)

// TestRejectedTransactionFails: a transaction the node refuses (here
// TransferChecked with the wrong decimals fails preflight) is never taken
// as proof of anything: it stays live until its blockhash expires, then is
// retired; after MaxAttempts the payout is Failed, nothing was paid, and
// Retry with a fixed config pays it once.
func TestRejectedTransactionFails(t *testing.T) {
	e := newEnv(t, 10*solana.LAMPORTS_PER_SOL, "n1")
	ctx := ctxT(t)
	bad := e.settler(func(c *Config) { c.USDCDecimals = 9; c.MaxAttempts = 1; c.ConfirmTimeout = 200 * time.Millisecond })
	p := Payout{ID: "r1", Provider: "n1", Recipient: wallet(t), Asset: USDC, Amount: 1_000}
	mustNil(t, bad.Plan(ctx, p))
	sum, err := bad.SettleOnce(ctx)
	mustNil(t, err)
	r := record(t, e.ob, "r1")
	a, _, _ := e.ob.Attempt(r.Current)
	if sum.Live != 1 || r.State != StateSigned || a.Sends < 2 || !strings.Contains(a.Error, "simulation failed") {
		t.Fatalf("summary %+v, payout %s, attempt %+v: want it live, resent, with the node's error", sum, r.State, a)
	}
	e.svm.expireBlockhash()
	sum, err = bad.SettleOnce(ctx)
	mustNil(t, err)
	r = record(t, e.ob, "r1")
	if sum.Retired != 1 || len(sum.Failed) != 1 || sum.Sent != 0 || r.State != StateFailed || !strings.Contains(r.Error, "expired") {
		t.Fatalf("summary %+v, record %+v: want the attempt expired and the payout failed", sum, r)
	}
	if _, ok := e.svm.tokens(p.Recipient); ok {
		t.Fatal("a rejected transaction created the recipient's account")
	}
	if sum, _ := bad.SettleOnce(ctx); sum.Sent != 0 {
		t.Fatal("a failed payout was sent again")
	}

	good := e.settler()
	mustNil(t, good.Retry(ctx, "r1"))
	sum, err = good.SettleOnce(ctx)
	mustNil(t, err)
	if len(sum.Confirmed) != 1 {
		t.Fatalf("after retry: %+v", sum)
	}
	if got, _ := e.svm.tokens(p.Recipient); got != p.Amount {
		t.Errorf("recipient holds %d, want %d", got, p.Amount)
	}
	if r := record(t, e.ob, "r1"); len(r.Attempts) != 2 || r.State != StateConfirmed {
		t.Errorf("record %+v", r)
	}
	if err := good.Retry(ctx, "r1"); !errors.Is(err, ErrBadState) {
		t.Errorf("retrying a confirmed payout: %v", err)
	}
}

// TestPayerFundsWait: payouts the payer cannot afford are not attempted;
// they wait, Planned, and go out once the payer is funded.
func TestPayerFundsWait(t *testing.T) {
	e := newEnv(t, PayerReserve+3_000_000+fee, "n1")
	s, ctx := e.settler(func(c *Config) { c.MaxBatch = 1 }), ctxT(t)
	p1 := Payout{ID: "f1", Provider: "n1", Recipient: wallet(t), Asset: SOL, Amount: 3_000_000}
	p2 := Payout{ID: "f2", Provider: "n1", Recipient: wallet(t), Asset: SOL, Amount: 1_000_000}
	p3 := Payout{ID: "f3", Provider: "n1", Recipient: wallet(t), Asset: USDC, Amount: 200_000_000} // payer holds 100 USDC
	for _, p := range []Payout{p1, p2, p3} {
		mustNil(t, s.Plan(ctx, p))
	}
	sum, err := s.SettleOnce(ctx)
	mustNil(t, err)
	if len(sum.Confirmed) != 1 || sum.Waiting != 2 {
		t.Fatalf("summary %+v: want f1 paid, two waiting", sum)
	}
	for _, id := range []string{"f2", "f3"} {
		if r := record(t, e.ob, id); r.State != StatePlanned || len(r.Attempts) != 0 {
			t.Errorf("%s: %+v, want planned, never attempted", id, r)
		}
	}
	if st := e.svm.stats(); st.Sends != 1 {
		t.Errorf("%d sends, want 1", st.Sends)
	}
	e.svm.airdrop(e.payer.PublicKey(), solana.LAMPORTS_PER_SOL)
	e.svm.setTokens(e.payer.PublicKey(), usdcMint, 300_000_000)
	sum, err = s.SettleOnce(ctx)
	mustNil(t, err)
	if len(sum.Confirmed) != 2 || sum.Waiting != 0 {
		t.Fatalf("summary %+v", sum)
	}
	if e.svm.balance(p1.Recipient) != p1.Amount || e.svm.balance(p2.Recipient) != p2.Amount {
		t.Error("wrong SOL amounts")
	}
	if got, _ := e.svm.tokens(p3.Recipient); got != p3.Amount {
		t.Errorf("USDC recipient holds %d", got)
	}
}

// TestPriorityFee: with a compute-unit price the transaction carries
// compute-budget instructions and the payer pays exactly the signature fee
// plus price × limit.
func TestPriorityFee(t *testing.T) {
	e := newEnv(t, 10*solana.LAMPORTS_PER_SOL, "n1")
	s, ctx := e.settler(func(c *Config) { c.ComputeUnitPrice = 1_000_000; c.ComputeUnitLimit = 10_000 }), ctxT(t)
	payer0 := e.svm.balance(e.payer.PublicKey())
	p := Payout{ID: "pf", Provider: "n1", Recipient: wallet(t), Asset: SOL, Amount: 1_000_000}
	mustNil(t, s.Plan(ctx, p))
	_, err := s.SettleOnce(ctx)
	mustNil(t, err)
	if got, want := payer0-e.svm.balance(e.payer.PublicKey()), p.Amount+fee+10_000; got != want {
		t.Errorf("payer paid %d, want %d", got, want)
	}
	if got := e.svm.balance(p.Recipient); got != p.Amount {
		t.Errorf("recipient has %d", got)
	}
}

// TestConcurrentSettlers: two settlers on one outbox racing each other pay
// every payout exactly once.
func TestConcurrentSettlers(t *testing.T) {
	e := newEnv(t, 10*solana.LAMPORTS_PER_SOL, "n1")
	ob2, err := NewOutbox(e.ob.db)
	mustNil(t, err)
	s1, ctx := e.settler(), ctxT(t)
	cfg2 := e.cfg
	s2, err := New(ob2, cfg2)
	mustNil(t, err)
	payer0 := e.svm.balance(e.payer.PublicKey())
	var ps []Payout
	for i := range 12 {
		p := Payout{ID: "cc" + string(rune('a'+i)), Provider: "n1", Recipient: wallet(t), Asset: SOL, Amount: uint64(1_000_000 + i)}
		ps = append(ps, p)
		mustNil(t, s1.Plan(ctx, p))
	}
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, s := range []*Settler{s1, s2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 3 {
				if _, err := s.SettleOnce(ctx); err != nil {
					errs[i] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	mustNil(t, errors.Join(errs...))
	var total uint64
	for _, p := range ps {
		total += p.Amount
		if got := e.svm.balance(p.Recipient); got != p.Amount {
			t.Errorf("%s: recipient has %d, want %d", p.ID, got, p.Amount)
		}
		if r := record(t, e.ob, p.ID); r.State != StateConfirmed {
			t.Errorf("%s: %s", p.ID, r.State)
		}
	}
	st := e.svm.stats()
	if got := payer0 - e.svm.balance(e.payer.PublicKey()); got != total+uint64(st.Executed)*fee || st.Executed < 2 {
		t.Errorf("payer paid %d in %d transactions; want the amounts %d plus fees", got, st.Executed, total)
	}
}

// TestRun: Run pays planned payouts on its own and returns when its
// context is cancelled.
func TestRun(t *testing.T) {
	e := newEnv(t, 10*solana.LAMPORTS_PER_SOL, "n1")
	s := e.settler()
	ctx, cancel := context.WithCancel(ctxT(t))
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	p := Payout{ID: "run", Provider: "n1", Recipient: wallet(t), Asset: USDC, Amount: 31_337, Owed: 31_337}
	mustNil(t, s.Plan(ctx, p))
	deadline, stop := context.WithTimeout(ctx, time.Minute)
	defer stop()
	for record(t, e.ob, "run").State != StateConfirmed {
		select {
		case <-deadline.Done():
			t.Fatal("Run did not pay the payout within a minute")
		case <-time.After(10 * time.Millisecond):
		}
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run returned %v", err)
	}
	if got, _ := e.svm.tokens(p.Recipient); got != p.Amount {
		t.Errorf("recipient holds %d", got)
	}
}

// TestPoisonedBatchIsolated: one payout the chain refuses (dust to a new
// wallet) sinks its batch once; after that every member goes alone, the
// good ones are paid exactly, and only the bad one ends Failed.
func TestPoisonedBatchIsolated(t *testing.T) {
	e := newEnv(t, 10*solana.LAMPORTS_PER_SOL, "n1")
	s, ctx := e.settler(func(c *Config) {
		c.MinLamports, c.MaxAttempts, c.ConfirmTimeout = 1, 2, 200*time.Millisecond
	}), ctxT(t)
	ps := []Payout{
		{ID: "g1", Provider: "n1", Recipient: wallet(t), Asset: SOL, Amount: 2_000_000},
		{ID: "dust", Provider: "n1", Recipient: wallet(t), Asset: SOL, Amount: 100},
		{ID: "g2", Provider: "n1", Recipient: wallet(t), Asset: SOL, Amount: 3_000_000},
	}
	for _, p := range ps {
		mustNil(t, s.Plan(ctx, p))
	}
	if sum, err := s.SettleOnce(ctx); err != nil || sum.Sent != 1 || sum.Live != 1 {
		t.Fatalf("pass 1: %+v, %v; want one batch, refused and live", sum, err)
	}
	e.svm.expireBlockhash()
	sum, err := s.SettleOnce(ctx)
	mustNil(t, err)
	if sum.Retired != 1 || sum.Sent != 3 || len(sum.Confirmed) != 2 {
		t.Fatalf("pass 2: %+v; want the batch retired, three solo sends, two confirmed", sum)
	}
	e.svm.expireBlockhash()
	sum, err = s.SettleOnce(ctx)
	mustNil(t, err)
	if len(sum.Failed) != 1 || sum.Failed[0] != "dust" || sum.Sent != 0 {
		t.Fatalf("pass 3: %+v; want dust failed, nothing sent", sum)
	}
	for _, p := range ps {
		want := p.Amount
		if p.ID == "dust" {
			want = 0
		}
		if got := e.svm.balance(p.Recipient); got != want {
			t.Errorf("%s: recipient has %d, want %d", p.ID, got, want)
		}
	}
	if r := record(t, e.ob, "dust"); r.State != StateFailed || !r.Solo || !strings.Contains(r.Error, "InsufficientFundsForRent") {
		t.Errorf("dust: %+v", r)
	}
}

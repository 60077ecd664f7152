package settlement

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/gagliardetto/solana-go"
	"github.com/gray-cluster/gray/billing/ledger"
)

const fee = LamportsPerSignature

var errCrash = errors.New("simulated crash")

func record(t *testing.T, ob *Outbox, id string) Record {
	t.Helper()
	r, ok, err := ob.Payout(id)
	if err != nil || !ok {
		t.Fatalf("payout %s: ok=%v err=%v", id, ok, err)
	}
	return r
}

func allAttempts(t *testing.T, ob *Outbox) []Attempt {
	t.Helper()
	as, err := ob.Attempts()
	mustNil(t, err)
	return as
}

// replay sends a stored transaction's bytes again, straight to the node, and
// wants it refused.
func replay(t *testing.T, e *env, a Attempt, wantErr string) {
	t.Helper()
	_, err := e.svm.rpc.SendTransaction(context.Background(), a.Tx)
	var ne *NodeError
	if !errors.As(err, &ne) || !strings.Contains(ne.Message, wantErr) {
		t.Fatalf("replaying %s: err %v, want a node error containing %q", a.Signature, err, wantErr)
	}
}

// TestSOLBatch pays three SOL payouts in one transaction: recipients get
// exactly their amounts, the payer pays them plus one signature fee, the
// ledger is debited once, and replaying the transaction moves nothing.
func TestSOLBatch(t *testing.T) {
	e := newEnv(t, 10*solana.LAMPORTS_PER_SOL, "n1", "n2")
	s, ctx := e.settler(), ctxT(t)
	payer0 := e.svm.balance(e.payer.PublicKey())
	ps := []Payout{
		{ID: "p1", Provider: "n1", Recipient: wallet(t), Asset: SOL, Amount: 1_000_000, Owed: 150_000},
		{ID: "p2", Provider: "n2", Recipient: wallet(t), Asset: SOL, Amount: 2_500_000_000, Owed: 400_000_000},
		{ID: "p3", Provider: "n1", Recipient: wallet(t), Asset: SOL, Amount: 890_880},
	}
	for _, p := range ps {
		mustNil(t, s.Plan(ctx, p))
	}
	sum, err := s.SettleOnce(ctx)
	mustNil(t, err)
	if sum.Sent != 1 || len(sum.Confirmed) != 3 || sum.Live != 0 {
		t.Fatalf("summary %+v, want 1 sent, 3 confirmed, 0 live", sum)
	}
	var total uint64
	for _, p := range ps {
		total += p.Amount
		if got := e.svm.balance(p.Recipient); got != p.Amount {
			t.Errorf("%s: recipient has %d lamports, want %d", p.ID, got, p.Amount)
		}
		if r := record(t, e.ob, p.ID); r.State != StateConfirmed || r.Signature.IsZero() || len(r.Attempts) != 1 {
			t.Errorf("%s: record %+v, want confirmed after one attempt", p.ID, r)
		}
	}
	if got, want := payer0-e.svm.balance(e.payer.PublicKey()), total+fee; got != want {
		t.Errorf("payer paid %d lamports, want %d (amounts + one fee)", got, want)
	}
	as := allAttempts(t, e.ob)
	if len(as) != 1 || as[0].State != AttemptConfirmed || len(as[0].PayoutIDs) != 3 {
		t.Fatalf("attempts %+v, want one confirmed attempt for 3 payouts", as)
	}
	for node, want := range map[string]int64{"n1": 1_000_000_000 - 150_000, "n2": 1_000_000_000 - 400_000_000} {
		if got, _ := e.ledger.Balance(ledger.Provider(node)); got != want {
			t.Errorf("ledger %s: %d, want %d", node, got, want)
		}
	}
	if got, _ := e.ledger.Balance(ExternalPayouts); got != 400_150_000 {
		t.Errorf("ledger %s: %d, want 400150000", ExternalPayouts, got)
	}
	if sum, _ := e.ledger.Sum(); sum != 0 {
		t.Errorf("ledger sums to %d", sum)
	}

	// The same signed bytes again: the chain refuses them, nothing moves.
	before := e.svm.balance(e.payer.PublicKey())
	replay(t, e, as[0], "already been processed")
	if e.svm.balance(e.payer.PublicKey()) != before || e.svm.balance(ps[0].Recipient) != ps[0].Amount {
		t.Error("replay moved money")
	}
	// Planning again is a no-op, and another pass sends nothing.
	mustNil(t, s.Plan(ctx, ps[0]))
	if sum, err := s.SettleOnce(ctx); err != nil || sum.Sent+sum.Resent != 0 {
		t.Fatalf("second pass: %+v, %v; want nothing sent", sum, err)
	}
}

// TestUSDCBatch pays eight recipients in one transaction, one of which
// already has a token account: exact base units move, the missing token
// accounts are created (the payer funds their rent), and the packet fits.
func TestUSDCBatch(t *testing.T) {
	e := newEnv(t, 10*solana.LAMPORTS_PER_SOL, "n1")
	s, ctx := e.settler(), ctxT(t)
	payerSOL0 := e.svm.balance(e.payer.PublicKey())
	payerUSDC0, _ := e.svm.tokens(e.payer.PublicKey())
	existing := wallet(t)
	e.svm.setTokens(existing, usdcMint, 5)
	var ps []Payout
	var total uint64
	for i := range 8 {
		r := wallet(t)
		if i == 0 {
			r = existing
		}
		p := Payout{ID: fmt.Sprintf("u%d", i), Provider: "n1", Recipient: r, Asset: USDC, Amount: uint64(1_234_567 + i), Owed: int64(1_234_567 + i)}
		ps = append(ps, p)
		total += p.Amount
		mustNil(t, s.Plan(ctx, p))
	}
	sum, err := s.SettleOnce(ctx)
	mustNil(t, err)
	if sum.Sent != 1 || len(sum.Confirmed) != 8 {
		t.Fatalf("summary %+v, want 1 sent, 8 confirmed", sum)
	}
	for i, p := range ps {
		want := p.Amount
		if i == 0 {
			want += 5
		}
		got, ok := e.svm.tokens(p.Recipient)
		if !ok || got != want {
			t.Errorf("%s: recipient holds %d (account exists: %v), want %d", p.ID, got, ok, want)
		}
		ata, _, _ := solana.FindAssociatedTokenAddress(p.Recipient, usdcMint)
		if o := e.svm.accountOwner(ata); !o.Equals(solana.TokenProgramID) {
			t.Errorf("%s: token account owned by %s", p.ID, o)
		}
		if b := e.svm.balance(p.Recipient); b != 0 {
			t.Errorf("%s: wallet got %d lamports", p.ID, b)
		}
	}
	if got, _ := e.svm.tokens(e.payer.PublicKey()); payerUSDC0-got != total {
		t.Errorf("payer USDC fell by %d, want %d", payerUSDC0-got, total)
	}
	if got, want := payerSOL0-e.svm.balance(e.payer.PublicKey()), uint64(fee+7*TokenAccountRent); got != want {
		t.Errorf("payer paid %d lamports, want %d (one fee + rent of 7 new token accounts)", got, want)
	}
	as := allAttempts(t, e.ob)
	if len(as) != 1 || len(as[0].Tx) > MaxTxSize {
		t.Fatalf("%d attempts, first %d bytes", len(as), len(as[0].Tx))
	}
	tx, err := solana.TransactionFromBytes(as[0].Tx)
	mustNil(t, err)
	if len(tx.Message.Instructions) != 16 {
		t.Errorf("%d instructions, want 8 × (CreateIdempotent + TransferChecked)", len(tx.Message.Instructions))
	}
	if got, _ := e.ledger.Balance(ExternalPayouts); got != int64(total) {
		t.Errorf("ledger paid out %d micro-USD, want %d", got, total)
	}
	replay(t, e, as[0], "already been processed")
	if got, _ := e.svm.tokens(ps[1].Recipient); got != ps[1].Amount {
		t.Error("replay moved tokens")
	}
}

// TestBatchBounds: batches hold at most MaxBatch transfers to distinct
// recipients; two payouts to one wallet go in separate transactions; every
// transaction's fee is paid once.
func TestBatchBounds(t *testing.T) {
	e := newEnv(t, 10*solana.LAMPORTS_PER_SOL, "n1")
	s, ctx := e.settler(func(c *Config) { c.MaxBatch = 3 }), ctxT(t)
	payer0 := e.svm.balance(e.payer.PublicKey())
	twice := wallet(t)
	want := map[solana.PublicKey]uint64{}
	var total uint64
	for i := range 7 {
		r := wallet(t)
		if i < 2 {
			r = twice
		}
		amt := uint64(1_000_000 * (i + 1))
		want[r] += amt
		total += amt
		mustNil(t, s.Plan(ctx, Payout{ID: fmt.Sprintf("b%d", i), Provider: "n1", Recipient: r, Asset: SOL, Amount: amt}))
	}
	sum, err := s.SettleOnce(ctx)
	mustNil(t, err)
	if len(sum.Confirmed) != 7 {
		t.Fatalf("summary %+v", sum)
	}
	as := allAttempts(t, e.ob)
	if len(as) != 3 {
		t.Fatalf("%d transactions, want 3", len(as))
	}
	for _, a := range as {
		seen := map[solana.PublicKey]bool{}
		for _, id := range a.PayoutIDs {
			r := record(t, e.ob, id)
			if seen[r.Recipient] {
				t.Errorf("attempt %s pays %s twice", a.Signature, r.Recipient)
			}
			seen[r.Recipient] = true
		}
		if len(a.PayoutIDs) > 3 {
			t.Errorf("attempt %s has %d transfers", a.Signature, len(a.PayoutIDs))
		}
	}
	for r, amt := range want {
		if got := e.svm.balance(r); got != amt {
			t.Errorf("%s has %d, want %d", r, got, amt)
		}
	}
	if got := payer0 - e.svm.balance(e.payer.PublicKey()); got != total+3*fee {
		t.Errorf("payer paid %d, want %d", got, total+3*fee)
	}
}

// TestCrashAfterSendBeforeRecord: the process dies after the node accepted
// the transaction but before the send was recorded. A new settler on the
// same file finds it landed and records it without sending it again.
func TestCrashAfterSendBeforeRecord(t *testing.T) {
	for _, expire := range []bool{false, true} {
		t.Run(fmt.Sprintf("expired=%v", expire), func(t *testing.T) {
			e := newEnv(t, 10*solana.LAMPORTS_PER_SOL, "n1")
			s := e.settler()
			s.hooks.afterSend = func(Attempt, error) error { return errCrash }
			payer0 := e.svm.balance(e.payer.PublicKey())
			p := Payout{ID: "c1", Provider: "n1", Recipient: wallet(t), Asset: SOL, Amount: 42_000_000, Owed: 7}
			mustNil(t, s.Plan(ctxT(t), p))
			if _, err := s.SettleOnce(ctxT(t)); !errors.Is(err, errCrash) {
				t.Fatalf("SettleOnce: %v, want the simulated crash", err)
			}
			r := record(t, e.ob, "c1")
			a, _, _ := e.ob.Attempt(r.Current)
			if r.State != StateSigned || a.State != AttemptSigned || a.Sends != 0 || len(a.Tx) == 0 {
				t.Fatalf("after crash: payout %s, attempt %s with %d sends; want both signed, no send recorded", r.State, a.State, a.Sends)
			}
			if got := e.svm.balance(p.Recipient); got != p.Amount {
				t.Fatalf("the transaction should have landed before the crash; recipient has %d", got)
			}
			e.crash()
			if expire {
				e.svm.expireBlockhash() // landed, so expiry must not matter
			}

			e.open()
			sum, err := e.settler().SettleOnce(ctxT(t))
			mustNil(t, err)
			if len(sum.Confirmed) != 1 || sum.Sent != 0 || sum.Retired != 0 {
				t.Fatalf("after restart: %+v, want 1 confirmed, nothing sent or retired", sum)
			}
			if st := e.svm.stats(); st.BySignature[a.Signature.String()] != 1 || st.Executed != 1 {
				t.Fatalf("stats %+v: want the signature sent once and one execution", st)
			}
			r = record(t, e.ob, "c1")
			if r.State != StateConfirmed || r.Signature != a.Signature || len(r.Attempts) != 1 {
				t.Fatalf("record %+v", r)
			}
			if got := e.svm.balance(p.Recipient); got != p.Amount {
				t.Errorf("recipient has %d, want %d", got, p.Amount)
			}
			if got := payer0 - e.svm.balance(e.payer.PublicKey()); got != p.Amount+fee {
				t.Errorf("payer paid %d, want %d", got, p.Amount+fee)
			}
		})
	}
}

// TestCrashBeforeSend: the process dies after storing the signed
// transaction, before sending it. With the blockhash still valid the new
// settler sends the same bytes (same signature); with it expired it retires
// the attempt and pays with a rebuilt one. Either way: paid once.
func TestCrashBeforeSend(t *testing.T) {
	for _, expire := range []bool{false, true} {
		t.Run(fmt.Sprintf("expired=%v", expire), func(t *testing.T) {
			e := newEnv(t, 10*solana.LAMPORTS_PER_SOL, "n1")
			s := e.settler()
			s.hooks.afterSign = func(Attempt) error { return errCrash }
			payer0 := e.svm.balance(e.payer.PublicKey())
			p := Payout{ID: "c2", Provider: "n1", Recipient: wallet(t), Asset: SOL, Amount: 3_000_000}
			mustNil(t, s.Plan(ctxT(t), p))
			if _, err := s.SettleOnce(ctxT(t)); !errors.Is(err, errCrash) {
				t.Fatalf("SettleOnce: %v, want the simulated crash", err)
			}
			first := record(t, e.ob, "c2").Current
			e.crash()
			if expire {
				e.svm.expireBlockhash()
			}
			e.open()
			sum, err := e.settler().SettleOnce(ctxT(t))
			mustNil(t, err)
			r := record(t, e.ob, "c2")
			as := allAttempts(t, e.ob)
			if !expire {
				if r.Signature != first || len(as) != 1 || sum.Sent != 0 || sum.Resent != 1 {
					t.Fatalf("record %+v, %d attempts, summary %+v: want the stored transaction sent", r, len(as), sum)
				}
			} else {
				if len(as) != 2 || as[0].Signature != first || as[0].State != AttemptExpired || as[0].Sends != 0 ||
					as[1].State != AttemptConfirmed || r.Signature != as[1].Signature || sum.Retired != 1 || sum.Sent != 1 {
					t.Fatalf("attempts %+v, summary %+v: want the first expired unsent and a second confirmed", as, sum)
				}
				replay(t, e, as[0], "Blockhash not found")
			}
			if r.State != StateConfirmed {
				t.Fatalf("state %s", r.State)
			}
			if got := e.svm.balance(p.Recipient); got != p.Amount {
				t.Errorf("recipient has %d, want %d", got, p.Amount)
			}
			if got := payer0 - e.svm.balance(e.payer.PublicKey()); got != p.Amount+fee {
				t.Errorf("payer paid %d, want %d", got, p.Amount+fee)
			}
		})
	}
}

// TestLostResponse: the node executes the transaction but the reply is
// lost. The settler learns from the signature status that it landed and
// does not send it again.
func TestLostResponse(t *testing.T) {
	e := newEnv(t, 10*solana.LAMPORTS_PER_SOL, "n1")
	s, ctx := e.settler(), ctxT(t)
	p := Payout{ID: "l1", Provider: "n1", Recipient: wallet(t), Asset: USDC, Amount: 777}
	mustNil(t, s.Plan(ctx, p))
	e.svm.dropSends("lose", 1)
	sum, err := s.SettleOnce(ctx)
	mustNil(t, err)
	if len(sum.Confirmed) != 1 {
		t.Fatalf("summary %+v", sum)
	}
	r := record(t, e.ob, "l1")
	if st := e.svm.stats(); st.BySignature[r.Signature.String()] != 1 || st.Executed != 1 {
		t.Fatalf("stats %+v: want one send, one execution", st)
	}
	a, _, _ := e.ob.Attempt(r.Signature)
	if a.Sends != 1 || a.State != AttemptConfirmed {
		t.Fatalf("attempt %+v", a)
	}
	if got, _ := e.svm.tokens(p.Recipient); got != 777 {
		t.Errorf("recipient holds %d, want 777", got)
	}
}

// TestDroppedSendResent: the node accepts the transaction but it never
// lands. While the blockhash is valid the settler resends the same bytes,
// which land once.
func TestDroppedSendResent(t *testing.T) {
	e := newEnv(t, 10*solana.LAMPORTS_PER_SOL, "n1")
	s, ctx := e.settler(), ctxT(t)
	p := Payout{ID: "d1", Provider: "n1", Recipient: wallet(t), Asset: SOL, Amount: 5_000_000}
	mustNil(t, s.Plan(ctx, p))
	e.svm.dropSends("drop", 1)
	sum, err := s.SettleOnce(ctx)
	mustNil(t, err)
	r := record(t, e.ob, "d1")
	if len(sum.Confirmed) != 1 || len(r.Attempts) != 1 {
		t.Fatalf("summary %+v, record %+v", sum, r)
	}
	if st := e.svm.stats(); st.BySignature[r.Signature.String()] != 2 || st.Executed != 1 {
		t.Fatalf("stats %+v: want the one signature sent twice, executed once", st)
	}
	if got := e.svm.balance(p.Recipient); got != p.Amount {
		t.Errorf("recipient has %d, want %d", got, p.Amount)
	}
}

// TestExpiryRebuildsOnce: no send lands until the blockhash expires; the
// settler then retires the attempt, rebuilds once with a new blockhash, and
// the payout is paid exactly once. Neither transaction can be replayed.
func TestExpiryRebuildsOnce(t *testing.T) {
	e := newEnv(t, 10*solana.LAMPORTS_PER_SOL, "n1")
	s, ctx := e.settler(func(c *Config) { c.ConfirmTimeout = 300e6 }), ctxT(t)
	payer0 := e.svm.balance(e.payer.PublicKey())
	p := Payout{ID: "x1", Provider: "n1", Recipient: wallet(t), Asset: SOL, Amount: 9_000_000, Owed: 900}
	mustNil(t, s.Plan(ctx, p))
	e.svm.dropSends("drop", -1)
	sum, err := s.SettleOnce(ctx)
	mustNil(t, err)
	first := record(t, e.ob, "x1")
	if sum.Live != 1 || first.State != StateSent {
		t.Fatalf("summary %+v, state %s: want the attempt live and sent", sum, first.State)
	}
	if st := e.svm.stats(); st.Executed != 0 || st.BySignature[first.Current.String()] < 2 {
		t.Fatalf("stats %+v: want the transaction resent, never executed", st)
	}

	e.svm.expireBlockhash()
	e.svm.dropSends("drop", 0)
	sum, err = s.SettleOnce(ctx)
	mustNil(t, err)
	if sum.Retired != 1 || sum.Sent != 1 || len(sum.Confirmed) != 1 {
		t.Fatalf("summary %+v: want one retired, one sent, one confirmed", sum)
	}
	as := allAttempts(t, e.ob)
	r := record(t, e.ob, "x1")
	if len(as) != 2 || as[0].State != AttemptExpired || as[1].State != AttemptConfirmed ||
		as[0].Signature == as[1].Signature || r.Signature != as[1].Signature || !slices.Equal(r.Attempts, []solana.Signature{as[0].Signature, as[1].Signature}) {
		t.Fatalf("attempts %+v, record %+v", as, r)
	}
	if got := e.svm.balance(p.Recipient); got != p.Amount {
		t.Errorf("recipient has %d, want %d", got, p.Amount)
	}
	if got := payer0 - e.svm.balance(e.payer.PublicKey()); got != p.Amount+fee {
		t.Errorf("payer paid %d, want %d", got, p.Amount+fee)
	}
	replay(t, e, as[0], "Blockhash not found")
	replay(t, e, as[1], "already been processed")
	if got := e.svm.balance(p.Recipient); got != p.Amount {
		t.Errorf("after replays recipient has %d, want %d", got, p.Amount)
	}
	if got, _ := e.ledger.Balance(ExternalPayouts); got != 900 {
		t.Errorf("ledger debited %d, want 900 once", got)
	}
}

package ledger

import (
	"errors"
	"math"
	"math/big"
	"math/rand/v2"
	"testing"
)

func TestFee(t *testing.T) {
	tests := []struct {
		cost int64
		bps  int
		want int64
	}{
		{0, 250, 0},
		{1000, 0, 0},
		{1000, 250, 25},
		{1039, 250, 25}, // 25.975 rounds down
		{39, 250, 0},
		{1000, MaxFeeBps, 1000},
		{math.MaxInt64, MaxFeeBps, math.MaxInt64},
		{math.MaxInt64, 1, math.MaxInt64 / 10000},
	}
	for _, tt := range tests {
		if got := Fee(tt.cost, tt.bps); got != tt.want {
			t.Errorf("Fee(%d, %d) = %d, want %d", tt.cost, tt.bps, got, tt.want)
		}
	}
	// Fee is floor(cost*bps/10000), checked against exact arithmetic.
	r := rand.New(rand.NewPCG(7, 7))
	for range 10000 {
		cost, bps := r.Int64N(math.MaxInt64)>>r.IntN(63), r.IntN(MaxFeeBps+1)
		exact := new(big.Int).Mul(big.NewInt(cost), big.NewInt(int64(bps)))
		if got, want := Fee(cost, bps), exact.Quo(exact, big.NewInt(MaxFeeBps)).Int64(); got != want {
			t.Fatalf("Fee(%d, %d) = %d, want %d", cost, bps, got, want)
		}
	}
}

func TestHelperErrors(t *testing.T) {
	tests := []struct {
		name string
		err  error
	}{
		{"deposit zero", second(Deposit("a", 0, "d", t0))},
		{"deposit negative", second(Deposit("a", -5, "d", t0))},
		{"deposit no client", second(Deposit("", 5, "d", t0))},
		{"escrow no session", second(OpenEscrow("", "a", 5, "o", t0))},
		{"escrow no budget", second(OpenEscrow("s", "a", 0, "o", t0))},
		{"charge zero cost", second(Charge("s", "p", 100, 0, "c", t0))},
		{"charge no provider", second(Charge("s", "", 100, 10, "c", t0))},
		{"charge negative fee", second(Charge("s", "p", -1, 10, "c", t0))},
		{"charge fee above 100%", second(Charge("s", "p", MaxFeeBps+1, 10, "c", t0))},
	}
	for _, tt := range tests {
		if !errors.Is(tt.err, ErrBadTransaction) {
			t.Errorf("%s: %v, want ErrBadTransaction", tt.name, tt.err)
		}
	}
}

func second(_ Transaction, err error) error { return err }

func TestChargeEntries(t *testing.T) {
	tests := []struct {
		bps  int
		cost int64
		want []Entry
	}{
		{250, 1000, []Entry{{"escrow:s", -1000}, {"provider:n", 975}, {"protocol", 25}}},
		{0, 1000, []Entry{{"escrow:s", -1000}, {"provider:n", 1000}}},
		{250, 39, []Entry{{"escrow:s", -39}, {"provider:n", 39}}},
		{MaxFeeBps, 7, []Entry{{"escrow:s", -7}, {"protocol", 7}}},
	}
	for _, tt := range tests {
		c, err := Charge("s", "n", tt.bps, tt.cost, "c", t0)
		if err != nil {
			t.Fatal(err)
		}
		if len(c.Entries) != len(tt.want) {
			t.Fatalf("Charge(%d bps, %d) = %v, want %v", tt.bps, tt.cost, c.Entries, tt.want)
		}
		for i := range tt.want {
			if c.Entries[i] != tt.want[i] {
				t.Errorf("Charge(%d bps, %d) = %v, want %v", tt.bps, tt.cost, c.Entries, tt.want)
			}
		}
		if err := check(c); err != nil {
			t.Errorf("Charge produced an invalid transaction: %v", err)
		}
	}
}

func TestEscrowLifecycle(t *testing.T) { forEachBackend(t, testEscrowLifecycle) }

func testEscrowLifecycle(t *testing.T, store opener) {
	l := mustOpen(t, store)
	post := func(tx Transaction, err error) error {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return l.Post(tx)
	}
	want := func(acct string, v int64) {
		t.Helper()
		if got, err := l.Balance(acct); err != nil || got != v {
			t.Errorf("Balance(%s) = %d, %v; want %d", acct, got, err, v)
		}
	}
	if err := post(Deposit("alice", 10_000, "dep-1", t0)); err != nil {
		t.Fatal(err)
	}
	if err := post(OpenEscrow("s1", "alice", 20_000, "open-1", t0)); !errors.Is(err, ErrInsufficientFunds) {
		t.Fatalf("escrow above the client's balance: %v", err)
	}
	if err := post(OpenEscrow("s1", "alice", 4_000, "open-1", t0)); err != nil {
		t.Fatal(err)
	}
	if err := post(Charge("s1", "node-9", 250, 1_000, "rec-1", t0)); err != nil {
		t.Fatal(err)
	}
	if err := post(Charge("s1", "node-9", 250, 1_000, "rec-1", t0)); !errors.Is(err, ErrDuplicate) {
		t.Fatalf("replayed charge: %v", err)
	}
	if err := post(Charge("s1", "node-9", 250, 3_001, "rec-2", t0)); !errors.Is(err, ErrInsufficientFunds) {
		t.Fatalf("charge beyond the escrow: %v", err)
	}
	if err := post(Charge("s1", "node-9", 250, 2_000, "rec-2", t0)); err != nil {
		t.Fatal(err)
	}
	want("escrow:s1", 1_000)
	want("provider:node-9", 975+1950)
	want("protocol", 25+50)
	want("client:alice", 6_000)

	refund, err := l.CloseEscrow("s1", "alice", t0)
	if err != nil || refund != 1_000 {
		t.Fatalf("CloseEscrow = %d, %v", refund, err)
	}
	want("escrow:s1", 0)
	want("client:alice", 7_000)
	if closed, err := l.IsClosed("escrow:s1"); !closed || err != nil {
		t.Errorf("IsClosed = %v, %v", closed, err)
	}
	if err := post(Charge("s1", "node-9", 250, 10, "rec-3", t0)); !errors.Is(err, ErrAccountClosed) {
		t.Errorf("late charge: %v, want ErrAccountClosed", err)
	}
	if err := post(Charge("s1", "node-9", 250, 1_000, "rec-1", t0)); !errors.Is(err, ErrDuplicate) {
		t.Errorf("replay after close: %v, want ErrDuplicate", err)
	}
	if err := post(OpenEscrow("s1", "alice", 1, "open-2", t0)); !errors.Is(err, ErrAccountClosed) {
		t.Errorf("top-up after close: %v, want ErrAccountClosed", err)
	}
	if refund, err := l.CloseEscrow("s1", "alice", t0); refund != 0 || !errors.Is(err, ErrDuplicate) {
		t.Errorf("second close = %d, %v", refund, err)
	}
	want("client:alice", 7_000)

	// An empty escrow closes with no refund transaction.
	if refund, err := l.CloseEscrow("never-funded", "alice", t0); refund != 0 || err != nil {
		t.Errorf("close of an empty escrow = %d, %v", refund, err)
	}
	if _, ok, _ := l.Transaction(CloseID("never-funded")); ok {
		t.Error("empty close posted a transaction")
	}
	for _, bad := range [][2]string{{"", "alice"}, {"s", ""}, {"s\x00", "alice"}} {
		if _, err := l.CloseEscrow(bad[0], bad[1], t0); !errors.Is(err, ErrBadTransaction) {
			t.Errorf("CloseEscrow(%q, %q) = %v", bad[0], bad[1], err)
		}
	}
	if s, err := l.Sum(); s != 0 || err != nil {
		t.Errorf("Sum = %d, %v", s, err)
	}
}

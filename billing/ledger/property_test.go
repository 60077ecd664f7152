package ledger

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// model is the ledger's specification in a few lines, kept in memory.
type model struct {
	bal    map[string]int64
	closed map[string]bool
	txs    map[string][]Entry
}

// expect is the error Post(t) must return (nil for success).
func (m *model) expect(t Transaction) error {
	var sum int64
	seen := map[string]bool{}
	for _, e := range t.Entries {
		if e.Amount == 0 || seen[e.Account] {
			return ErrBadTransaction
		}
		seen[e.Account] = true
		sum += e.Amount
	}
	switch prev, dup := m.txs[t.ID]; {
	case sum != 0:
		return ErrUnbalanced
	case dup && !slices.Equal(prev, t.Entries):
		return ErrIDConflict
	case dup:
		return ErrDuplicate
	}
	for _, e := range t.Entries {
		if m.closed[e.Account] {
			return ErrAccountClosed
		}
	}
	for _, e := range t.Entries {
		if m.bal[e.Account]+e.Amount < 0 && !IsExternal(e.Account) {
			return ErrInsufficientFunds
		}
	}
	return nil
}

func (m *model) apply(t Transaction) {
	for _, e := range t.Entries {
		m.bal[e.Account] += e.Amount
	}
	m.txs[t.ID] = t.Entries
}

// Thousands of random operations (deposits, escrows, charges, closes, raw
// transactions, malformed ones, replays, conflicting replays, reopening the
// store), checking after every step that the ledger agrees with the model,
// that balances sum to 0, that no non-external account is negative, and that
// failed and replayed posts changed nothing.
func TestLedgerProperty(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			for _, seed := range []uint64{1, 2, 3} {
				t.Run(fmt.Sprint("seed", seed), func(t *testing.T) { runProperty(t, b.store(t), seed, 3000) })
			}
		})
	}
}

func runProperty(t *testing.T, store opener, seed uint64, steps int) {
	r := rand.New(rand.NewPCG(seed, 0x1ed9e7))
	l, err := store()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { l.Close() }()
	m := &model{bal: map[string]int64{}, closed: map[string]bool{}, txs: map[string][]Entry{}}
	posted := []Transaction{}    // successful posts, for replays
	outcomes := map[string]int{} // "kind: expected error" → count

	clients := []string{"c0", "c1", "c2", "c3"}
	sessions := []string{"s0", "s1", "s2", "s3", "s4", "s5"}
	providers := []string{"p0", "p1", "p2"}
	accounts := []string{ExternalDeposits, "external:other", Protocol, Client("c0"), Client("c1"),
		Escrow("s0"), Escrow("s1"), Provider("p0"), Provider("p1")}
	pick := func(xs []string) string { return xs[r.IntN(len(xs))] }
	amount := func() int64 { return 1 + r.Int64N(1_000_000) }

	for step := range steps {
		id := fmt.Sprint("tx-", step)
		var (
			tr     Transaction
			err    error
			kind   string
			replay bool
		)
		switch op := r.IntN(100); {
		case op < 15:
			kind = "deposit"
			tr, err = Deposit(pick(clients), amount(), id, t0)
		case op < 30:
			kind = "open escrow"
			tr, err = OpenEscrow(pick(sessions), pick(clients), amount(), id, t0)
		case op < 55:
			kind = "charge"
			tr, err = Charge(pick(sessions), pick(providers), r.IntN(MaxFeeBps+1), 1+r.Int64N(300_000), id, t0)
		case op < 60:
			kind = "close escrow"
			i := r.IntN(len(sessions))
			stepCloseEscrow(t, l, m, sessions[i], pick(clients))
			if r.IntN(2) == 0 { // usually a new session takes its place; else keep hitting the closed one
				sessions[i] = fmt.Sprint("s", step)
			}
			outcomes[kind]++
			checkInvariants(t, l, m, kind)
			continue
		case op < 62:
			kind = "reopen"
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			if l, err = store(); err != nil {
				t.Fatal(err)
			}
			outcomes[kind]++
			checkInvariants(t, l, m, kind)
			continue
		case op < 80 && len(posted) > 0:
			kind, replay = "replay", true
			tr = posted[r.IntN(len(posted))]
			if r.IntN(3) == 0 { // same ID, different entries
				kind = "conflicting replay"
				tr.Entries = slices.Clone(tr.Entries)
				for i := range tr.Entries {
					tr.Entries[i].Amount *= 2
				}
			}
		default:
			kind = "raw"
			n := 2 + r.IntN(3)
			var sum int64
			for i := range n - 1 {
				a := r.Int64N(2_000_000) - 1_000_000
				if i == 0 && r.IntN(20) == 0 {
					a = 0 // malformed
				}
				tr.Entries = append(tr.Entries, Entry{pick(accounts), a})
				sum += a
			}
			last := -sum
			if r.IntN(10) == 0 {
				last += 1 + r.Int64N(5) // unbalanced
			}
			tr.Entries = append(tr.Entries, Entry{pick(accounts), last})
			tr.ID = id
		}
		if err != nil {
			t.Fatalf("step %d: %s helper: %v", step, kind, err)
		}
		want := m.expect(tr)
		before := balances(t, l)
		got := l.Post(tr)
		if !errors.Is(got, want) || (want == nil) != (got == nil) {
			t.Fatalf("step %d %s: Post(%+v) = %v, want %v", step, kind, tr, got, want)
		}
		outcomes[fmt.Sprintf("%s: %v", kind, want)]++
		if replay && got == nil {
			t.Fatalf("step %d: replay succeeded", step)
		}
		if got != nil {
			if after := balances(t, l); !equalBalances(before, after) {
				t.Fatalf("step %d %s: failed Post (%v) changed balances", step, kind, got)
			}
		} else {
			m.apply(tr)
			posted = append(posted, tr)
		}
		checkInvariants(t, l, m, kind)
	}
	checkHistory(t, l, m)
	// Every kind of outcome must have been exercised.
	for _, o := range []string{"deposit: <nil>", "open escrow: <nil>", "open escrow: " + ErrInsufficientFunds.Error(),
		"open escrow: " + ErrAccountClosed.Error(), "charge: <nil>", "charge: " + ErrInsufficientFunds.Error(),
		"charge: " + ErrAccountClosed.Error(), "close escrow", "reopen", "replay: " + ErrDuplicate.Error(),
		"conflicting replay: " + ErrIDConflict.Error(), "raw: <nil>", "raw: " + ErrInsufficientFunds.Error(),
		"raw: " + ErrUnbalanced.Error(), "raw: " + ErrBadTransaction.Error()} {
		if outcomes[o] == 0 {
			t.Errorf("seed %d: outcome %q never happened; outcomes: %v", seed, o, outcomes)
		}
	}
	t.Logf("seed %d: %d successful posts of %d steps: %v", seed, len(posted), steps, outcomes)
}

func stepCloseEscrow(t *testing.T, l *Ledger, m *model, session, client string) {
	t.Helper()
	escrow := Escrow(session)
	before := balances(t, l)
	refund, err := l.CloseEscrow(session, client, t0)
	if m.closed[escrow] {
		if !errors.Is(err, ErrDuplicate) || refund != 0 || !equalBalances(before, balances(t, l)) {
			t.Fatalf("second close of %s = %d, %v", escrow, refund, err)
		}
		return
	}
	if err != nil || refund != m.bal[escrow] {
		t.Fatalf("close of %s = %d, %v; model has %d", escrow, refund, err, m.bal[escrow])
	}
	if refund > 0 {
		m.apply(Transaction{ID: CloseID(session), Entries: []Entry{{escrow, -refund}, {Client(client), refund}}})
	}
	m.closed[escrow] = true
}

func checkInvariants(t *testing.T, l *Ledger, m *model, after string) {
	t.Helper()
	got := balances(t, l)
	if !equalBalances(got, m.bal) {
		t.Fatalf("after %s: ledger %v, model %v", after, got, m.bal)
	}
	for acct, b := range got {
		if b < 0 && !IsExternal(acct) {
			t.Fatalf("after %s: %s is negative: %d", after, acct, b)
		}
	}
	if s, err := l.Sum(); s != 0 || err != nil {
		t.Fatalf("after %s: Sum() = %d, %v", after, s, err)
	}
}

// checkHistory: each account's postings add up to its balance, in order.
func checkHistory(t *testing.T, l *Ledger, m *model) {
	t.Helper()
	for acct, b := range m.bal {
		hist, err := l.Entries(acct)
		if err != nil {
			t.Fatal(err)
		}
		var run int64
		var last uint64
		for _, p := range hist {
			run += p.Amount
			if p.Balance != run || p.Seq <= last {
				t.Fatalf("%s: posting %+v after running balance %d, seq %d", acct, p, run-p.Amount, last)
			}
			if _, ok := m.txs[p.TxID]; !ok {
				t.Fatalf("%s: posting of unknown transaction %s", acct, p.TxID)
			}
			last = p.Seq
		}
		if run != b {
			t.Fatalf("%s: history sums to %d, balance %d", acct, run, b)
		}
	}
}

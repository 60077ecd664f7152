package ledger

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
)

// Goroutines race to charge one escrow, each also replaying the others'
// charge IDs and posting deposits. The escrow covers exactly budget/cost
// charges: no more succeed, no ID is charged twice, and the books balance.
func TestConcurrentPosts(t *testing.T) { forEachBackend(t, testConcurrentPosts) }

func testConcurrentPosts(t *testing.T, store opener) {
	l := mustOpen(t, store)
	const (
		workers = 8
		charges = 60 // distinct charge IDs
		budget  = 1_000
		cost    = 7
		feeBps  = 1_500
	)
	for _, tx := range []func() (Transaction, error){
		func() (Transaction, error) { return Deposit("alice", budget, "dep", t0) },
		func() (Transaction, error) { return OpenEscrow("s", "alice", budget, "open", t0) },
	} {
		tr, err := tx()
		if err != nil {
			t.Fatal(err)
		}
		mustPost(t, l, tr)
	}
	var (
		wg       sync.WaitGroup
		ok       [charges * 4]atomic.Int32
		exhaust  atomic.Int32
		deposits atomic.Int64
	)
	for w := range workers {
		wg.Go(func() {
			for i := range charges * 4 {
				j := (i + w*13) % (charges * 4) // overlapping IDs across workers
				tr, err := Charge("s", fmt.Sprint("n", j%3), feeBps, cost, fmt.Sprint("rec-", j), t0)
				if err != nil {
					t.Error(err)
					return
				}
				switch err := l.Post(tr); {
				case err == nil:
					ok[j].Add(1)
				case errors.Is(err, ErrInsufficientFunds):
					exhaust.Add(1)
				case !errors.Is(err, ErrDuplicate):
					t.Errorf("charge %d: %v", j, err)
				}
				if i%10 == 0 {
					d, _ := Deposit(fmt.Sprint("c", w), 5, fmt.Sprint("dep-", w, "-", i), t0)
					if err := l.Post(d); err != nil {
						t.Errorf("deposit: %v", err)
					}
					deposits.Add(5)
				}
				if b, err := l.Balance(Escrow("s")); err != nil || b < 0 {
					t.Errorf("escrow balance %d, %v", b, err)
				}
			}
		})
	}
	wg.Wait()

	var succeeded int64
	for j := range ok {
		if n := ok[j].Load(); n > 1 {
			t.Errorf("charge %d succeeded %d times", j, n)
		}
		succeeded += int64(ok[j].Load())
	}
	if want := int64(budget / cost); succeeded != want {
		t.Errorf("%d charges succeeded, want %d", succeeded, want)
	}
	if exhaust.Load() == 0 {
		t.Error("the escrow never ran out")
	}
	var paid int64
	for _, acct := range []string{Provider("n0"), Provider("n1"), Provider("n2"), Protocol} {
		b, err := l.Balance(acct)
		if err != nil {
			t.Fatal(err)
		}
		paid += b
	}
	escrow, _ := l.Balance(Escrow("s"))
	if paid != succeeded*cost || escrow != budget-paid {
		t.Errorf("paid %d, escrow %d after %d charges", paid, escrow, succeeded)
	}
	if ext, _ := l.Balance(ExternalDeposits); ext != -budget-deposits.Load() {
		t.Errorf("external:deposits = %d, want %d", ext, -budget-deposits.Load())
	}
	if s, err := l.Sum(); s != 0 || err != nil {
		t.Errorf("Sum() = %d, %v", s, err)
	}
}

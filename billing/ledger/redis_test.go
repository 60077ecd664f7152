package ledger

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/big"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Two Ledgers on one Redis database, as two heads would have, race to charge
// one escrow under overlapping record IDs and then to close it. The escrow
// covers exactly budget/cost charges: no more succeed, none twice, no
// balance goes negative, exactly one close refunds, and the books balance.
func TestRedisTwoHandles(t *testing.T) {
	store := redisStore(t)
	heads := []*Ledger{mustOpen(t, store), mustOpen(t, store)}
	const (
		workers = 8 // half on each handle
		charges = 50
		budget  = 1_000
		cost    = 7
	)
	dep, _ := Deposit("alice", budget, "dep", t0)
	esc, _ := OpenEscrow("s", "alice", budget, "open", t0)
	mustPost(t, heads[0], dep)
	mustPost(t, heads[1], esc)

	var (
		wg      sync.WaitGroup
		ok      [charges * 4]atomic.Int32
		exhaust atomic.Int32
	)
	for w := range workers {
		l := heads[w%2]
		wg.Go(func() {
			for i := range charges * 4 {
				j := (i + w*17) % (charges * 4) // every ID is tried by workers on both handles
				tr, err := Charge("s", fmt.Sprint("n", j%3), 1_000, cost, fmt.Sprint("rec-", j), t0)
				if err != nil {
					t.Error(err)
					return
				}
				switch err := l.Post(tr); {
				case err == nil:
					ok[j].Add(1)
				case errors.Is(err, ErrInsufficientFunds):
					exhaust.Add(1)
				case !errors.Is(err, ErrDuplicate) || errors.Is(err, ErrIDConflict):
					t.Errorf("charge %d: %v", j, err)
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
		n := ok[j].Load()
		if n > 1 {
			t.Errorf("charge rec-%d succeeded %d times", j, n)
		}
		if _, posted, err := heads[j%2].Transaction(fmt.Sprint("rec-", j)); err != nil || posted != (n == 1) {
			t.Errorf("Transaction(rec-%d) = %v, %v after %d successes", j, posted, err, n)
		}
		succeeded += int64(n)
	}
	if succeeded != budget/cost || exhaust.Load() == 0 {
		t.Errorf("%d charges succeeded (want %d), %d refused", succeeded, budget/cost, exhaust.Load())
	}
	hist, err := heads[0].Entries(Escrow("s"))
	if err != nil || int64(len(hist)) != 1+succeeded {
		t.Fatalf("escrow history: %d postings, %v", len(hist), err)
	}
	for i, p := range hist {
		if p.Balance < 0 || (i > 0 && (p.Seq <= hist[i-1].Seq || p.Balance != hist[i-1].Balance+p.Amount)) {
			t.Fatalf("escrow history broken at %d: %+v", i, hist)
		}
	}

	// Both heads close the session at once: one refunds, the other is a
	// duplicate, and late charges fail on either.
	var (
		refunds [2]int64
		errs    [2]error
	)
	for i, l := range heads {
		wg.Go(func() { refunds[i], errs[i] = l.CloseEscrow("s", "alice", t0) })
	}
	wg.Wait()
	left := int64(budget - succeeded*cost)
	if refunds[0]+refunds[1] != left || (errs[0] == nil) == (errs[1] == nil) ||
		!errors.Is(errors.Join(errs[0], errs[1]), ErrDuplicate) {
		t.Errorf("concurrent closes = %v, %v; want one refund of %d and one ErrDuplicate", refunds, errs, left)
	}
	for _, l := range heads {
		late, _ := Charge("s", "n0", 0, 1, "late", t0)
		if err := l.Post(late); !errors.Is(err, ErrAccountClosed) {
			t.Errorf("late charge: %v", err)
		}
		bals := balances(t, l)
		if bals[Escrow("s")] != 0 || bals[Client("alice")] != left {
			t.Errorf("after close: %v", bals)
		}
		if s, err := l.Sum(); s != 0 || err != nil {
			t.Errorf("Sum() = %d, %v", s, err)
		}
	}
}

// Amounts near 2^53 (where Lua's doubles stop being exact) and near the
// int64 limits: the Redis backend gives the same results as bbolt, step by
// step, down to the histories.
func TestRedisMatchesBolt(t *testing.T) {
	ledgers := []*Ledger{mustOpen(t, boltStore(t)), mustOpen(t, redisStore(t))}
	r := rand.New(rand.NewPCG(53, 64))
	edges := []int64{1, 2, 999_999_999, 1_000_000_000, 1_000_000_001, 1<<53 - 1, 1 << 53, 1<<53 + 1,
		1<<53 + 3, 1 << 62, math.MaxInt64/2 + 1, math.MaxInt64 - 1, math.MaxInt64}
	amount := func() int64 {
		a := edges[r.IntN(len(edges))]
		if r.IntN(3) == 0 {
			a = r.Int64N(math.MaxInt64) >> r.IntN(63)
		}
		if a == 0 {
			a = 1
		}
		if r.IntN(2) == 0 {
			a = -a
		}
		return a
	}
	accounts := []string{"external:a", "external:b", "client:x", "client:y", "protocol"}
	sentinels := []error{ErrBadTransaction, ErrUnbalanced, ErrInsufficientFunds, ErrDuplicate,
		ErrIDConflict, ErrAccountClosed, ErrOverflow, ErrCorrupt}
	var ok int
	for step := range 3000 {
		// Two or three distinct accounts; the last entry balances the others
		// when that fits in an int64.
		perm := r.Perm(len(accounts))[:2+r.IntN(2)]
		tr := Transaction{ID: fmt.Sprint("t", step), At: t0}
		if r.IntN(10) == 0 {
			tr.ID = fmt.Sprint("t", r.IntN(step+1)) // a replay, same or conflicting
		}
		sum := new(big.Int)
		for _, i := range perm[:len(perm)-1] {
			a := amount()
			tr.Entries = append(tr.Entries, Entry{accounts[i], a})
			sum.Add(sum, big.NewInt(a))
		}
		sum.Neg(sum)
		if !sum.IsInt64() || sum.Sign() == 0 {
			continue
		}
		tr.Entries = append(tr.Entries, Entry{accounts[perm[len(perm)-1]], sum.Int64()})
		errs := []error{ledgers[0].Post(tr), ledgers[1].Post(tr)}
		for _, s := range sentinels {
			if (errs[0] == nil) != (errs[1] == nil) || errors.Is(errs[0], s) != errors.Is(errs[1], s) {
				t.Fatalf("step %d: Post(%+v): bbolt %v, redis %v", step, tr, errs[0], errs[1])
			}
		}
		if errs[0] == nil {
			ok++
		}
		if b0, b1 := balances(t, ledgers[0]), balances(t, ledgers[1]); !maps.Equal(b0, b1) {
			t.Fatalf("step %d: bbolt %v, redis %v", step, b0, b1)
		}
	}
	for _, acct := range accounts {
		h0, err0 := ledgers[0].Entries(acct)
		h1, err1 := ledgers[1].Entries(acct)
		if err0 != nil || err1 != nil || !slices.EqualFunc(h0, h1, func(a, b Posting) bool {
			return a.Seq == b.Seq && a.TxID == b.TxID && a.Amount == b.Amount && a.Balance == b.Balance &&
				a.Memo == b.Memo && a.At.Equal(b.At)
		}) {
			t.Errorf("Entries(%s): bbolt %v %v, redis %v %v", acct, h0, err0, h1, err1)
		}
	}
	if ok < 300 {
		t.Errorf("only %d of the posts succeeded", ok)
	}
	t.Logf("%d successful posts", ok)
}

// The scripts' int64 arithmetic, checked against math/big.
func TestRedisLuaArithmetic(t *testing.T) {
	c := rawRedis(redisURL(t))
	defer c.Close()
	script := redis.NewScript(luaLib + `
local out = {}
for i = 1, #ARGV, 2 do
  local ah, al = parse(ARGV[i])
  local bh, bl = parse(ARGV[i + 1])
  if not ah or not bh then
    out[#out + 1] = 'BAD'
  else
    local h, l = add(ah, al, bh, bl)
    if inrange(h, l) then out[#out + 1] = format(h, l) else out[#out + 1] = 'OVERFLOW' end
  end
end
return out
`)
	var vals []string
	for _, v := range []int64{0, 1, 9, 10, 999_999_999, 1_000_000_000, 1_000_000_001, 1<<53 - 1, 1 << 53,
		1<<53 + 1, 123_456_789_012_345_678, math.MaxInt64 - 1, math.MaxInt64} {
		vals = append(vals, fmt.Sprint(v), fmt.Sprint(-v))
	}
	vals = append(vals, fmt.Sprint(int64(math.MinInt64)), fmt.Sprint(math.MinInt64+1), "007", "-0", "-000000000001")
	r := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		vals = append(vals, fmt.Sprint(r.Int64()>>r.IntN(64)))
	}
	var args []any
	for _, a := range vals {
		for _, b := range vals {
			args = append(args, a, b)
		}
	}
	bad := []string{"", "-", "+1", "1.5", " 1", "1 ", "1e3", "0x10", "--1", "9223372036854775808",
		"-9223372036854775809", "12345678901234567890", "99999999999999999999"}
	for _, b := range bad {
		args = append(args, b, "1", "1", b)
	}
	for start := 0; start < len(args); start += 5000 {
		chunk := args[start:min(start+5000, len(args))]
		got, err := script.Run(context.Background(), c, nil, chunk...).StringSlice()
		if err != nil {
			t.Fatal(err)
		}
		for i, g := range got {
			a, b := chunk[2*i].(string), chunk[2*i+1].(string)

			x, okx := new(big.Int).SetString(a, 10)
			y, oky := new(big.Int).SetString(b, 10)
			want := "BAD"
			if okx && oky && x.IsInt64() && y.IsInt64() && !strings.ContainsAny(a+b, "+ ") {
				want = "OVERFLOW"
				if sum := x.Add(x, y); sum.IsInt64() {
					want = sum.String()
				}
			}
			if g != want {
				t.Errorf("%s + %s = %s in Lua, want %s", a, b, g, want)
			}
		}
	}
}

func TestRedisOpenErrors(t *testing.T) {
	url := redisURL(t)
	ctx := context.Background()
	for _, bad := range []string{"redis://user:hunter2@[::1", "http://user:hunter2@localhost", "redis://localhost:6379/x?nope=1"} {
		if _, err := OpenRedis(ctx, bad, "p:"); err == nil || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("OpenRedis(%q) = %v", bad, err)
		}
	}
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := OpenRedis(tctx, fmt.Sprintf("redis://127.0.0.1:%d/0?max_retries=-1", port), "p:"); err == nil {
		t.Error("OpenRedis of a port nobody listens on succeeded")
	}

	// A schema this package does not know.
	_, _, prefix := newRedisStore(t)
	c := rawRedis(url)
	defer c.Close()
	if err := c.HSet(ctx, prefix+"meta", "version", "99").Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenRedis(ctx, url, prefix); !errors.Is(err, ErrCorrupt) {
		t.Errorf("OpenRedis of a future schema: %v, want ErrCorrupt", err)
	}

	// "" means DefaultRedisPrefix (in database 1, away from the other tests),
	// and prefixes keep ledgers apart.
	url1 := strings.TrimSuffix(url, "/0") + "/1"
	def, err := OpenRedis(ctx, url1, "")
	if err != nil {
		t.Fatal(err)
	}
	defer def.Close()
	other, err := OpenRedis(ctx, url1, "other:")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	id := fmt.Sprint("dep-", time.Now().UnixNano())
	mustPost(t, def, tx(id, Entry{ExternalDeposits, -5}, Entry{"client:a", 5}))
	c1 := rawRedis(url1)
	defer c1.Close()
	if js, err := c1.HGet(ctx, DefaultRedisPrefix+"tx", id).Result(); err != nil || !strings.Contains(js, `"seq":`) {
		t.Errorf("%stx[%s] = %q, %v", DefaultRedisPrefix, id, js, err)
	}
	if _, ok, err := other.Transaction(id); ok || err != nil {
		t.Errorf("another prefix sees the transaction: %v, %v", ok, err)
	}
}

// Damage written behind the ledger's back is ErrCorrupt, never read as
// money, and a Post refused for it writes nothing.
func TestRedisCorrupt(t *testing.T) {
	store, url, p := newRedisStore(t)
	l := mustOpen(t, store)
	c := rawRedis(url)
	defer c.Close()
	ctx := context.Background()
	raw := func(cmd ...any) {
		t.Helper()
		if err := c.Do(ctx, cmd...).Err(); err != nil {
			t.Fatal(err)
		}
	}
	mustPost(t, l, tx("d1", Entry{ExternalDeposits, -5}, Entry{"client:a", 5}))
	mustPost(t, l, tx("d2", Entry{ExternalDeposits, -5}, Entry{"escrow:e", 5}))
	// unchanged checks that a refused Post wrote nothing anywhere.
	snapshot := func() map[string]string {
		t.Helper()
		out := map[string]string{}
		keys, err := c.Keys(ctx, p+"*").Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			v, err := c.Dump(ctx, k).Result()
			if err != nil {
				t.Fatal(err)
			}
			out[k] = v
		}
		return out
	}
	refused := func(what string, tr Transaction) {
		t.Helper()
		before := snapshot()
		if err := l.Post(tr); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: Post = %v, want ErrCorrupt", what, err)
		}
		if after := snapshot(); !maps.Equal(before, after) {
			t.Errorf("%s: refused Post changed the database", what)
		}
	}

	raw("HSET", p+"tx", "d1", "{not json")
	refused("damaged transaction", tx("d1", Entry{ExternalDeposits, -5}, Entry{"client:a", 5}))
	if _, _, err := l.Transaction("d1"); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Transaction: %v", err)
	}
	if _, err := l.Entries("client:a"); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Entries: %v", err)
	}

	raw("RPUSH", p+"hist:client:z", "garbage")
	if _, err := l.Entries("client:z"); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Entries of a damaged history: %v", err)
	}
	raw("SET", p+"hist:client:b", "not a list")
	refused("history of the wrong type", tx("d3", Entry{ExternalDeposits, -5}, Entry{"client:b", 5}))
	if _, err := l.Entries("client:b"); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Entries of a history of the wrong type: %v", err)
	}
	raw("SET", p+"seq", "x")
	refused("damaged sequence", tx("d4", Entry{ExternalDeposits, -5}, Entry{"client:c", 5}))
	raw("SET", p+"seq", "2")

	raw("HSET", p+"bal", "escrow:e", "1.5")
	before := snapshot()
	if _, err := l.CloseEscrow("e", "a", t0); !errors.Is(err, ErrCorrupt) {
		t.Errorf("CloseEscrow of a damaged balance: %v", err)
	}
	if !maps.Equal(before, snapshot()) {
		t.Error("refused CloseEscrow changed the database")
	}
	raw("HSET", p+"bal", "client:a", "12345678901234567890")
	if _, err := l.Balance("client:a"); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Balance: %v", err)
	}
	if _, err := l.Sum(); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Sum: %v", err)
	}
	refused("damaged balance", tx("d5", Entry{ExternalDeposits, -5}, Entry{"client:a", 5}))
	if _, err := l.CloseEscrow("x", "a", t0); err != nil {
		t.Errorf("CloseEscrow of an untouched escrow: %v", err)
	}

	raw("DEL", p+"bal")
	raw("SET", p+"bal", "not a hash")
	if _, err := l.Balances(); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Balances of a key of the wrong type: %v", err)
	}
	refused("balances of the wrong type", tx("d6", Entry{ExternalDeposits, -5}, Entry{"client:d", 5}))
}

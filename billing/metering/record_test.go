package metering

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func rec(resource string, amount float64, start, end time.Time) UsageRecord {
	return UsageRecord{
		ID: RecordID("node-1", "lease-1", 7), NodeID: "node-1", JobID: "job-1", LeaseID: "lease-1",
		Resource: resource, Amount: amount, Start: start, End: end, Seq: 7,
	}
}

func TestRecordID(t *testing.T) {
	if got := RecordID("n1", "l1", 42); got != "n1/l1/42" {
		t.Errorf("RecordID = %q", got)
	}
	// Escaping keeps IDs distinct even when ids contain the separator.
	if a, b := RecordID("a/b", "c", 1), RecordID("a", "b/c", 1); a == b {
		t.Errorf("RecordID collides: %q", a)
	}
}

func TestValidate(t *testing.T) {
	ok := rec("GPU", 0.25, t0, t0.Add(time.Hour))
	mod := func(f func(*UsageRecord)) UsageRecord { r := ok; f(&r); return r }
	tests := []struct {
		name string
		r    UsageRecord
		ok   bool
	}{
		{"ok", ok, true},
		{"one nanosecond", mod(func(r *UsageRecord) { r.End = r.Start.Add(1) }), true},
		{"smallest amount", mod(func(r *UsageRecord) { r.Amount = 1.0 / AmountResolution }), true},
		{"largest amount", mod(func(r *UsageRecord) { r.Amount = MaxAmount }), true},
		{"zero length", mod(func(r *UsageRecord) { r.End = r.Start }), false},
		{"end before start", mod(func(r *UsageRecord) { r.End = r.Start.Add(-time.Second) }), false},
		{"zero times", mod(func(r *UsageRecord) { r.Start, r.End = time.Time{}, time.Time{}.Add(time.Hour) }), false},
		{"before 1970", mod(func(r *UsageRecord) { r.Start = time.Unix(-10, 0) }), false},
		{"after 2262", mod(func(r *UsageRecord) { r.End = time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC) }), false},
		{"zero amount", mod(func(r *UsageRecord) { r.Amount = 0 }), false},
		{"negative amount", mod(func(r *UsageRecord) { r.Amount = -1 }), false},
		{"NaN amount", mod(func(r *UsageRecord) { r.Amount = math.NaN() }), false},
		{"+Inf amount", mod(func(r *UsageRecord) { r.Amount = math.Inf(1) }), false},
		{"-Inf amount", mod(func(r *UsageRecord) { r.Amount = math.Inf(-1) }), false},
		{"below resolution", mod(func(r *UsageRecord) { r.Amount = 0.4 / AmountResolution }), false},
		{"above max", mod(func(r *UsageRecord) { r.Amount = MaxAmount * 2 }), false},
		{"no resource", mod(func(r *UsageRecord) { r.Resource = "" }), false},
		{"no job", mod(func(r *UsageRecord) { r.JobID = "" }), false},
		{"no node", mod(func(r *UsageRecord) { r.NodeID, r.ID = "", RecordID("", r.LeaseID, r.Seq) }), false},
		{"not utf8", mod(func(r *UsageRecord) { r.JobID = "\xff" }), false},
		{"id mismatch", mod(func(r *UsageRecord) { r.ID = "whatever" }), false},
		{"seq mismatch", mod(func(r *UsageRecord) { r.Seq = 8 }), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.r.Validate()
			if tt.ok != (err == nil) || (err != nil && !errors.Is(err, ErrBadRecord)) {
				t.Fatalf("Validate() = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestSeconds(t *testing.T) {
	r := rec("CPU", 1, t0, t0.Add(90*time.Minute+500*time.Millisecond))
	if got := r.Seconds(); got != 5400.5 {
		t.Errorf("Seconds() = %v, want 5400.5", got)
	}
	// Monotonic readings and locations do not matter.
	now := time.Now()
	r = rec("CPU", 1, now, now.Add(time.Second).In(time.FixedZone("x", 3600)))
	if got := r.Seconds(); got != 1 {
		t.Errorf("Seconds() = %v, want 1", got)
	}
}

func TestCost(t *testing.T) {
	prices := PriceList{{"CPU", 10_000}, {"GPU", 2_000_000}, {"GPU:H100", 3_000_000}, {"memory", 3_600}, {"free", 0}}
	tests := []struct {
		name     string
		resource string
		amount   float64
		d        time.Duration
		want     int64
		err      error
	}{
		{"quarter GPU for an hour", "GPU", 0.25, time.Hour, 500_000, nil},
		{"H100 price", "GPU:H100", 1, time.Hour, 3_000_000, nil},
		{"class falls back", "GPU:A10", 1, 30 * time.Minute, 1_000_000, nil},
		{"0.29 is 2900 units, not 2899", "GPU", 0.29, time.Hour, 580_000, nil},
		{"0.3 GPU", "GPU", 0.3, time.Hour, 600_000, nil},
		{"rounds down", "memory", 1, 999 * time.Millisecond, 0, nil},      // 0.999 micro-USD
		{"rounds down 2", "memory", 1.5, 1001 * time.Millisecond, 1, nil}, // 1.5015
		{"one CPU second", "CPU", 1, time.Second, 2, nil},                 // 2.777…
		{"free", "free", 4, time.Hour, 0, nil},
		{"no price", "TPU", 1, time.Hour, 0, ErrNoPrice},
		{"overflow", "GPU", MaxAmount, 200 * 365 * 24 * time.Hour, 0, ErrOverflow},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := rec(tt.resource, tt.amount, time.Unix(1000, 0), time.Unix(1000, 0).Add(tt.d)).Cost(prices)
			if got != tt.want || !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) {
				t.Fatalf("Cost() = %d, %v; want %d, %v", got, err, tt.want, tt.err)
			}
		})
	}
	if _, err := rec("GPU", 0, t0, t0.Add(time.Hour)).Cost(prices); !errors.Is(err, ErrBadRecord) {
		t.Errorf("Cost of a bad record = %v, want ErrBadRecord", err)
	}
	if _, err := rec("GPU", 1, t0, t0.Add(time.Hour)).Cost(PriceList{{"GPU", -1}}); !errors.Is(err, ErrBadPrice) {
		t.Errorf("Cost with a bad price list = %v, want ErrBadPrice", err)
	}
}

// Cutting a record in two never bills more than the whole, and loses less
// than one micro-USD per cut; cost grows with time, amount and price.
func TestCostSplitProperty(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 5000; i++ {
		price := r.Int64N(MaxMicroUSDPerHour/1000 + 1)
		prices := PriceList{{"X", price}}
		amount := float64(1+r.Int64N(100*AmountResolution)) / AmountResolution
		total := 1 + r.Int64N(int64(48*time.Hour))
		cut := 1 + r.Int64N(total) // in [1, total]
		start := t0.Add(time.Duration(r.Int64N(int64(365 * 24 * time.Hour))))
		whole := mustCost(t, rec("X", amount, start, start.Add(time.Duration(total))), prices)
		if cut == total {
			continue
		}
		a := mustCost(t, rec("X", amount, start, start.Add(time.Duration(cut))), prices)
		b := mustCost(t, rec("X", amount, start.Add(time.Duration(cut)), start.Add(time.Duration(total))), prices)
		if a+b > whole || a+b < whole-1 {
			t.Fatalf("split %d+%d vs whole %d (amount %v, price %d, ns %d cut %d)", a, b, whole, amount, price, total, cut)
		}
		if a > whole || b > whole {
			t.Fatalf("part costs more than whole")
		}
		more := mustCost(t, rec("X", amount, start, start.Add(time.Duration(total))), PriceList{{"X", price + 1}})
		if more < whole {
			t.Fatalf("higher price, lower cost: %d < %d", more, whole)
		}
	}
}

func mustCost(t *testing.T, u UsageRecord, pl PriceList) int64 {
	t.Helper()
	c, err := u.Cost(pl)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// The canonical encoding is pinned: changing it invalidates every signature.
func TestCanonicalBytesGolden(t *testing.T) {
	r := rec("GPU", 0.25, time.Unix(1, 2), time.Unix(3, 4))
	const want = "0000001c677261792f62696c6c696e672f75736167652d7265636f72642f7631" + // tag
		"000000106e6f64652d312f6c656173652d312f37" + // id "node-1/lease-1/7"
		"000000066e6f64652d31" + "000000056a6f622d31" + "000000076c656173652d31" + "00000003475055" +
		"3fd0000000000000" + "000000003b9aca02" + "00000000b2d05e04" + "0000000000000007"
	if got := hex.EncodeToString(r.CanonicalBytes()); got != want {
		t.Fatalf("CanonicalBytes =\n%s\nwant\n%s", got, want)
	}
}

// Any change to any field changes the encoding; JSON round trips keep it.
func TestCanonicalBytesProperty(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	strs := []string{"a", "b", "ab", "", "a/b", "\x00", "GPU", "GPU:H100"}
	pick := func() string { return strs[r.IntN(len(strs))] }
	randRec := func() UsageRecord {
		u := UsageRecord{NodeID: pick(), JobID: pick(), LeaseID: pick(), Resource: pick(),
			Amount: float64(r.IntN(3)) / 4, Start: time.Unix(0, r.Int64N(3)), End: time.Unix(0, r.Int64N(3)), Seq: uint64(r.IntN(3))}
		u.ID = pick()
		return u
	}
	same := func(a, b UsageRecord) bool {
		return a.ID == b.ID && a.NodeID == b.NodeID && a.JobID == b.JobID && a.LeaseID == b.LeaseID &&
			a.Resource == b.Resource && a.Amount == b.Amount && a.Start.Equal(b.Start) && a.End.Equal(b.End) && a.Seq == b.Seq
	}
	for i := 0; i < 20000; i++ {
		a, b := randRec(), randRec()
		if eq := string(a.CanonicalBytes()) == string(b.CanonicalBytes()); eq != same(a, b) {
			t.Fatalf("encoding equality %v for records %+v and %+v", eq, a, b)
		}
	}
	a := rec("GPU", 0.125, time.Now(), time.Now().Add(time.Hour))
	js, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	var b UsageRecord
	if err := json.Unmarshal(js, &b); err != nil {
		t.Fatal(err)
	}
	if string(a.CanonicalBytes()) != string(b.CanonicalBytes()) {
		t.Fatal("JSON round trip changed the canonical encoding")
	}
}

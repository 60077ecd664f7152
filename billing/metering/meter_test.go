package metering

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

func TestMeterGrantRelease(t *testing.T) {
	m := NewMeter("node-1", 100)
	if err := m.Grant("L1", "job-1", map[string]float64{"GPU": 0.25, "CPU": 2, "memory": 4, "TPU": 0}, t0); err != nil {
		t.Fatal(err)
	}
	recs := m.Release("L1", t0.Add(time.Hour))
	if len(recs) != 3 {
		t.Fatalf("got %d records, want 3 (zero amounts skipped): %+v", len(recs), recs)
	}
	for i, want := range []struct {
		res    string
		amount float64
	}{{"CPU", 2}, {"GPU", 0.25}, {"memory", 4}} {
		r := recs[i]
		if r.Resource != want.res || r.Amount != want.amount || r.Seq != uint64(100+i) ||
			r.ID != RecordID("node-1", "L1", r.Seq) || r.JobID != "job-1" || r.NodeID != "node-1" ||
			!r.Start.Equal(t0) || !r.End.Equal(t0.Add(time.Hour)) {
			t.Errorf("record %d = %+v", i, r)
		}
		if err := r.Validate(); err != nil {
			t.Errorf("record %d invalid: %v", i, err)
		}
	}
	if got := m.Release("L1", t0.Add(2*time.Hour)); got != nil {
		t.Errorf("second Release = %v, want nil", got)
	}
	if m.NextSeq() != 103 {
		t.Errorf("NextSeq = %d", m.NextSeq())
	}
}

func TestMeterGrantErrors(t *testing.T) {
	m := NewMeter("n", 0)
	if err := m.Grant("L", "J", map[string]float64{"CPU": 1}, t0); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		lease string
		job   string
		res   map[string]float64
		at    time.Time
		want  error
	}{
		{"again", "L", "J", map[string]float64{"CPU": 1}, t0, ErrLeaseExists},
		{"no lease id", "", "J", nil, t0, ErrBadRecord},
		{"no job id", "L2", "", nil, t0, ErrBadRecord},
		{"negative", "L2", "J", map[string]float64{"CPU": -1}, t0, ErrBadRecord},
		{"NaN", "L2", "J", map[string]float64{"GPU": math.NaN()}, t0, ErrBadRecord},
		{"Inf", "L2", "J", map[string]float64{"GPU": math.Inf(1)}, t0, ErrBadRecord},
		{"tiny", "L2", "J", map[string]float64{"GPU": 1e-9}, t0, ErrBadRecord},
		{"no resource name", "L2", "J", map[string]float64{"": 1}, t0, ErrBadRecord},
		{"zero time", "L2", "J", map[string]float64{"CPU": 1}, time.Time{}, ErrBadRecord},
		{"job not UTF-8", "L2", "\xff", map[string]float64{"CPU": 1}, t0, ErrBadRecord},
	}
	for _, tt := range tests {
		if err := m.Grant(tt.lease, tt.job, tt.res, tt.at); !errors.Is(err, tt.want) {
			t.Errorf("%s: Grant() = %v, want %v", tt.name, err, tt.want)
		}
	}
	if got := m.Open(); len(got) != 1 || got[0] != "L" {
		t.Errorf("failed grants changed the open set: %v", got)
	}
	if err := NewMeter("", 0).Grant("L", "J", nil, t0); !errors.Is(err, ErrBadRecord) {
		t.Errorf("Grant on a meter with no node id: %v", err)
	}
	// Times outside [1970, 2262) cut nothing and leave the lease open.
	far := time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)
	if got := m.Flush(far); got != nil {
		t.Errorf("Flush(2300) = %v", got)
	}
	if got := m.Release("L", far); got != nil || len(m.Open()) != 1 {
		t.Errorf("Release(2300) = %v, open %v", got, m.Open())
	}
	if got := m.Release("L", t0.Add(time.Second)); len(got) != 1 || !got[0].Start.Equal(t0) {
		t.Errorf("Release after out-of-range calls = %+v", got)
	}
}

func TestMeterFlushAndVoid(t *testing.T) {
	m := NewMeter("n", 1)
	must(t, m.Grant("actor", "J", map[string]float64{"GPU": 1}, t0))
	must(t, m.Grant("task", "J", map[string]float64{"CPU": 1}, t0.Add(30*time.Minute)))

	f1 := m.Flush(t0.Add(time.Hour))
	if len(f1) != 2 || f1[0].LeaseID != "actor" || f1[1].LeaseID != "task" || f1[0].Seq >= f1[1].Seq {
		t.Fatalf("first flush: %+v", f1)
	}
	if f1[0].Seconds() != 3600 || f1[1].Seconds() != 1800 {
		t.Errorf("flush lengths %v, %v", f1[0].Seconds(), f1[1].Seconds())
	}
	if got := m.Flush(t0.Add(time.Hour)); len(got) != 0 {
		t.Errorf("flush at the same instant cut %d records", len(got))
	}
	if got := m.Flush(t0); len(got) != 0 {
		t.Errorf("flush in the past cut %d records", len(got))
	}
	if !m.Void("task") || m.Void("task") {
		t.Error("Void should report the lease open once")
	}
	rel := m.Release("actor", t0.Add(90*time.Minute))
	if len(rel) != 1 || !rel[0].Start.Equal(t0.Add(time.Hour)) || rel[0].Seconds() != 1800 || rel[0].Seq <= f1[1].Seq {
		t.Fatalf("release after flush: %+v", rel)
	}
	if len(m.Open()) != 0 {
		t.Errorf("open leases left: %v", m.Open())
	}
	// Release at or before the segment start cuts nothing.
	must(t, m.Grant("late", "J", map[string]float64{"CPU": 1}, t0))
	if got := m.Release("late", t0); len(got) != 0 {
		t.Errorf("zero-length release cut %d records", len(got))
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// Random grants, flushes, releases and voids: every record is valid with a
// fresh, increasing seq; the records of a released lease tile [grant,
// release) with no gap or overlap; a voided lease is billed exactly up to its
// last flush; and cutting never bills more than one whole record would.
func TestMeterProperty(t *testing.T) {
	prices := PriceList{{"CPU", 36_000}, {"GPU", 2_000_000}, {"memory", 1_000}}
	for seed := uint64(1); seed <= 5; seed++ {
		r := rand.New(rand.NewPCG(seed, 99))
		m := NewMeter("node", seed*1000)
		type lease struct {
			grant, lastCut time.Time
			res            map[string]float64
			void           bool
			end            time.Time
		}
		leases := map[string]*lease{}
		var open []string
		covered := map[string]map[string]time.Duration{} // lease → resource → billed time
		costs := map[string]int64{}
		lastSeq, first := uint64(0), true
		now := t0
		take := func(recs []UsageRecord) {
			for _, rc := range recs {
				if err := rc.Validate(); err != nil {
					t.Fatalf("seed %d: invalid record: %v", seed, err)
				}
				if !first && rc.Seq <= lastSeq {
					t.Fatalf("seed %d: seq %d after %d", seed, rc.Seq, lastSeq)
				}
				first, lastSeq = false, rc.Seq
				l := leases[rc.LeaseID]
				if !rc.Start.Equal(l.lastCut) {
					t.Fatalf("seed %d: gap or overlap in lease %s: record starts %v, last cut %v", seed, rc.LeaseID, rc.Start, l.lastCut)
				}
				if covered[rc.LeaseID] == nil {
					covered[rc.LeaseID] = map[string]time.Duration{}
				}
				covered[rc.LeaseID][rc.Resource] += time.Duration(rc.Nanos())
				costs[rc.LeaseID] += mustCost(t, rc, prices)
			}
			for _, rc := range recs {
				leases[rc.LeaseID].lastCut = rc.End
			}
		}
		for step := 0; step < 2000; step++ {
			now = now.Add(time.Duration(r.Int64N(int64(10 * time.Minute))))
			switch op := r.IntN(10); {
			case op < 4 || len(open) == 0:
				id := fmt.Sprint("L", step)
				res := map[string]float64{"CPU": float64(1 + r.IntN(8))}
				if r.IntN(2) == 0 {
					res["GPU"] = float64(1+r.IntN(4)) / 4
				}
				if r.IntN(2) == 0 {
					res["memory"] = float64(r.IntN(3)) // may be 0: skipped
				}
				must(t, m.Grant(id, "J", res, now))
				leases[id] = &lease{grant: now, lastCut: now, res: res}
				open = append(open, id)
			case op < 6:
				take(m.Flush(now))
			default:
				i := r.IntN(len(open))
				id := open[i]
				open = append(open[:i], open[i+1:]...)
				if op == 9 {
					m.Void(id)
					leases[id].void = true
				} else {
					take(m.Release(id, now))
				}
				leases[id].end = now
			}
		}
		for id, l := range leases {
			if l.end.IsZero() {
				continue
			}
			want := l.end.Sub(l.grant)
			if l.void {
				want = l.lastCut.Sub(l.grant)
			}
			var whole int64
			for res, amount := range l.res {
				if amount == 0 || want == 0 {
					if covered[id][res] != 0 {
						t.Fatalf("seed %d: lease %s billed %v of %s", seed, id, covered[id][res], res)
					}
					continue
				}
				if got := covered[id][res]; got != want {
					t.Fatalf("seed %d: lease %s %s billed %v, held %v (void %v)", seed, id, res, got, want, l.void)
				}
				whole += mustCost(t, UsageRecord{ID: RecordID("node", id, 0), NodeID: "node", JobID: "J", LeaseID: id,
					Resource: res, Amount: amount, Start: l.grant, End: l.grant.Add(want)}, prices)
			}
			if costs[id] > whole {
				t.Fatalf("seed %d: lease %s cut records cost %d > whole %d", seed, id, costs[id], whole)
			}
		}
	}
}

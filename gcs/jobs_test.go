package gcs

import (
	"errors"
	"testing"
	"time"

	"github.com/gray-cluster/gray/internal/ids"
)

func TestJobsStartFinish(t *testing.T) {
	j := NewJobs()
	t0 := time.Unix(1000, 0)
	var started []JobInfo
	for i := 0; i < 5; i++ {
		info, err := j.Start(bg, "client", "ns", t0.Add(time.Duration(i)*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		started = append(started, info)
	}
	for i, info := range started {
		if i > 0 && info.ID.Int() <= started[i-1].ID.Int() {
			t.Fatalf("job ids do not increase: %d after %d", info.ID.Int(), started[i-1].ID.Int())
		}
		if info.ID.Int() == 0 {
			t.Fatalf("job %d has the nil counter 0", i)
		}
		if !info.Alive || info.ClientID != "client" || info.Namespace != "ns" || !info.EndTime.IsZero() {
			t.Fatalf("fresh job record %+v", info)
		}
		if got, ok := j.Get(info.ID); !ok || got != info {
			t.Fatalf("Get(%s) = %+v, %v; want %+v", info.ID.Hex(), got, ok, info)
		}
	}
	if started[0].ID != ids.JobFromInt(1) {
		t.Fatalf("first job is %s, want %s (Ray numbers jobs from 1)", started[0].ID.Hex(), ids.JobFromInt(1).Hex())
	}

	end := t0.Add(time.Hour)
	j.Finish(started[2].ID, end)
	for i, info := range started {
		got, _ := j.Get(info.ID)
		if dead := i == 2; got.Alive == dead {
			t.Errorf("job %d Alive = %v after finishing job 2", i, got.Alive)
		}
	}
	if got, _ := j.Get(started[2].ID); !got.EndTime.Equal(end) || !got.StartTime.Equal(started[2].StartTime) {
		t.Errorf("finished job times = %v..%v", got.StartTime, got.EndTime)
	}

	// Unknown ids: Get misses, Finish is a no-op.
	unknown := ids.JobFromInt(999)
	j.Finish(unknown, end)
	if _, ok := j.Get(unknown); ok {
		t.Error("Finish of an unknown job created it")
	}
	if n := len(j.List()); n != len(started) {
		t.Errorf("List has %d jobs, want %d", n, len(started))
	}
}

func TestJobsListIsACopy(t *testing.T) {
	j := NewJobs()
	info, _ := j.Start(bg, "c", "ns", time.Unix(1, 0))
	list := j.List()
	list[0].Alive = false
	if got, _ := j.Get(info.ID); !got.Alive {
		t.Fatal("mutating List's result changed the table")
	}
	info.Alive = false
	if got, _ := j.Get(info.ID); !got.Alive {
		t.Fatal("mutating Start's result changed the table")
	}
}

// The job counter is kept in the store: job numbers continue after a
// reopen (a head restart), whichever of Start and NextID handed them out.
func TestJobsCounterSurvivesReopen(t *testing.T) {
	forEachBackend(t, func(t *testing.T, open opener) {
		seen := map[uint32]bool{}
		var last uint32
		for run := range 3 {
			s := mustOpen(t, open)
			j, err := OpenJobs(bg, s)
			if err != nil {
				t.Fatal(err)
			}
			for i := range 4 {
				var n uint32
				if i%2 == 0 {
					info, err := j.Start(bg, "c", "ns", time.Unix(1, 0))
					if err != nil {
						t.Fatal(err)
					}
					n = info.ID.Int()
				} else if n, err = j.NextID(bg); err != nil {
					t.Fatal(err)
				}
				if seen[n] || n <= last {
					t.Fatalf("run %d: job number %d after %d (seen before: %v)", run, n, last, seen[n])
				}
				seen[n], last = true, n
			}
			if len(j.List()) != 2 {
				t.Fatalf("run %d: %d job records, want the 2 of this run", run, len(j.List()))
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
		}
		if last != 12 {
			t.Errorf("12 jobs numbered up to %d, want 1..12", last)
		}
	})
}

// A store that fails the counter's write fails Start, and hands out no
// number; a counter of the wrong size is corrupt.
func TestJobsCounterErrors(t *testing.T) {
	s := NewMemStore()
	j, err := OpenJobs(bg, s)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := j.NextID(bg); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := j.Start(bg, "c", "ns", time.Unix(1, 0)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Start on a closed store: %v", err)
	}
	if len(j.List()) != 0 {
		t.Fatal("a failed Start recorded a job")
	}
	s2 := NewMemStore()
	if _, err := s2.Apply(bg, Put(CountersTable, []byte(JobCounterKey), []byte{1, 2})); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenJobs(bg, s2); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("OpenJobs with a 2-byte counter: %v", err)
	}
}

package gcs

import (
	"testing"
	"time"

	"github.com/gray-cluster/gray/internal/ids"
)

func TestJobsStartFinish(t *testing.T) {
	j := NewJobs()
	t0 := time.Unix(1000, 0)
	var started []JobInfo
	for i := 0; i < 5; i++ {
		started = append(started, j.Start("client", "ns", t0.Add(time.Duration(i)*time.Second)))
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
	info := j.Start("c", "ns", time.Unix(1, 0))
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

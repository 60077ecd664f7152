package taskhistory

import (
	"testing"
	"time"

	"github.com/gray-cluster/gray/internal/ids"
)

func TestHistory(t *testing.T) {
	now := time.Unix(100, 0)
	h := New(2, func() time.Time { return now })
	job := ids.JobFromInt(1)
	a, b, c := ids.NewTaskID(ids.NilActorFor(job)), ids.NewTaskID(ids.NilActorFor(job)), ids.NewTaskID(ids.NilActorFor(job))
	h.Submitted(Record{TaskID: a, JobID: job, Type: NormalTask, FuncName: "f"})
	h.Submitted(Record{TaskID: b, JobID: job, Type: NormalTask, FuncName: "g", Name: "named"})
	now = now.Add(time.Second)
	h.Ended(a, false, "")
	h.Ended(b, true, "TASK_EXECUTION_EXCEPTION")
	recs, dropped := h.Snapshot()
	if len(recs) != 2 || dropped != 0 {
		t.Fatalf("records %v dropped %d", recs, dropped)
	}
	if recs[0].Name != "f" || recs[0].State != Finished || !recs[0].Ended.Equal(time.Unix(101, 0)) || !recs[0].Submitted.Equal(time.Unix(100, 0)) {
		t.Fatalf("a = %+v", recs[0])
	}
	if recs[1].Name != "named" || recs[1].State != Failed || recs[1].ErrorType != "TASK_EXECUTION_EXCEPTION" {
		t.Fatalf("b = %+v", recs[1])
	}
	h.Submitted(Record{TaskID: c, JobID: job, Type: NormalTask, FuncName: "h"})
	recs, dropped = h.Snapshot()
	if len(recs) != 2 || dropped != 1 || recs[0].TaskID != b || recs[1].TaskID != c {
		t.Fatalf("after eviction: %v dropped %d", recs, dropped)
	}
	h.Ended(a, false, "") // evicted: ignored
	var nilH *History
	nilH.Submitted(Record{})
	nilH.Ended(a, false, "")
	if r, n := nilH.Snapshot(); r != nil || n != 0 {
		t.Fatal("nil history")
	}
}

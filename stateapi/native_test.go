package stateapi

import (
	"testing"

	"github.com/gray-cluster/gray/proto/ray/commonpb"
	"github.com/gray-cluster/gray/proto/ray/raypb"
)

func TestNativeTaskRowState(t *testing.T) {
	st := func(m map[commonpb.TaskStatus]int64) map[int32]int64 {
		out := map[int32]int64{}
		for k, v := range m {
			out[int32(k)] = v
		}
		return out
	}
	cases := []struct {
		name    string
		ts      map[int32]int64
		err     *commonpb.RayErrorInfo
		state   string
		errType any
		start   any
		end     any
	}{
		{"no events", nil, nil, "NIL", nil, nil, nil},
		{"pending", st(map[commonpb.TaskStatus]int64{commonpb.TaskStatus_PENDING_ARGS_AVAIL: 1e6}), nil, "PENDING_ARGS_AVAIL", nil, nil, nil},
		{"running", st(map[commonpb.TaskStatus]int64{commonpb.TaskStatus_PENDING_ARGS_AVAIL: 1e6, commonpb.TaskStatus_RUNNING: 2e6}), nil, "RUNNING", nil, int64(2), nil},
		{"finished beats a later pinning event", st(map[commonpb.TaskStatus]int64{commonpb.TaskStatus_RUNNING: 2e6, commonpb.TaskStatus_FINISHED: 3e6, commonpb.TaskStatus_GETTING_AND_PINNING_ARGS: 1e6}), nil, "FINISHED", nil, int64(2), int64(3)},
		{"failed with error", st(map[commonpb.TaskStatus]int64{commonpb.TaskStatus_FAILED: 5e6}), &commonpb.RayErrorInfo{ErrorType: commonpb.ErrorType_TASK_EXECUTION_EXCEPTION, ErrorMessage: "boom"}, "FAILED", "TASK_EXECUTION_EXCEPTION", nil, int64(5)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := &raypb.TaskEvents{
				TaskId: []byte{1, 2}, JobId: []byte{1, 0, 0, 0},
				TaskInfo:     &commonpb.TaskInfoEntry{Name: "f", FuncOrClassName: "f", Type: commonpb.TaskType_NORMAL_TASK},
				StateUpdates: &raypb.TaskStateUpdate{StateTsNs: c.ts, ErrorInfo: c.err},
			}
			r := NativeTaskRow(e)
			if r["state"] != c.state || r["error_type"] != c.errType || r["start_time_ms"] != c.start || r["end_time_ms"] != c.end {
				t.Fatalf("row = %v", r)
			}
			if r["task_id"] != "0102" || r["job_id"] != "01000000" || r["actor_id"] != nil {
				t.Fatalf("ids = %v %v %v", r["task_id"], r["job_id"], r["actor_id"])
			}
			s, _ := SchemaOf(Tasks)
			for _, col := range s.names(false) {
				if _, ok := r[col]; !ok {
					t.Fatalf("base column %s missing", col)
				}
			}
		})
	}
}

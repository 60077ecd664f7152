package gcsserver

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"

	"github.com/gray-cluster/gray/gcs"
	"github.com/gray-cluster/gray/proto/ray/commonpb"
	"github.com/gray-cluster/gray/proto/ray/raypb"
)

func testWorker(node []byte, ts int64) *raypb.WorkerTableData {
	return &raypb.WorkerTableData{IsAlive: true, Timestamp: ts, WorkerType: commonpb.WorkerType_WORKER,
		WorkerAddress: &commonpb.Address{NodeId: node, IpAddress: "127.0.0.1", Port: 7, WorkerId: randBytes(28)}}
}

func failure(w *raypb.WorkerTableData, detail string) *raypb.WorkerTableData {
	return &raypb.WorkerTableData{WorkerAddress: w.GetWorkerAddress(), Timestamp: w.GetTimestamp(),
		ExitType: commonpb.WorkerExitType_USER_ERROR.Enum(), ExitDetail: &detail, EndTimeMs: 99}
}

// TestWorkersSurviveRestart: the worker table (alive and dead workers, with
// exit type and detail, debugger port) is the same after a restart on the
// bbolt file; the workers of the previous head node are then dead.
func TestWorkersSurviveRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), gcs.StoreFile)
	open := func() (gcs.Store, *gcs.NativeTables) { return openBoltTables(t, path) }
	st1, tables1 := open()
	e1 := newEnv(t, func(c *Config) { c.Tables = tables1 })
	headID := randBytes(28)
	if _, err := e1.node.RegisterNode(e1.cctx(), &raypb.RegisterNodeRequest{NodeInfo: testNode(headID, "127.0.0.1", 1, true, nil)}); err != nil {
		t.Fatal(err)
	}
	other := randBytes(28)
	ws := []*raypb.WorkerTableData{testWorker(headID, 1), testWorker(other, 2), testWorker(other, 3)}
	for _, w := range ws {
		if _, err := e1.wrk.AddWorkerInfo(e1.cctx(), &raypb.AddWorkerInfoRequest{WorkerData: w}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e1.wrk.ReportWorkerFailure(e1.cctx(), &raypb.ReportWorkerFailureRequest{WorkerFailure: failure(ws[1], "boom")}); err != nil {
		t.Fatal(err)
	}
	if _, err := e1.wrk.UpdateWorkerDebuggerPort(e1.cctx(), &raypb.UpdateWorkerDebuggerPortRequest{WorkerId: ws[2].GetWorkerAddress().GetWorkerId(), DebuggerPort: 4444}); err != nil {
		t.Fatal(err)
	}
	before := e1.srv.Workers()
	e1.close()
	if err := st1.Close(); err != nil {
		t.Fatal(err)
	}

	st2, tables2 := open()
	defer st2.Close()
	e2 := newEnv(t, func(c *Config) { c.Tables = tables2 })
	after := e2.srv.Workers()
	if len(after) != len(before) {
		t.Fatalf("%d workers after the restart, want %d", len(after), len(before))
	}
	// The head node's worker died with it; the others are as they were.
	if w := after[0]; w.GetIsAlive() || w.GetExitType() != commonpb.WorkerExitType_SYSTEM_ERROR || w.GetExitDetail() == "" {
		t.Fatalf("the head node's worker after the restart = %v", w)
	}
	equalMsgs(t, "workers", before[1:], after[1:])
	r, err := e2.wrk.GetAllWorkerInfo(e2.cctx(), &raypb.GetAllWorkerInfoRequest{})
	if err != nil || len(r.GetWorkerTableData()) != 3 || r.GetWorkerTableData()[1].GetExitDetail() != "boom" {
		t.Fatalf("GetAllWorkerInfo after the restart = %v, %v", r, err)
	}
}

// TestDeadWorkerCapDeletes: dead workers beyond the cap are dropped from
// the store too, oldest first.
func TestDeadWorkerCapDeletes(t *testing.T) {
	st := gcs.NewMemStore()
	tables := gcs.NewNativeTables(st)
	e := newEnv(t, func(c *Config) { c.Tables = tables })
	node := randBytes(28)
	n := maxDeadWorkers + maxDeadWorkers/10 + 1
	first := testWorker(node, 1)
	for i := range n {
		w := first
		if i > 0 {
			w = testWorker(node, int64(i+1))
		}
		e.srv.mu.Lock()
		e.srv.putWorkerLocked(w)
		e.srv.workerDeadLocked(failure(w, "x"))
		e.srv.mu.Unlock()
	}
	keys, err := st.Keys(context.Background(), gcs.NativeWorkersTable, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != maxDeadWorkers || len(e.srv.Workers()) != maxDeadWorkers {
		t.Fatalf("%d stored, %d kept, want %d", len(keys), len(e.srv.Workers()), maxDeadWorkers)
	}
	if _, ok, _ := st.Get(context.Background(), gcs.NativeWorkersTable, first.GetWorkerAddress().GetWorkerId()); ok {
		t.Fatal("the oldest dead worker is still stored")
	}
}

// crashStore commits the first `left` writes and fails every later one,
// as a head killed at that write leaves its store.
type crashStore struct {
	gcs.Store
	mu   sync.Mutex
	left int
}

var errCrashed = errors.New("crashed")

func (c *crashStore) Apply(ctx context.Context, ops ...gcs.Op) ([]int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.left <= 0 {
		return nil, errCrashed
	}
	c.left--
	return c.Store.Apply(ctx, ops...)
}

// TestWorkersCrashAtRandomWrite: random worker changes (each one write),
// the head "killed" at a random write: a GCS reopened on the store has the
// worker table as it was after the last committed change.
func TestWorkersCrashAtRandomWrite(t *testing.T) {
	for seed := range uint64(8) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 7))
			base := gcs.NewMemStore()
			const steps = 40
			// The node registration is write 1 (an alive non-head node).
			writes := 1 + r.IntN(steps+1)
			crash := &crashStore{Store: base, left: writes}
			e1 := newEnv(t, func(c *Config) { c.Tables = gcs.NewNativeTables(crash) })
			node := randBytes(28)
			if _, err := e1.node.RegisterNode(e1.cctx(), &raypb.RegisterNodeRequest{NodeInfo: testNode(node, "127.0.0.1", 1, false, nil)}); err != nil {
				t.Fatal(err)
			}
			var alive []*raypb.WorkerTableData
			snaps := [][]*raypb.WorkerTableData{e1.srv.Workers()}
			for i := range steps {
				switch k := r.IntN(3); {
				case k == 0 || len(alive) == 0:
					w := testWorker(node, int64(i+1))
					alive = append(alive, w)
					_, _ = e1.wrk.AddWorkerInfo(e1.cctx(), &raypb.AddWorkerInfoRequest{WorkerData: w})
				case k == 1:
					j := r.IntN(len(alive))
					w := alive[j]
					alive = append(alive[:j], alive[j+1:]...)
					_, _ = e1.wrk.ReportWorkerFailure(e1.cctx(), &raypb.ReportWorkerFailureRequest{WorkerFailure: failure(w, fmt.Sprint("died at ", i))})
				default:
					_, _ = e1.wrk.UpdateWorkerDebuggerPort(e1.cctx(), &raypb.UpdateWorkerDebuggerPortRequest{
						WorkerId: alive[r.IntN(len(alive))].GetWorkerAddress().GetWorkerId(), DebuggerPort: uint32(i)})
				}
				snaps = append(snaps, e1.srv.Workers())
			}
			e1.close()
			keys, _ := base.Keys(context.Background(), gcs.NativeNodesTable, nil)
			if len(keys) != 1 {
				t.Fatalf("node not stored: %d", len(keys))
			}
			e2 := newEnv(t, func(c *Config) { c.Tables = gcs.NewNativeTables(base) })
			// The node took the first write; each change one more.
			equalMsgs(t, fmt.Sprintf("workers after a crash at write %d", writes), snaps[writes-1], e2.srv.Workers())
		})
	}
}

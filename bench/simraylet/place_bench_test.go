package simraylet_test

import (
	"fmt"
	"io"
	"log/slog"
	"maps"
	"testing"

	"github.com/gray-cluster/gray/bench/simraylet"
	"github.com/gray-cluster/gray/cluster"
	"github.com/gray-cluster/gray/gcs"
	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/objectstore"
	"github.com/gray-cluster/gray/taskspec"
)

// idleMember is a node that takes every task and never gets busier: what
// the head's placement sees of an idle simulated node.
type idleMember struct {
	id    ids.NodeID
	total map[string]float64
}

var _ cluster.Member = (*idleMember)(nil)

func (m *idleMember) NodeID() ids.NodeID                        { return m.id }
func (m *idleMember) Submit(*taskspec.TaskSpec) error           { return nil }
func (m *idleMember) Cancel(ids.TaskID, bool) error             { return nil }
func (m *idleMember) Total() map[string]float64                 { return maps.Clone(m.total) }
func (m *idleMember) Available() map[string]float64             { return maps.Clone(m.total) }
func (m *idleMember) WorkerJob(string) (ids.JobID, bool)        { return ids.JobID{}, false }
func (m *idleMember) WorkerBlocked(string) func()               { return func() {} }
func (m *idleMember) CreateActor(*taskspec.ActorSpec) error     { return nil }
func (m *idleMember) SubmitActorTask(*taskspec.ActorCall) error { return nil }
func (m *idleMember) KillActor(ids.ActorID, bool) error         { return nil }

// BenchmarkClusterSubmit is the head's cost of placing one task (default
// strategy) in a cluster of N idle nodes, without any networking: the part
// of every Ray Client task submission that grows with the pool.
func BenchmarkClusterSubmit(b *testing.B) {
	for _, n := range []int{100, 500, 1000, 2000} {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			c := cluster.New(cluster.Config{
				Store: objectstore.New(1 << 30), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Seed: 1,
			})
			for range n {
				m := &idleMember{id: ids.NewNodeID(), total: map[string]float64{"CPU": 1, "memory": 4 << 30, "object_store_memory": 1 << 30}}
				c.Add(m, gcs.NodeInfo{IP: "127.0.0.1", Labels: map[string]string{simraylet.RegionLabel: "sim"}})
			}
			job := ids.JobFromInt(1)
			b.ReportAllocs()
			for b.Loop() {
				spec := &taskspec.TaskSpec{
					TaskID: ids.NewTaskID(ids.NilActorFor(job)), JobID: job, Name: "f", NumReturns: 1,
					Resources: map[string]float64{"CPU": 1}, BundleIndex: -1,
				}
				if err := c.Submit(spec); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func (m *idleMember) ReserveBundles(string, ids.JobID, map[int]map[string]float64) error { return nil }
func (m *idleMember) ReleaseBundles(string) error                                        { return nil }

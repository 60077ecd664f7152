package simraylet_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/gray-cluster/gray/bench/simraylet"
	"github.com/gray-cluster/gray/gcs"
	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/internal/testcluster"
	"github.com/gray-cluster/gray/taskspec"
)

func TestFleetRegistersAndRunsTasks(t *testing.T) {
	c := testcluster.StartCluster(t, testcluster.MultiOptions{})
	h := c.Head
	fleet, err := simraylet.New(simraylet.Config{
		HeadAddr: h.NodeAddr(), Token: h.JoinToken(), N: 20, CPUsPerNode: 2,
		Heartbeat: 200 * time.Millisecond, JoinConcurrency: 8, Regions: []string{"eu", "us"},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- fleet.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		<-done
	})

	select {
	case <-fleet.Registered():
	case <-ctx.Done():
		t.Fatalf("not all nodes registered: %s", fleet.Stats())
	}
	var sims []gcs.NodeInfo
	for {
		changed := h.Cluster.Changed()
		sims = sims[:0]
		alive := 0
		for _, n := range h.Cluster.Nodes() {
			if n.State != gcs.NodeAlive {
				continue
			}
			alive++
			if !n.IsHead {
				sims = append(sims, n)
			}
		}
		if alive == 21 {
			break
		}
		select {
		case <-changed:
		case <-ctx.Done():
			t.Fatalf("want 21 alive nodes, have %d (%s)", alive, fleet.Stats())
		}
	}
	for _, n := range sims {
		if n.Total["CPU"] != 2 || n.Labels[simraylet.RegionLabel] == "" {
			t.Fatalf("node %s: total %v labels %v", n.ID.Hex(), n.Total, n.Labels)
		}
	}

	// A task pinned to a simulated node comes back as None from its push.
	target := sims[0].ID.Hex()
	job := ids.JobFromInt(1)
	spec := &taskspec.TaskSpec{
		TaskID: ids.NewTaskID(ids.NilActorFor(job)), JobID: job, Name: "f", NumReturns: 2,
		Resources: map[string]float64{"CPU": 1}, BundleIndex: -1,
		Scheduling: taskspec.Scheduling{Kind: "NODE_AFFINITY", NodeID: target},
	}
	for _, oid := range spec.ReturnIDs() {
		h.Store.Create(oid, "test")
	}
	if err := h.Cluster.Submit(spec); err != nil {
		t.Fatal(err)
	}
	for _, oid := range spec.ReturnIDs() {
		obj, err := h.Store.Wait(ctx, oid)
		if err != nil {
			t.Fatalf("result %s: %v (%s)", oid.Hex(), err, fleet.Stats())
		}
		if got := bytes.Join(obj.Chunks, nil); !bytes.Equal(got, simraylet.NonePickle) || obj.IsError {
			t.Fatalf("result %s = %x (error %v), want pickled None", oid.Hex(), got, obj.IsError)
		}
	}
	// The head has the results before the node counts the task done.
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for s := fleet.Stats(); s.TasksRun < 1; s = fleet.Stats() {
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("task not counted: %s", s)
		}
	}
	if s := fleet.Stats(); s.Registered != 20 || s.Joined != 20 || s.Submits != 1 || s.Pushes != 2 || s.Errors != 0 {
		t.Fatalf("stats: %s", s)
	}
}

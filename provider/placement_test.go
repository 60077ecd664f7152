package provider_test

import (
	"context"
	"testing"
	"time"

	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/internal/testcluster"
	"github.com/gray-cluster/gray/taskspec"
)

// TestPlacementGroupAcrossProviders creates a STRICT_SPREAD group from a
// provider (its request goes over the control channel to the head's table),
// checks each provider reserved its bundle over real QUIC, and removes it.
func TestPlacementGroupAcrossProviders(t *testing.T) {
	c := testcluster.StartCluster(t, testcluster.MultiOptions{Providers: 3})
	waitNodes(t, c, 4)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	job := ids.JobFromInt(7)
	via := c.Providers[0]
	res, err := via.PlacementGroupOp(ctx, job, taskspec.PGRequest{
		Op: "pg_create", Strategy: "STRICT_SPREAD", Name: "spread",
		Bundles: []map[string]float64{{"CPU": 2}, {"CPU": 2}, {"CPU": 2}},
	})
	if err != nil {
		t.Fatalf("pg_create via a provider: %v", err)
	}
	id, _ := res.(map[string]any)["id"].(string)
	if ok, err := via.PlacementGroupOp(ctx, job, taskspec.PGRequest{Op: "pg_wait", ID: id, Timeout: -1}); ok != true || err != nil {
		t.Fatalf("pg_wait = %v, %v", ok, err)
	}
	table, err := c.Providers[1].PlacementGroupOp(ctx, job, taskspec.PGRequest{Op: "pg_table", ID: id})
	if err != nil {
		t.Fatalf("pg_table: %v", err)
	}
	entry := table.(map[string]any)[id].(map[string]any)
	nodes := entry["bundles_to_node_id"].(map[string]any)
	if entry["state"] != "CREATED" || len(nodes) != 3 {
		t.Fatalf("entry %v, want CREATED on 3 nodes", entry)
	}
	// The head's 1-CPU node cannot hold a 2-CPU bundle: one per provider,
	// each reserved before the group counted as created.
	want := map[string]bool{}
	for _, p := range c.Providers {
		want[p.NodeID().Hex()] = true
		if got := p.Raylet().Available()["CPU"]; got != 0 {
			t.Errorf("provider %s available CPU %v, want 0 (bundle reserved)", p.NodeID().Hex()[:8], got)
		}
	}
	for _, n := range nodes {
		if !want[n.(string)] {
			t.Errorf("bundles_to_node_id %v is not one bundle per provider", nodes)
		}
		delete(want, n.(string))
	}

	if _, err := via.PlacementGroupOp(ctx, job, taskspec.PGRequest{Op: "pg_remove", ID: id}); err != nil {
		t.Fatalf("pg_remove: %v", err)
	}
	for _, p := range c.Providers {
		// The release went down p's control channel before this reply, and
		// p handles the head's messages in order.
		if _, err := p.PlacementGroupOp(ctx, job, taskspec.PGRequest{Op: "pg_table", ID: id}); err != nil {
			t.Fatalf("pg_table: %v", err)
		}
		if got := p.Raylet().Available()["CPU"]; got != 2 {
			t.Errorf("provider %s available CPU %v after removal, want 2", p.NodeID().Hex()[:8], got)
		}
	}
}

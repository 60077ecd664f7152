package nodemanager

import (
	"testing"

	commonpb "github.com/gray-cluster/gray/proto/ray/commonpb"
)

func node(id string, total, avail map[string]float64, labels map[string]string) *remoteNode {
	a := map[string]float64{}
	for k, v := range avail {
		a[k] = v
	}
	return &remoteNode{id: []byte(id), addr: &commonpb.Address{NodeId: []byte(id)}, total: total, avail: a, labels: labels}
}

func TestChooseNode(t *testing.T) {
	cpu2 := map[string]float64{"CPU": 2}
	busy := map[string]float64{"CPU": 0}
	gpu := map[string]float64{"CPU": 2, "GPU": 1}
	plain := &commonpb.LeaseSpec{}
	spread := &commonpb.LeaseSpec{SchedulingStrategy: &commonpb.SchedulingStrategy{
		SchedulingStrategy: &commonpb.SchedulingStrategy_SpreadSchedulingStrategy{SpreadSchedulingStrategy: &commonpb.SpreadSchedulingStrategy{}}}}
	affinity := func(id string, soft bool) *commonpb.LeaseSpec {
		return &commonpb.LeaseSpec{SchedulingStrategy: &commonpb.SchedulingStrategy{
			SchedulingStrategy: &commonpb.SchedulingStrategy_NodeAffinitySchedulingStrategy{NodeAffinitySchedulingStrategy: &commonpb.NodeAffinitySchedulingStrategy{NodeId: []byte(id), Soft: soft}}}}
	}
	cases := []struct {
		name                     string
		req                      map[string]float64
		spec                     *commonpb.LeaseSpec
		fits, feasible, excluded bool
		nodes                    []*remoteNode
		want                     string // "" = local
	}{
		{"fits here: stays", map[string]float64{"CPU": 1}, plain, true, true, false, []*remoteNode{node("b", cpu2, cpu2, nil)}, ""},
		{"busy here, free there: spills", map[string]float64{"CPU": 1}, plain, false, true, false, []*remoteNode{node("b", cpu2, cpu2, nil)}, "b"},
		{"busy everywhere: waits here", map[string]float64{"CPU": 1}, plain, false, true, false, []*remoteNode{node("b", cpu2, busy, nil)}, ""},
		{"infeasible here, busy there: goes there", map[string]float64{"GPU": 1}, plain, false, false, false,
			[]*remoteNode{node("b", gpu, map[string]float64{"CPU": 2, "GPU": 0}, nil)}, "b"},
		{"infeasible everywhere: waits here", map[string]float64{"TPU": 1}, plain, false, false, false, []*remoteNode{node("b", gpu, gpu, nil)}, ""},
		{"least utilised wins", map[string]float64{"CPU": 1}, plain, false, true, false,
			[]*remoteNode{node("b", map[string]float64{"CPU": 4}, map[string]float64{"CPU": 1}, nil), node("c", map[string]float64{"CPU": 4}, map[string]float64{"CPU": 3}, nil)}, "c"},
		{"hard affinity elsewhere", map[string]float64{"CPU": 1}, affinity("c", false), true, true, true,
			[]*remoteNode{node("b", cpu2, cpu2, nil), node("c", cpu2, busy, nil)}, "c"},
		{"hard affinity excludes the only free node", map[string]float64{"CPU": 1}, affinity("a", false), false, true, false,
			[]*remoteNode{node("b", cpu2, cpu2, nil)}, ""},
		{"spread: a less busy node takes it", map[string]float64{"CPU": 1}, spread, true, true, false, []*remoteNode{node("b", cpu2, cpu2, nil)}, "b"},
		{"spread: no other node fits: here", map[string]float64{"CPU": 1}, spread, true, true, false, []*remoteNode{node("b", cpu2, busy, nil)}, ""},
		{"label selector", map[string]float64{"CPU": 1}, &commonpb.LeaseSpec{LabelSelector: &commonpb.LabelSelector{LabelConstraints: []*commonpb.LabelSelectorConstraint{
			{LabelKey: "zone", Operator: commonpb.LabelSelectorOperator_LABEL_OPERATOR_IN, LabelValues: []string{"eu"}}}}}, true, true, true,
			[]*remoteNode{node("b", cpu2, cpu2, map[string]string{"zone": "us"}), node("c", cpu2, cpu2, map[string]string{"zone": "eu"})}, "c"},
		{"no other nodes", map[string]float64{"CPU": 1}, plain, false, true, false, nil, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := chooseNode(c.req, c.spec, c.fits, c.feasible, c.excluded, c.nodes)
			if c.want == "" {
				if !got.local {
					t.Fatalf("want local, got %s", got.node.id)
				}
				return
			}
			if got.local || string(got.node.id) != c.want {
				t.Fatalf("want %s, got %+v", c.want, got)
			}
		})
	}
}

func TestViewTakeSpreadsABurst(t *testing.T) {
	var v clusterView
	b := node("b", map[string]float64{"CPU": 1}, map[string]float64{"CPU": 1}, nil)
	c := node("c", map[string]float64{"CPU": 1}, map[string]float64{"CPU": 1}, nil)
	v.set([]*remoteNode{b, c})
	req := map[string]float64{"CPU": 1}
	seen := map[string]bool{}
	for i := 0; i < 2; i++ {
		ch := chooseNode(req, &commonpb.LeaseSpec{}, false, true, false, v.snapshot())
		if ch.local {
			t.Fatalf("lease %d stayed local", i)
		}
		v.take(ch.node, req)
		seen[string(ch.node.id)] = true
	}
	if !seen["b"] || !seen["c"] {
		t.Fatalf("burst did not spread: %v", seen)
	}
	if ch := chooseNode(req, &commonpb.LeaseSpec{}, false, true, false, v.snapshot()); !ch.local {
		t.Fatalf("third lease should wait here, went to %s", ch.node.id)
	}
}

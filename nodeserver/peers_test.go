package nodeserver

import (
	"context"
	"net"
	"testing"

	"google.golang.org/grpc/peer"

	"github.com/gray-cluster/gray/gcs"
	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/objectstore"
	pb "github.com/gray-cluster/gray/proto/nodepb"
	"github.com/gray-cluster/gray/taskspec"
)

// Work sent to a provider names the other providers that hold its
// dependencies and serve peers: connected ones only, the puller's region
// first, never the puller itself.
func TestSubmitNamesHoldersOfDependencies(t *testing.T) {
	store := objectstore.New(4 << 20)
	s := New(Config{Store: store})
	node := func(region, addr string, connected bool) ids.NodeID {
		id := ids.NewNodeID()
		nc := &nodeConn{r: newRemote(id, store), connected: connected, peerAddr: addr, peerProbed: true, peerReachable: addr != "",
			info: gcs.NodeInfo{ID: id, Labels: map[string]string{regionLabel: region}}}
		nc.r.locate = func(deps []ids.ObjectID) []*pb.PeerLocation { return s.locate(id, deps) }
		s.remotes[id] = nc
		return id
	}
	us := node("us", "10.0.0.1:7000", true)
	eu := node("eu", "10.0.0.2:7000", true)
	gone := node("eu", "10.0.0.3:7000", false)
	noPeer := node("eu", "", true)
	puller := node("eu", "10.0.0.4:7000", true)
	job := ids.JobFromInt(1)
	dep := ids.NewTaskID(ids.NilActorFor(job)).ReturnID(1)
	unknown := ids.NewTaskID(ids.NilActorFor(job)).ReturnID(1)
	small := ids.NewTaskID(ids.NilActorFor(job)).ReturnID(1)
	for id, size := range map[ids.ObjectID]int{dep: PeerRedirectMin, small: 100} {
		if err := store.Put(&objectstore.Object{ID: id, Size: int64(size), Chunks: [][]byte{make([]byte, size)}}, "test"); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []ids.NodeID{us, gone, noPeer, puller, eu} {
		s.dir.add(dep, n)
		s.dir.add(small, n)
	}
	r := s.remotes[puller].r
	r.out = newSendQueue()
	spec := &taskspec.TaskSpec{TaskID: ids.NewTaskID(ids.NilActorFor(job)), JobID: job, NumReturns: 1, Deps: []ids.ObjectID{dep, unknown, small}}
	if err := r.Submit(spec); err != nil {
		t.Fatal(err)
	}
	msgs, err := r.out.take(context.Background())
	if err != nil || len(msgs) != 1 {
		t.Fatalf("sent %d messages: %v", len(msgs), err)
	}
	locs := msgs[0].GetSubmit().GetPeerLocations()
	if len(locs) != 1 {
		t.Fatalf("locations %v, want one (the unknown object has no holders, the small one is not worth it)", locs)
	}
	var got []string
	for _, h := range locs[0].Holders {
		got = append(got, h.NodeId+"@"+h.Address)
	}
	want := []string{eu.Hex() + "@10.0.0.2:7000", us.Hex() + "@10.0.0.1:7000"}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("holders %v, want %v", got, want)
	}
}

// A peer address announced without a usable host gets the address the
// head sees the provider at.
func TestPeerAddressFillsInTheSeenHost(t *testing.T) {
	ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.UDPAddr{IP: net.ParseIP("203.0.113.7"), Port: 41000}})
	for announced, want := range map[string]string{
		"":                "",
		":7000":           "203.0.113.7:7000",
		"0.0.0.0:7000":    "203.0.113.7:7000",
		"[::]:7000":       "203.0.113.7:7000",
		"10.1.2.3:7000":   "10.1.2.3:7000",
		"peer.example:80": "peer.example:80",
		"garbage":         "",
	} {
		if got := peerAddress(ctx, announced); got != want {
			t.Errorf("peerAddress(%q) = %q, want %q", announced, got, want)
		}
	}
}

package provider_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/internal/testcluster"
	"github.com/gray-cluster/gray/objectstore"
	pb "github.com/gray-cluster/gray/proto/nodepb"
	"github.com/gray-cluster/gray/provider"
	"github.com/gray-cluster/gray/transport"
)

// waitProbe waits until the head has checked provider id's peer address
// and reports whether it reached the provider there.
func waitProbe(t *testing.T, c *testcluster.Cluster, id ids.NodeID) bool {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(30 * time.Second)
	for {
		if probed, ok := c.Head.Nodes.PeerProbe(id); probed {
			return ok
		}
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("the head never probed %s's peer address", id.Hex())
		}
	}
}

// produce seals a large object on provider a (as a task's result there)
// and waits until the head's store has it. It returns the object's bytes.
func produce(t *testing.T, c *testcluster.Cluster, a *provider.Provider, size int) (ids.ObjectID, []byte) {
	t.Helper()
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i*31>>4) ^ byte(i>>16)
	}
	id := ids.NewTaskID(ids.NilActorFor(ids.JobFromInt(1))).ReturnID(1)
	c.Head.Store.Create(id, "owner")
	a.Objects().Seal(&objectstore.Object{ID: id, Chunks: [][]byte{data[:size/3], data[size/3:]}, Size: int64(size)})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.Head.Store.Wait(ctx, id); err != nil {
		t.Fatal(err)
	}
	return id, data
}

// consume pulls id on provider b and checks its bytes.
func consume(t *testing.T, b *provider.Provider, id ids.ObjectID, want []byte) provider.ObjectTransfer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	got, err := b.Objects().Wait(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(bytes.Join(got.Chunks, nil), want) {
		t.Fatalf("pulled object differs (%d bytes in %d chunks)", got.Size, len(got.Chunks))
	}
	tr, ok := b.ObjectTransfer(id)
	if !ok {
		t.Fatal("no transfer recorded for the object")
	}
	return tr
}

// An object produced on provider A and needed on provider B moves from A to
// B directly: the head names A, and relays none of its bytes.
func TestObjectsMoveDirectlyBetweenProviders(t *testing.T) {
	c := testcluster.StartCluster(t, testcluster.MultiOptions{Providers: 2})
	waitNodes(t, c, 3)
	a, b := c.Providers[0], c.Providers[1]
	if a.PeerAddress() == "" || c.Head.Nodes.PeerAddress(a.NodeID()) == "" {
		t.Fatalf("provider A announced no peer address (%q, head has %q)", a.PeerAddress(), c.Head.Nodes.PeerAddress(a.NodeID()))
	}
	if !waitProbe(t, c, a.NodeID()) {
		t.Fatalf("the head could not reach A's peer service at %s", a.PeerAddress())
	}
	const size = 9<<20 + 4321
	id, data := produce(t, c, a, size)
	tr := consume(t, b, id, data)
	if tr.Direct != size || tr.Relayed != 0 || tr.From != a.NodeID().Hex() {
		t.Fatalf("transfer %+v, want %d bytes direct from %s and none relayed", tr, size, a.NodeID().Hex())
	}
	if s := a.Transfers(); s.Served < size {
		t.Fatalf("A served %d bytes, want at least %d", s.Served, size)
	}
	if s := b.Transfers(); s.DirectPulls != 1 || s.Fallbacks != 0 || s.Relayed != 0 {
		t.Fatalf("B's counters %+v", s)
	}
	// The head's own count of what it relayed to B agrees.
	if got := c.Head.Nodes.Transfers()[b.NodeID()].Relayed; got != 0 {
		t.Fatalf("the head relayed %d bytes to B", got)
	}
}

// When A's peer service cannot be used, B still gets correct data, through
// the head.
func TestDirectPullFallsBackToTheHead(t *testing.T) {
	cases := []struct {
		name  string
		cfg   func(*provider.Config)
		after func(*provider.Provider)
		// reachable: the head reached A's peer service when A joined (so
		// it names A as a holder); tried: B tries A before falling back.
		reachable, tried bool
	}{
		{name: "no-peer", cfg: func(c *provider.Config) { c.NoPeer = true }},
		// An address nobody can reach (NAT): the head's probe fails, so A
		// is never named and B loses no time on it.
		{name: "wrong-advertised-address", cfg: func(c *provider.Config) { c.PeerAdvertise = "127.0.0.1:9" }},
		// Reachable when probed, gone since: B tries it and falls back.
		{name: "listener-closed", after: (*provider.Provider).StopPeerService, reachable: true, tried: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := testcluster.StartCluster(t, testcluster.MultiOptions{Providers: 2, Provider: func(i int, cfg *provider.Config) {
				if i == 0 && tc.cfg != nil {
					tc.cfg(cfg)
				}
			}})
			waitNodes(t, c, 3)
			a, b := c.Providers[0], c.Providers[1]
			if a.PeerAddress() != "" {
				if got := waitProbe(t, c, a.NodeID()); got != tc.reachable {
					t.Fatalf("head reached A's peer service: %v, want %v", got, tc.reachable)
				}
			}
			if tc.after != nil {
				tc.after(a)
			}
			const size = 8<<20 + 17
			id, data := produce(t, c, a, size)
			tr := consume(t, b, id, data)
			if tr.Direct != 0 || tr.Relayed != size {
				t.Fatalf("transfer %+v, want all %d bytes relayed", tr, size)
			}
			if s, want := b.Transfers(), map[bool]int64{true: 1}[tc.tried]; s.Fallbacks != want {
				t.Fatalf("B's counters %+v, want %d fallbacks", s, want)
			}
			if got := c.Head.Nodes.Transfers()[b.NodeID()].Relayed; got != size {
				t.Fatalf("the head relayed %d bytes to B, want %d", got, size)
			}
		})
	}
}

// The peer service takes only callers with a certificate from the pool's
// CA: a foreign certificate, or none, is refused; a pool member is served.
func TestPeerServiceRefusesForeignCertificates(t *testing.T) {
	dir := t.TempDir()
	c := testcluster.StartCluster(t, testcluster.MultiOptions{Providers: 1, Provider: func(_ int, cfg *provider.Config) {
		cfg.StateDir = dir
	}})
	waitNodes(t, c, 2)
	a := c.Providers[0]
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool, err := transport.PoolFromPEM(caPEM)
	if err != nil {
		t.Fatal(err)
	}
	id, data := produce(t, c, a, 2<<20)
	addr := a.PeerListenAddr().String()

	pull := func(cfg transport.Config) ([]byte, error) {
		cfg.CA, cfg.Logger, cfg.HandshakeTimeout = pool, quiet(), time.Second
		tr, err := transport.NewQUIC(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer tr.Close()
		conn, err := transport.NewClient(tr, addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		stream, err := pb.NewPeerObjectsClient(conn).PeerPull(ctx, &pb.PullRequest{ObjectId: id.Bytes()})
		if err != nil {
			return nil, err
		}
		var out []byte
		for {
			m, err := stream.Recv()
			if err != nil {
				return nil, err
			}
			out = append(out, m.Data...)
			if m.EndOfChunk || m.Missing {
				return out, nil
			}
		}
	}

	forger, err := transport.NewCA("forger")
	if err != nil {
		t.Fatal(err)
	}
	// A forged certificate naming a real node id.
	forged, err := forger.NewNodeCert(a.NodeID().Hex())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pull(transport.Config{Certificate: &forged}); err == nil || !strings.Contains(err.Error(), transport.ErrUnauthenticated.Error()) {
		t.Fatalf("a certificate from another CA was served: %v", err)
	}
	if _, err := pull(transport.Config{}); err == nil || !strings.Contains(err.Error(), transport.ErrUnauthenticated.Error()) {
		t.Fatalf("a caller without a certificate was served: %v", err)
	}
	// A pool member (a certificate the pool CA issued) is served.
	member, err := os.ReadFile(filepath.Join(dir, "node.pem"))
	if err != nil {
		t.Fatal(err)
	}
	key, err := os.ReadFile(filepath.Join(dir, "node-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(member, key)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pull(transport.Config{Certificate: &cert})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("served %d bytes, want %d", len(got), len(data))
	}
}

// A holder whose advertised address leads to another provider (an address
// taken over, a stale announcement) is not trusted: the head's probe finds
// the wrong node there and never names the holder, and a puller that dials
// such an address itself checks the node id in the certificate.
func TestDirectPullChecksTheHoldersIdentity(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	other := pc.LocalAddr().String()
	pc.Close()
	c := testcluster.StartCluster(t, testcluster.MultiOptions{Providers: 3, Provider: func(i int, cfg *provider.Config) {
		switch i {
		case 0:
			cfg.PeerBind = other // someone else serves here
		case 1:
			cfg.PeerAdvertise = other // the producer claims that address
		}
	}})
	waitNodes(t, c, 4)
	if waitProbe(t, c, c.Providers[1].NodeID()) {
		t.Fatalf("the head took provider 0 at %s for provider 1", other)
	}
	const size = 8 << 20
	id, data := produce(t, c, c.Providers[1], size)
	tr := consume(t, c.Providers[2], id, data)
	if tr.Direct != 0 || tr.Relayed != size {
		t.Fatalf("transfer %+v, want all %d bytes relayed", tr, size)
	}
	if s := c.Providers[0].Transfers(); s.Served != 0 {
		t.Fatalf("the wrong provider served %d bytes", s.Served)
	}
	// A puller checks who answers: the node serving at the address works,
	// the one the address was claimed for does not (the connection never
	// comes up).
	if err := c.Providers[2].DialPeer(context.Background(), c.Providers[0].NodeID().Hex(), other); err != nil {
		t.Fatalf("dialling provider 0 at its own address: %v", err)
	}
	err = c.Providers[2].DialPeer(context.Background(), c.Providers[1].NodeID().Hex(), other)
	if !errors.Is(err, provider.ErrPeerUnreachable) {
		t.Fatalf("dialling provider 1 at provider 0's address: %v, want ErrPeerUnreachable", err)
	}
	if s := c.Providers[0].Transfers(); s.Served != 0 {
		t.Fatalf("the wrong provider served %d bytes", s.Served)
	}
}

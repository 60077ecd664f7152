package provider_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gray-cluster/gray/gcs"
	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/internal/testcluster"
	"github.com/gray-cluster/gray/objectstore"
	pb "github.com/gray-cluster/gray/proto/nodepb"
	"github.com/gray-cluster/gray/provider"
	"github.com/gray-cluster/gray/transport"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// waitNodes waits until the head lists n alive nodes.
func waitNodes(t *testing.T, c *testcluster.Cluster, n int) []gcs.NodeInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		ch := c.Head.Cluster.Changed()
		var alive []gcs.NodeInfo
		for _, info := range c.Head.Cluster.Nodes() {
			if info.State == gcs.NodeAlive {
				alive = append(alive, info)
			}
		}
		if len(alive) == n {
			return alive
		}
		select {
		case <-ch:
		case <-ctx.Done():
			t.Fatalf("want %d alive nodes, have %+v", n, c.Head.Cluster.Nodes())
		}
	}
}

func TestProvidersJoinAndRegister(t *testing.T) {
	c := testcluster.StartCluster(t, testcluster.MultiOptions{Providers: 2, Regions: []string{"eu", "us"}})
	nodes := waitNodes(t, c, 3)
	regions := map[string]bool{}
	for _, n := range nodes {
		regions[n.Labels["ray.io/availability-region"]] = true
	}
	if !regions["eu"] || !regions["us"] {
		t.Fatalf("regions not registered: %+v", nodes)
	}
	if got := c.Head.Cluster.Total()["CPU"]; got != 1+2+2 {
		t.Fatalf("total CPU %v, want 5", got)
	}
	for _, p := range c.Providers {
		if p.NodeID() == (ids.NodeID{}) || p.NodeID() == c.Head.Raylet.NodeID() {
			t.Fatalf("provider has no node id of its own: %s", p.NodeID().Hex())
		}
	}
}

func TestJoinWithWrongSecretIsRefused(t *testing.T) {
	c := testcluster.StartCluster(t, testcluster.MultiOptions{})
	_, pin, err := provider.ParseToken(c.Head.JoinToken())
	if err != nil {
		t.Fatal(err)
	}
	p, err := provider.New(provider.Config{
		HeadAddr: c.Head.NodeAddr(), Token: "not-the-secret." + strings.Split(c.Head.JoinToken(), ".")[1],
		StateDir: t.TempDir(), Resources: map[string]float64{"CPU": 1}, SessionDir: t.TempDir(), Logger: quiet(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = p.Start(ctx)
	if status.Code(errors.Unwrap(err)) != codes.PermissionDenied && !strings.Contains(err.Error(), "invalid join token") {
		t.Fatalf("join with a wrong secret: %v", err)
	}
	_ = pin
	if n := len(c.Head.Cluster.Nodes()); n != 1 {
		t.Fatalf("a refused provider was registered: %d nodes", n)
	}
}

func TestJoinChecksTheHeadsCA(t *testing.T) {
	c := testcluster.StartCluster(t, testcluster.MultiOptions{})
	secret, _, err := provider.ParseToken(c.Head.JoinToken())
	if err != nil {
		t.Fatal(err)
	}
	other, err := transport.NewCA("someone else")
	if err != nil {
		t.Fatal(err)
	}
	p, err := provider.New(provider.Config{
		HeadAddr: c.Head.NodeAddr(), Token: provider.Token(secret, other.Cert),
		StateDir: t.TempDir(), Resources: map[string]float64{"CPU": 1}, SessionDir: t.TempDir(), Logger: quiet(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// gRPC reports the dial failure as a status; the transport's reason is in it.
	if err := p.Start(ctx); err == nil || !strings.Contains(err.Error(), transport.ErrUnauthenticated.Error()) {
		t.Fatalf("a head whose CA does not match the token's pin was trusted: %v", err)
	}
}

// A node certificate from another CA (a stolen or forged node id) cannot
// open a control channel or move objects.
func TestForeignNodeCertificateIsRefused(t *testing.T) {
	c := testcluster.StartCluster(t, testcluster.MultiOptions{})
	other, err := transport.NewCA("forger")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := other.NewNodeCert(c.Head.Raylet.NodeID().Hex())
	if err != nil {
		t.Fatal(err)
	}
	_, pin, _ := provider.ParseToken(c.Head.JoinToken())
	tr, err := transport.NewQUIC(transport.Config{Certificate: &cert, CAPin: pin, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	conn, err := transport.NewClient(tr, c.Head.NodeAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err = pb.NewHeadClient(conn).PullObject(ctx, &pb.PullRequest{ObjectId: make([]byte, ids.ObjectIDSize)})
	if err == nil {
		stream, _ := pb.NewHeadClient(conn).PullObject(ctx, &pb.PullRequest{ObjectId: make([]byte, ids.ObjectIDSize)})
		if stream != nil {
			_, err = stream.Recv()
		}
	}
	if err == nil {
		t.Fatal("a certificate from a foreign CA was accepted")
	}
}

// An unauthenticated caller (join mode, no certificate) may Join but not
// pull objects or connect as a node.
func TestUnauthenticatedCallerCannotActAsNode(t *testing.T) {
	c := testcluster.StartCluster(t, testcluster.MultiOptions{})
	_, pin, _ := provider.ParseToken(c.Head.JoinToken())
	tr, err := transport.NewQUIC(transport.Config{CAPin: pin, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	conn, err := transport.NewClient(tr, c.Head.NodeAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stream, err := pb.NewHeadClient(conn).PullObject(ctx, &pb.PullRequest{ObjectId: make([]byte, ids.ObjectIDSize)})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("pull without a node certificate: %v", err)
	}
	cs, err := pb.NewHeadClient(conn).Connect(ctx)
	if err == nil {
		_ = cs.Send(&pb.NodeMessage{Msg: &pb.NodeMessage_Register{Register: &pb.Register{}}})
		_, err = cs.Recv()
	}
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("connect without a node certificate: %v", err)
	}
	// Join with a valid token works from the same unauthenticated conn.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	secret, _, _ := provider.ParseToken(c.Head.JoinToken())
	reply, err := pb.NewHeadClient(conn).Join(ctx, &pb.JoinRequest{Token: secret, PublicKey: der})
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(reply.Certificate)
	if err != nil || leaf.Subject.CommonName != reply.NodeId {
		t.Fatalf("issued certificate: %v %v", err, leaf)
	}
}

// Objects move both ways: a provider pulls what the head holds, and what it
// seals is pushed into the head's store.
func TestObjectsPullAndPush(t *testing.T) {
	c := testcluster.StartCluster(t, testcluster.MultiOptions{Providers: 1})
	waitNodes(t, c, 2)
	store := c.Head.Store
	rl := c.Providers[0].Raylet()
	_ = rl
	big := bytes.Repeat([]byte("0123456789abcdef"), 3<<16) // 3 MiB: several messages
	in := ids.NewTaskID(ids.NilActorFor(ids.JobFromInt(1))).ReturnID(1)
	if err := store.Put(&objectstore.Object{ID: in, Chunks: [][]byte{big[:1<<20], big[1<<20:]}, Size: int64(len(big))}, "test"); err != nil {
		t.Fatal(err)
	}
	objs := c.Providers[0].Objects()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	got, err := objs.Wait(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(bytes.Join(got.Chunks, nil), big) {
		t.Fatalf("pulled object differs (%d chunks)", len(got.Chunks))
	}
	out := ids.NewTaskID(ids.NilActorFor(ids.JobFromInt(1))).ReturnID(1)
	store.Create(out, "owner")
	objs.Seal(&objectstore.Object{ID: out, Chunks: [][]byte{[]byte("result")}, Size: 6, Contained: []ids.ObjectID{in}})
	res, err := store.Wait(ctx, out)
	if err != nil {
		t.Fatal(err)
	}
	if string(bytes.Join(res.Chunks, nil)) != "result" {
		t.Fatalf("pushed object: %q", res.Chunks)
	}
	missing := ids.NewTaskID(ids.NilActorFor(ids.JobFromInt(1))).ReturnID(1)
	if _, err := objs.Wait(ctx, missing); err == nil {
		t.Fatal("pulling an unknown object succeeded")
	}
}

// Objects larger than a stripe move as ranges over several QUIC connections
// both ways and arrive intact.
func TestLargeObjectsAreStriped(t *testing.T) {
	c := testcluster.StartCluster(t, testcluster.MultiOptions{Providers: 1})
	waitNodes(t, c, 2)
	store := c.Head.Store
	big := make([]byte, 21<<20+12345)
	for i := range big {
		big[i] = byte(i * 7 >> 3)
	}
	in := ids.NewTaskID(ids.NilActorFor(ids.JobFromInt(1))).ReturnID(1)
	chunks := [][]byte{big[:5<<20], big[5<<20 : 6<<20], big[6<<20:]}
	if err := store.Put(&objectstore.Object{ID: in, Chunks: chunks, Size: int64(len(big))}, "test"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	got, err := c.Providers[0].Objects().Wait(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(bytes.Join(got.Chunks, nil), big) || len(got.Chunks) < 2 {
		t.Fatalf("striped pull differs (%d chunks)", len(got.Chunks))
	}
	out := ids.NewTaskID(ids.NilActorFor(ids.JobFromInt(1))).ReturnID(1)
	store.Create(out, "owner")
	c.Providers[0].Objects().Seal(&objectstore.Object{ID: out, Chunks: [][]byte{big}, Size: int64(len(big)), IsError: true})
	res, err := store.Wait(ctx, out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(bytes.Join(res.Chunks, nil), big) || !res.IsError {
		t.Fatal("striped push differs")
	}
}

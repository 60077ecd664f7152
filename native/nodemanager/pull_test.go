package nodemanager

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/gray-cluster/gray/internal/testlog"
	"github.com/gray-cluster/gray/native/plasma"
	nodepb "github.com/gray-cluster/gray/proto/nodepb"
	commonpb "github.com/gray-cluster/gray/proto/ray/commonpb"
)

// plasmaNode is a test raylet whose store is a real plasma store.
func plasmaNode(t *testing.T) (*testNode, *plasma.Store) {
	t.Helper()
	dir, err := os.MkdirTemp("", "pl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ps, err := plasma.New(plasma.Config{SocketPath: filepath.Join(dir, "plasma"), Capacity: 64 << 20, Logger: testlog.New(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := ps.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ps.Close() })
	tn := newTestNode(t, true, func(c *Config) { c.Store = PlasmaStore(ps) })
	return tn, ps
}

func TestFetchStreamsAnObjectInPlace(t *testing.T) {
	a, pa := plasmaNode(t)
	b, pb := plasmaNode(t)
	data := bytes.Repeat([]byte("0123456789abcdef"), (5<<20)/16+3) // not a multiple of the chunk
	var id ObjectID
	id[0], id[27] = 1, 9
	if err := pa.Put(plasma.ObjectID(id), data, []byte("meta"), plasma.Owner{}); err != nil {
		t.Fatal(err)
	}
	from := &commonpb.Address{IpAddress: "127.0.0.1", Port: int32(a.r.Port())}
	owner := &commonpb.Address{WorkerId: make([]byte, 28)}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cp := b.r.cfg.Store.(copier)
	p := newPuller(b.r)
	if err := p.fetch(ctx, cp, id, owner, from, nil); err != nil {
		t.Fatal(err)
	}
	got, meta, ok := pb.Read(plasma.ObjectID(id))
	if !ok || !bytes.Equal(got, data) || string(meta) != "meta" {
		t.Fatalf("fetched %d bytes (want %d), meta %q, ok %v", len(got), len(data), meta, ok)
	}
	// Fetching again is a no-op (already here); a missing object fails and
	// leaves nothing behind on the receiver.
	if err := p.fetch(ctx, cp, id, owner, from, nil); err != nil {
		t.Fatalf("second fetch: %v", err)
	}
	// The sender let go of its copy: a delete of it happens at once.
	// (The second fetch ended early: its cancel reaches the sender
	// asynchronously.)
	pa.Delete(plasma.ObjectID(id))
	for deadline := time.Now().Add(10 * time.Second); pa.Contains(plasma.ObjectID(id)); {
		if time.Now().After(deadline) {
			t.Fatal("sender's copy still held after the fetches")
		}
		time.Sleep(5 * time.Millisecond)
	}
	var missing ObjectID
	missing[0] = 2
	if err := p.fetch(ctx, cp, missing, owner, from, nil); err == nil {
		t.Fatal("fetch of an object the sender lacks succeeded")
	}
	if pb.Contains(plasma.ObjectID(missing)) || pb.Usage().Objects != 1 {
		t.Fatalf("receiver after a failed fetch: %+v", pb.Usage())
	}
}

// brokenHolder sends the first cut bytes of data, then fails the stream
// (a holder that vanished mid-transfer); it records the offsets asked for.
type brokenHolder struct {
	nodepb.UnimplementedNativeObjectsServer
	data    []byte
	cut     int
	offsets []uint64
}

func (h *brokenHolder) Fetch(req *nodepb.NativeFetchRequest, st nodepb.NativeObjects_FetchServer) error {
	h.offsets = append(h.offsets, req.GetOffset())
	if err := st.Send(&nodepb.NativeFetchChunk{DataSize: uint64(len(h.data)), Metadata: []byte("meta"), Data: h.data[:h.cut]}); err != nil {
		return err
	}
	return errors.New("holder went away")
}

func TestFetchResumesWhereABrokenTransferStopped(t *testing.T) {
	a, pa := plasmaNode(t)
	b, pb := plasmaNode(t)
	data := bytes.Repeat([]byte("resume!"), (3<<20)/7)
	var id ObjectID
	id[0] = 3
	if err := pa.Put(plasma.ObjectID(id), data, []byte("meta"), plasma.Owner{}); err != nil {
		t.Fatal(err)
	}
	broken := &brokenHolder{data: data, cut: 1 << 20}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	nodepb.RegisterNativeObjectsServer(srv, broken)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	port := ln.Addr().(*net.TCPAddr).Port

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cp := b.r.cfg.Store.(copier)
	p := newPuller(b.r)
	owner := &commonpb.Address{WorkerId: make([]byte, 28)}
	var part partial
	err = p.fetch(ctx, cp, id, owner, &commonpb.Address{IpAddress: "127.0.0.1", Port: int32(port)}, &part)
	if err == nil || part.offset() != 1<<20 {
		t.Fatalf("broken transfer: err %v, kept %d bytes", err, part.offset())
	}
	if pb.Contains(plasma.ObjectID(id)) {
		t.Fatal("a partial object is visible")
	}
	// The next attempt, from the other holder, asks for the rest only.
	if err := p.fetch(ctx, cp, id, owner, &commonpb.Address{IpAddress: "127.0.0.1", Port: int32(a.r.Port())}, &part); err != nil {
		t.Fatal(err)
	}
	got, meta, ok := pb.Read(plasma.ObjectID(id))
	if !ok || !bytes.Equal(got, data) || string(meta) != "meta" {
		t.Fatalf("resumed object: %d bytes (want %d), meta %q, ok %v", len(got), len(data), meta, ok)
	}
	// A holder answering with another size makes the next attempt start over.
	var other ObjectID
	other[0] = 4
	broken.data = data[:2<<20]
	part = partial{}
	_ = p.fetch(ctx, cp, other, owner, &commonpb.Address{IpAddress: "127.0.0.1", Port: int32(port)}, &part)
	broken.data = data
	if err := p.fetch(ctx, cp, other, owner, &commonpb.Address{IpAddress: "127.0.0.1", Port: int32(port)}, &part); err == nil || part.offset() != 0 {
		t.Fatalf("size mismatch: err %v, kept %d", err, part.offset())
	}
	part.abort()
	if pb.Usage().Objects != 1 {
		t.Fatalf("receiver holds %d objects, want 1", pb.Usage().Objects)
	}
}

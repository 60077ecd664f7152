package nodemanager

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gray-cluster/gray/internal/testlog"
	"github.com/gray-cluster/gray/native/plasma"
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
	if err := p.fetch(ctx, cp, id, owner, from); err != nil {
		t.Fatal(err)
	}
	got, meta, ok := pb.Read(plasma.ObjectID(id))
	if !ok || !bytes.Equal(got, data) || string(meta) != "meta" {
		t.Fatalf("fetched %d bytes (want %d), meta %q, ok %v", len(got), len(data), meta, ok)
	}
	// Fetching again is a no-op (already here); a missing object fails and
	// leaves nothing behind on the receiver.
	if err := p.fetch(ctx, cp, id, owner, from); err != nil {
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
	if err := p.fetch(ctx, cp, missing, owner, from); err == nil {
		t.Fatal("fetch of an object the sender lacks succeeded")
	}
	if pb.Contains(plasma.ObjectID(missing)) || pb.Usage().Objects != 1 {
		t.Fatalf("receiver after a failed fetch: %+v", pb.Usage())
	}
}

package transport

import (
	"errors"
	"io"
	"testing"
)

func TestMemPartition(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	n := NewNetwork()
	a, b, c := n.NewTransport("a", "node-a"), n.NewTransport("b", "node-b"), n.NewTransport("c", "node-c")
	for _, tr := range []*Mem{a, b, c} {
		t.Cleanup(func() { _ = tr.Close() })
		serve(t, listen(t, ctx, tr, ""), echo)
	}
	ab := dial(t, ctx, a, "b")
	ac := dial(t, ctx, a, "c")
	if err := roundTrip(ab, []byte("x")); err != nil {
		t.Fatal(err)
	}

	n.Partition("b", "a") // order does not matter
	if _, err := ab.Read(make([]byte, 1)); err == nil {
		t.Fatalf("Read on a partitioned conn = %v, want an error", err)
	}
	for _, d := range []struct {
		from *Mem
		to   string
	}{{a, "b"}, {b, "a"}} {
		if _, err := d.from.Dial(ctx, d.to); !errors.Is(err, ErrUnreachable) {
			t.Errorf("Dial %s -> %s across a partition = %v, want ErrUnreachable", d.from.Addr(), d.to, err)
		}
	}
	if err := roundTrip(ac, []byte("unaffected")); err != nil {
		t.Fatalf("conn a-c broke in the a-b partition: %v", err)
	}
	if err := roundTrip(dial(t, ctx, b, "c"), []byte("b-c")); err != nil {
		t.Fatal(err)
	}

	n.Heal("a", "b")
	if err := roundTrip(dial(t, ctx, a, "b"), []byte("healed")); err != nil {
		t.Fatal(err)
	}
	if err := roundTrip(dial(t, ctx, b, "a"), []byte("healed")); err != nil {
		t.Fatal(err)
	}
}

func TestMemListen(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	n := NewNetwork()
	a, b := n.NewTransport("a", "node-a"), n.NewTransport("b", "node-b")
	t.Cleanup(func() { _ = a.Close(); _ = b.Close() })
	l := listen(t, ctx, a, "")
	if got := l.Addr().String(); got != "a" {
		t.Errorf(`Listen("") at %q, want the host address "a"`, got)
	}
	if _, err := b.Listen(ctx, "a"); !errors.Is(err, ErrAddrInUse) {
		t.Errorf("second Listen at a = %v, want ErrAddrInUse", err)
	}
	serve(t, listen(t, ctx, a, "a:objects"), echo) // more addresses per host
	if err := roundTrip(dial(t, ctx, b, "a:objects"), []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Dial(ctx, "nowhere"); !errors.Is(err, ErrUnreachable) {
		t.Errorf("Dial to an unknown address = %v, want ErrUnreachable", err)
	}

	// A dial nobody accepted yet is closed with its listener.
	l2 := listen(t, ctx, b, "")
	c := dial(t, ctx, a, "b")
	_ = l2.Close()
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("Read on a never-accepted conn after listener Close = %v, want io.EOF", err)
	}
}

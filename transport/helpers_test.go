package transport

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// testTimeout bounds every test; nothing waits on a clock below it, they
// wait on events.
const testTimeout = 60 * time.Second

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// serve accepts conns on l and runs handle for each until l is closed. The
// cleanup closes l and waits for the accept loop and every handler; handlers
// must return once their conn is closed.
func serve(t *testing.T, l net.Listener, handle func(net.Conn)) {
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				if !errors.Is(err, ErrClosed) || !errors.Is(err, net.ErrClosed) {
					t.Errorf("Accept: %v, want ErrClosed", err)
				}
				return
			}
			wg.Go(func() {
				defer c.Close()
				handle(c)
			})
		}
	})
	t.Cleanup(func() {
		_ = l.Close()
		wg.Wait()
	})
}

func echo(c net.Conn) { _, _ = io.Copy(c, c) }

// roundTrip writes msg and reads it back from an echo server, concurrently
// (net.Pipe does not buffer).
func roundTrip(c net.Conn, msg []byte) error {
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(msg)
		errc <- err
	}()
	got := make([]byte, len(msg))
	_, rerr := io.ReadFull(c, got)
	if werr := <-errc; werr != nil {
		return werr
	}
	if rerr != nil {
		return rerr
	}
	if !bytes.Equal(got, msg) {
		return errors.New("echo mismatch")
	}
	return nil
}

// listen is Listen that fails the test on error and closes at cleanup.
func listen(t *testing.T, ctx context.Context, tr Transport, addr string) Listener {
	t.Helper()
	l, err := tr.Listen(ctx, addr)
	if err != nil {
		t.Fatalf("Listen(%q): %v", addr, err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func dial(t *testing.T, ctx context.Context, tr Transport, addr string) net.Conn {
	t.Helper()
	c, err := tr.Dial(ctx, addr)
	if err != nil {
		t.Fatalf("Dial(%q): %v", addr, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// dialFails checks that a dial to addr does not reach a live listener: Dial
// fails with ErrUnreachable, or (QUIC, while a GOAWAY is still in flight) the
// stream it returns is refused on first use. It must never hang.
func dialFails(t *testing.T, ctx context.Context, tr Transport, addr string) {
	t.Helper()
	c, err := tr.Dial(ctx, addr)
	if err != nil {
		if !errors.Is(err, ErrUnreachable) {
			t.Fatalf("Dial(%q) = %v, want ErrUnreachable", addr, err)
		}
		return
	}
	defer c.Close()
	if deadline, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(deadline)
	}
	if err := roundTrip(c, []byte("anyone?")); err == nil {
		t.Fatalf("Dial(%q) reached a closed listener", addr)
	}
}

package jobs

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestCutChunk(t *testing.T) {
	long := strings.Repeat("a", MaxChunk-5) + "\n" + strings.Repeat("b", 100)
	euro := "€" // 3 bytes
	for _, tc := range []struct {
		name      string
		in        string
		final     bool
		chunk     string
		restBytes int
	}{
		{"all of a short buffer", "one\ntwo", false, "one\ntwo", 0},
		{"cut after the last newline in the window", long, false, long[:MaxChunk-4], 100},
		{"an incomplete sequence waits", "x" + euro[:2], false, "x", 2},
		{"only an incomplete sequence", euro[:2], false, "", 2},
		{"final sends it replaced", "x" + euro[:2], true, "x\uFFFD", 0},
		{"a complete sequence goes", "x" + euro, false, "x" + euro, 0},
		{"invalid bytes become U+FFFD", "a\xffb", false, "a\uFFFDb", 0},
		{"no newline: cut at a rune start", strings.Repeat("a", MaxChunk-1) + euro, false, strings.Repeat("a", MaxChunk-1), 3},
	} {
		c, rest := cutChunk([]byte(tc.in), tc.final)
		if c != tc.chunk || len(rest) != tc.restBytes {
			t.Errorf("%s: chunk %d bytes %q.., rest %d; want %d bytes, rest %d", tc.name, len(c), trunc(c), len(rest), len(tc.chunk), tc.restBytes)
		}
		if !utf8.ValidString(c) || len(c) > MaxChunk+3 {
			t.Errorf("%s: chunk not valid text or too long", tc.name)
		}
	}
}

func trunc(s string) string {
	if len(s) > 20 {
		return s[:20]
	}
	return s
}

func TestLastLines(t *testing.T) {
	p := filepath.Join(t.TempDir(), "log")
	os.WriteFile(p, []byte("1\n2\n3\n4\n"), 0o644)
	if got := lastLines(p, 2, 100); got != "3\n4" {
		t.Fatalf("%q", got)
	}
	if got := lastLines(p, 10, 3); got != "3\n4" {
		t.Fatalf("%q (at most 3 characters)", got)
	}
	os.WriteFile(p, nil, 0o644)
	if got := lastLines(p, 10, 100); got != "" {
		t.Fatalf("%q", got)
	}
}

func TestTailStreamsALiveLogAndEndsWithTheJob(t *testing.T) {
	m, _ := testManager(t, func(c *Config) { c.Clock, c.PollInterval = realClock{}, 5*time.Millisecond })
	gate := fifo(t)
	sid, _ := m.Submit(ctx, Request{Entrypoint: "echo one; cat " + gate + "; echo two"})
	chunks := make(chan string, 100)
	done := make(chan error, 1)
	go func() {
		done <- m.Tail(ctx, sid, func(c string) error { chunks <- c; return nil })
	}()
	var got strings.Builder
	deadline := time.After(30 * time.Second)
	for !strings.Contains(got.String(), "one\n") {
		select {
		case c := <-chunks:
			got.WriteString(c)
		case err := <-done:
			t.Fatalf("tail ended early (%v) with %q", err, got.String())
		case <-deadline:
			t.Fatalf("no 'one' in %q", got.String())
		}
	}
	writeFifo(t, gate, "middle\n")
	for {
		select {
		case c := <-chunks:
			got.WriteString(c)
			continue
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-deadline:
			t.Fatal("tail did not end with the job")
		}
		break
	}
	for len(chunks) > 0 {
		got.WriteString(<-chunks)
	}
	logs, _ := m.Logs(ctx, sid)
	if got.String() != logs || !strings.HasSuffix(logs, "one\nmiddle\ntwo\n") {
		t.Fatalf("tail %q, log %q", got.String(), logs)
	}
	// A finished job's tail sends the whole log and ends.
	var again strings.Builder
	if err := m.Tail(ctx, sid, func(c string) error { again.WriteString(c); return nil }); err != nil || again.String() != logs {
		t.Fatalf("second tail %q %v", again.String(), err)
	}
}

func TestTailOfAJobThatNeverRanSendsNothing(t *testing.T) {
	m, _ := testManager(t, nil)
	sid, _ := m.Submit(ctx, Request{Entrypoint: "true", RuntimeEnv: map[string]any{"pip": []any{"x"}}})
	wait(t, m, sid)
	n := 0
	if err := m.Tail(ctx, sid, func(string) error { n++; return nil }); err != nil || n != 0 {
		t.Fatalf("%d chunks, %v", n, err)
	}
}

func TestProcNetAddrAndTables(t *testing.T) {
	v4, v6 := procNetAddr(&net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 8080})
	if v4 != "0100007F:1F90" || v6 != "0000000000000000FFFF00000100007F:1F90" {
		t.Fatalf("%s %s", v4, v6)
	}
	if v4, v6 := procNetAddr(&net.TCPAddr{IP: net.ParseIP("::1"), Port: 1}); v4 != "" || v6 != "00000000000000000000000001000000:0001" {
		t.Fatalf("%s %s", v4, v6)
	}
	table := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:A36B 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 19244 1 0000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:2711 01 00000000:00000000 00:00000000 00000000  1000        0 56704 2 0000 100 0 0 10 0`
	if n, ok := socketInode(table, "0100007F:1F90"); !ok || n != 56704 {
		t.Fatalf("%d %v", n, ok)
	}
	if _, ok := socketInode(table, "0100007F:0001"); ok {
		t.Fatal("found a socket that is not there")
	}
	for _, tc := range []struct {
		stat  string
		pgid  int
		state string
		ok    bool
	}{
		{"123 (python3) S 1 120 120 0 -1", 120, "S", true},
		{"7 (a (b) c) Z 1 99 99", 99, "Z", true},
		{"garbage", 0, "", false},
	} {
		g, st, ok := statGroupState(tc.stat)
		if g != tc.pgid || st != tc.state || ok != tc.ok {
			t.Errorf("%q: %d %q %v", tc.stat, g, st, ok)
		}
	}
}

func TestOriginOfFindsTheEntrypointOwningAConnection(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("needs python3 for a client process")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	m, _ := testManager(t, nil)
	// The connection comes from a child of the entrypoint's shell.
	script := python + ` -c "import socket,os; s=socket.create_connection(('127.0.0.1',` + port + `)); s.sendall(str(os.getpid()).encode()); s.recv(1)"; true`
	sid, _ := m.Submit(ctx, Request{Entrypoint: script, RuntimeEnv: map[string]any{"env_vars": map[string]any{"A": "1"}}, Account: "alice"})
	conn, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	buf := make([]byte, 32)
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	n, _ := conn.Read(buf)
	pid, _ := strconv.Atoi(string(buf[:n]))
	waitStatus(t, m, sid, Running)
	o, ok := m.OriginOf(conn.RemoteAddr())
	if !ok || o.SubmissionID != sid || o.PID != pid || o.Account != "alice" || o.RuntimeEnv["env_vars"].(map[string]any)["A"] != "1" {
		t.Fatalf("origin %+v %v (client pid %d)", o, ok, pid)
	}
	if _, ok := m.OriginOf(&net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 1}); ok {
		t.Fatal("an unknown peer has an origin")
	}
	conn.Write([]byte("x"))
	wait(t, m, sid)
	if d, _ := m.Job(context.Background(), sid); d.Status != Succeeded {
		t.Fatalf("%+v", d)
	}
}

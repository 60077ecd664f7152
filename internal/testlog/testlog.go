// Package testlog routes a component's slog output to its test's log.
package testlog

import (
	"bytes"
	"log/slog"
	"sync"
	"testing"
)

// New returns a debug-level logger that writes through t.Log until the test
// ends; later lines (from goroutines that outlive it) are dropped rather
// than reported against a finished test.
func New(t testing.TB) *slog.Logger {
	w := &writer{t: t}
	t.Cleanup(w.stop) // registered first, so it runs last
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type writer struct {
	t    testing.TB
	mu   sync.Mutex
	done bool
}

func (w *writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(string(bytes.TrimRight(p, "\n")))
	}
	return len(p), nil
}

func (w *writer) stop() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}

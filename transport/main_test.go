package transport

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestMain fails the package if goroutines of this package, quic-go or grpc
// outlive the tests: every Close here is supposed to wait for its own.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if leaked := waitForLeaks(10 * time.Second); leaked != "" {
			fmt.Fprintf(os.Stderr, "leaked goroutines:\n%s\n", leaked)
			code = 1
		}
	}
	os.Exit(code)
}

// waitForLeaks returns the stacks of suspicious goroutines still running
// after timeout, or "" once there are none. Some quic-go and grpc goroutines
// finish just after the Close that stopped them returns, hence the wait.
func waitForLeaks(timeout time.Duration) string {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		leaked := suspiciousGoroutines()
		if leaked == "" || time.Now().After(deadline) {
			return leaked
		}
		<-tick.C
	}
}

func suspiciousGoroutines() string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "waitForLeaks") {
			continue
		}
		if strings.Contains(g, "quic-go/quic-go") || strings.Contains(g, "gray/transport.") ||
			strings.Contains(g, "google.golang.org/grpc") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}

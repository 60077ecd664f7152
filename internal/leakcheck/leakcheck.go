// Package leakcheck fails a test package whose goroutines outlive its tests.
package leakcheck

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// Wait is how long Main lets goroutines finish after the tests: some of
// quic-go's and grpc's end just after the Close that stopped them returns.
const Wait = 10 * time.Second

// Main runs the tests and, when they pass, fails the package if goroutines
// whose stacks mention any of markers (e.g. "quic-go/quic-go") are still
// running Wait later. Call it from TestMain.
func Main(m *testing.M, markers ...string) {
	code := m.Run()
	if code == 0 {
		if leaked := Leaked(Wait, markers...); leaked != "" {
			fmt.Fprintf(os.Stderr, "leaked goroutines:\n%s\n", leaked)
			code = 1
		}
	}
	os.Exit(code)
}

// Leaked returns the stacks of goroutines matching markers still running
// after timeout, or "" as soon as there are none.
func Leaked(timeout time.Duration, markers ...string) string {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		leaked := Matching(markers...)
		if leaked == "" || time.Now().After(deadline) {
			return leaked
		}
		<-tick.C
	}
}

// Matching returns the stacks of goroutines, other than the caller's, that
// mention any of markers.
func Matching(markers ...string) string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []string
	for i, g := range strings.Split(string(buf), "\n\n") {
		if i == 0 { // the caller
			continue
		}
		for _, p := range markers {
			if strings.Contains(g, p) {
				out = append(out, g)
				break
			}
		}
	}
	return strings.Join(out, "\n\n")
}

package cli

import (
	"fmt"
	"os"
	"runtime/pprof"
	"strings"
)

// startCPUProfile writes a Go CPU profile of this process to the file named
// by $GRAY_CPUPROFILE (a "%d" in the name becomes the pid) until the
// returned stop is called. It does nothing when the variable is unset.
func startCPUProfile() (stop func(), err error) {
	name := os.Getenv("GRAY_CPUPROFILE")
	if name == "" {
		return func() {}, nil
	}
	if strings.Contains(name, "%d") {
		name = fmt.Sprintf(name, os.Getpid())
	}
	f, err := os.Create(name)
	if err != nil {
		return nil, fmt.Errorf("GRAY_CPUPROFILE: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("GRAY_CPUPROFILE: %w", err)
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

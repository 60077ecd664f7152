package provider

import (
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
)

// RayletMarkerArgv0 is the name of the marker process a provider runs
// beside its native raylet. A stock driver started on a machine finds the
// local raylets by scanning for processes whose argv[0] contains "raylet"
// and reading their --node_id= argument (the head re-executes itself under
// such a name; a provider learns its node id only after it joined, so it
// starts this child instead). The child does nothing but wait for its
// parent to go.
const RayletMarkerArgv0 = "gray-raylet-marker"

// IsRayletMarker tells whether this process is a raylet marker.
func IsRayletMarker() bool { return filepath.Base(os.Args[0]) == RayletMarkerArgv0 }

// RunRayletMarker is the marker's whole life: it returns when its parent
// dies: its stdin, a pipe whose only writer is the parent, reaches EOF
// (also when the parent is killed with SIGKILL). No PR_SET_PDEATHSIG: it
// fires when the forking OS thread exits, which a Go parent does not
// control.
func RunRayletMarker() int {
	_, _ = io.Copy(io.Discard, os.Stdin)
	return 0
}

// startRayletMarker starts the marker for the native node id on ip. Stop
// it with stop (the provider's shutdown); it dies with the provider too.
func startRayletMarker(nodeID []byte, ip string) (stop func(), err error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("raylet marker: %w", err)
	}
	cmd := &exec.Cmd{
		Path: exe,
		Args: []string{RayletMarkerArgv0, "--node_id=" + hex.EncodeToString(nodeID), "--node_ip_address=" + ip},
	}
	w, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("raylet marker: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("raylet marker: %w", err)
	}
	go func() { _ = cmd.Wait() }()
	return func() { _ = w.Close() }, nil
}

package cli

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// rayletArgv0 is the name the head runs under when it hosts a native Ray
// node: a stock driver finds its local raylet by scanning for processes
// whose argv[0] contains "raylet" and reading their --node_id= argument.
const rayletArgv0 = "gray-raylet"

// nativeNodeID returns the native node id for this process. A head that
// serves native Ray must carry it on its command line, so the first time
// through it re-executes itself as gray-raylet with --node_id=HEX; that
// returns only on error. The pid stays the same.
func nativeNodeID(o startFlags) ([]byte, error) {
	if strings.Contains(filepath.Base(os.Args[0]), "raylet") && o.nodeIDHex != "" {
		id, err := hex.DecodeString(o.nodeIDHex)
		if err != nil || len(id) != 28 {
			return nil, fmt.Errorf("--node_id must be 56 hex digits")
		}
		return id, nil
	}
	id := make([]byte, 28)
	if _, err := rand.Read(id); err != nil {
		return nil, err
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("native mode: cannot find my own binary: %w", err)
	}
	args := []string{rayletArgv0}
	for _, a := range os.Args[1:] {
		if !strings.HasPrefix(a, "--node_id") {
			args = append(args, a)
		}
	}
	args = append(args, "--node_id="+hex.EncodeToString(id))
	return nil, fmt.Errorf("native mode: re-exec as %s: %w", rayletArgv0, syscall.Exec(exe, args, os.Environ()))
}

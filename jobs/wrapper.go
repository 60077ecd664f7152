package jobs

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
)

// WrapperCommand is the hidden gray subcommand that runs an entrypoint
// under RunWrapper.
const WrapperCommand = "job-entrypoint"

// RunWrapper runs `SHELL -c ENTRYPOINT` (args: STATUSFILE SHELL
// ENTRYPOINT) in its own process group, waits for it and writes its exit
// code (minus the signal that killed it) to STATUSFILE, so that a head
// that is not its parent (one restarted after the head that started it
// was killed) still learns how it ended. The wrapper outlives the stop
// signals its group gets (they are for the entrypoint); SIGKILL ends it.
// It returns the wrapper's own exit code.
func RunWrapper(args []string) int {
	if len(args) != 3 {
		fmt.Fprintf(os.Stderr, "usage: gray %s STATUSFILE SHELL ENTRYPOINT\n", WrapperCommand)
		return 2
	}
	statusPath, shell, entrypoint := args[0], args[1], args[2]
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP) // caught, not ignored: the child gets the defaults
	go func() {
		for range sigs {
		}
	}()
	cmd := exec.Command(shell, "-c", entrypoint)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	code := 127
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "Failed to start the entrypoint command: %v\n", err)
	} else {
		_ = cmd.Wait()
		code = waitCode(cmd.ProcessState)
	}
	if err := writeStatus(statusPath, code); err != nil {
		fmt.Fprintf(os.Stderr, "gray: cannot record the entrypoint's exit code: %v\n", err)
	}
	if code < 0 {
		return 128 - code
	}
	return code
}

// writeStatus writes code to path atomically (a reader sees all or none).
func writeStatus(path string, code int) error {
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(code)+"\n"), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

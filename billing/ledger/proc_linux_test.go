package ledger

import (
	"os/exec"
	"syscall"
)

// setPdeathsig kills the child if the test binary dies without cleaning up
// (a test timeout, a crash).
func setPdeathsig(cmd *exec.Cmd) { cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} }

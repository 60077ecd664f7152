package testredis

import (
	"os/exec"
	"syscall"
)

// setPdeathsig kills the server if the test binary dies without stopping it.
func setPdeathsig(cmd *exec.Cmd) { cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} }

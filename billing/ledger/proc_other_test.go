//go:build !linux

package ledger

import "os/exec"

func setPdeathsig(*exec.Cmd) {}

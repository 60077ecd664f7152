package jobs

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
)

// process is a running entrypoint: `sh -c ENTRYPOINT` as the leader of its
// own session and process group, so that stop reaches everything it
// started.
type process struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // cmd.Wait's, once done is closed
}

func startProcess(shell, entrypoint, dir string, env []string, log *os.File) (*process, error) {
	cmd := exec.Command(shell, "-c", entrypoint)
	cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = dir, env, log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *process) pid() int { return p.cmd.Process.Pid }

// exitCode is the entrypoint's exit status once done: its code, or minus
// the signal that ended it (as Python's Popen.returncode reads).
func (p *process) exitCode() int {
	st := p.cmd.ProcessState
	if st == nil {
		return -1
	}
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return -int(ws.Signal())
	}
	return st.ExitCode()
}

// signalGroup sends sig to every process of the entrypoint's group; a
// group with none left is not an error.
func (p *process) signalGroup(sig syscall.Signal) error {
	err := syscall.Kill(-p.pid(), sig)
	if err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal %v to process group %d: %w", sig, p.pid(), err)
	}
	return nil
}

// groupGone reports whether no process of the group is left (zombies
// not yet reaped do not count).
func (p *process) groupGone() bool {
	if errors.Is(syscall.Kill(-p.pid(), 0), syscall.ESRCH) {
		return true
	}
	return !groupHasLiving(p.pid())
}

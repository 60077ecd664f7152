package jobs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// process is a running entrypoint: `sh -c ENTRYPOINT` (under the exit
// status wrapper when one is configured) as the leader of its own session
// and process group, so that stop reaches everything it started and a
// kill of the head does not. Its output goes to the job's log file
// directly, never through the head. A process is either the head's child
// (cmd set) or one a restarted head adopted (watched through /proc).
type process struct {
	cmd        *exec.Cmd // nil when adopted
	leader     int
	startTime  uint64 // the leader's start time (/proc/PID/stat), 0 if unknown
	statusPath string // where the wrapper writes the exit code ("" without one)
	done       chan struct{}
}

// startProcess starts entrypoint; with a wrapper (argv prefix) the leader
// is `WRAPPER STATUSFILE SHELL ENTRYPOINT`, which writes the exit code to
// statusPath.
func startProcess(shell string, wrapper []string, statusPath, entrypoint, dir string, env []string, log *os.File) (*process, error) {
	var cmd *exec.Cmd
	if len(wrapper) > 0 {
		// The shell is found here, as without the wrapper: a missing
		// one is a start error, not the entrypoint's exit code.
		sh, err := exec.LookPath(shell)
		if err != nil {
			return nil, err
		}
		args := append(append([]string{}, wrapper[1:]...), statusPath, sh, entrypoint)
		cmd = exec.Command(wrapper[0], args...)
	} else {
		cmd = exec.Command(shell, "-c", entrypoint)
		statusPath = ""
	}
	cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = dir, env, log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // no Pdeathsig: it outlives the head
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &process{cmd: cmd, leader: cmd.Process.Pid, statusPath: statusPath, done: make(chan struct{})}
	p.startTime, _, _ = procStat(p.leader)
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// adoptProcess watches a leader the head did not start (a previous head
// run's), polling /proc every poll until it exits or ctx ends; ok is false
// when pid is no longer that process.
func adoptProcess(ctx context.Context, pid int, startTime uint64, statusPath string, after func(time.Duration) <-chan time.Time, poll time.Duration) (*process, bool) {
	if !sameProcess(pid, startTime) {
		return nil, false
	}
	p := &process{leader: pid, startTime: startTime, statusPath: statusPath, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for sameProcess(pid, startTime) {
			select {
			case <-ctx.Done():
				return
			case <-after(poll):
			}
		}
	}()
	return p, true
}

// sameProcess reports whether pid is alive (not a zombie) and started at
// startTime: a pid reused by another process does not count.
func sameProcess(pid int, startTime uint64) bool {
	if pid <= 0 || startTime == 0 {
		return false
	}
	st, state, err := procStat(pid)
	return err == nil && st == startTime && state != "Z" && state != "X"
}

// procStat reads a process's start time (clock ticks since boot) and
// state from /proc/PID/stat.
func procStat(pid int) (startTime uint64, state string, err error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, "", err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, "", fmt.Errorf("jobs: /proc/%d/stat unreadable", pid)
	}
	f := strings.Fields(s[i+1:]) // from field 3 (state) on
	if len(f) < 20 {
		return 0, "", fmt.Errorf("jobs: /proc/%d/stat too short", pid)
	}
	startTime, err = strconv.ParseUint(f[19], 10, 64) // field 22
	return startTime, f[0], err
}

func (p *process) pid() int { return p.leader }

// exitCode is the entrypoint's exit status once done: its code, or minus
// the signal that ended it (as Python's Popen.returncode reads). The
// wrapper's status file says it; without one, the head's wait does. ok is
// false when neither can tell (an adopted entrypoint whose wrapper was
// killed).
func (p *process) exitCode() (code int, ok bool) {
	if p.statusPath != "" {
		if b, err := os.ReadFile(p.statusPath); err == nil {
			if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				return n, true
			}
		}
	}
	if p.cmd == nil || p.cmd.ProcessState == nil {
		return 0, false
	}
	return waitCode(p.cmd.ProcessState), true
}

func waitCode(st *os.ProcessState) int {
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

// awaitGroupGone waits up to limit for a group sent SIGKILL to be gone
// (the kernel ends its processes after the signal is sent).
func (p *process) awaitGroupGone(limit time.Duration) {
	for end := time.Now().Add(limit); !p.groupGone() && time.Now().Before(end); {
		time.Sleep(5 * time.Millisecond)
	}
}

// findWrapper looks for the wrapper process whose status file is
// statusPath (its command line names WrapperCommand then statusPath,
// unique per submission): the entrypoint of a job whose head was killed
// after starting it and before recording it RUNNING. ok is false when no
// such live process exists.
func findWrapper(statusPath string) (pid int, startTime uint64, ok bool) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, 0, false
	}
	want := []byte("\x00" + WrapperCommand + "\x00" + statusPath + "\x00")
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil || n <= 0 {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !strings.Contains(string(b), string(want)) {
			continue
		}
		st, state, err := procStat(n)
		if err != nil || st == 0 || state == "Z" || state == "X" {
			continue
		}
		return n, st, true
	}
	return 0, 0, false
}

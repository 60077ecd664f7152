package jobs

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

// supervise takes a job from PENDING to a terminal status: runtime_env
// set-up, entrypoint resources, the entrypoint itself, stop.
func (m *Manager) supervise(sid string, lj *liveJob, req Request) {
	defer m.wg.Done()
	defer func() {
		m.mu.Lock()
		delete(m.live, sid)
		m.mu.Unlock()
	}()
	rec, err := m.store.Get(m.ctx, sid)
	if err != nil {
		m.log.Warn("job record lost", "submission_id", sid, "err", err)
		return
	}
	fail := func(et ErrorType, msg string) {
		appendLog(rec.LogPath, msg+"\n")
		m.finish(sid, Failed, et, msg, nil)
	}
	env, err := parseRuntimeEnv(req.RuntimeEnv)
	if err != nil {
		fail(RuntimeEnvSetupFailure, "runtime_env setup failed: "+err.Error())
		return
	}
	dir := filepath.Join(m.cfg.JobsDir, sid)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		fail(RuntimeEnvSetupFailure, "runtime_env setup failed: "+err.Error())
		return
	}
	src := func(ctx context.Context, uri string) ([]byte, error) { return m.cfg.Packages(ctx, rec.Account, uri) }
	cwd, pypath, err := setUp(m.ctx, src, env, dir)
	if err == nil {
		err = m.buildPython(m.ctx, &env, rec.LogPath)
	}
	if err != nil {
		fail(RuntimeEnvSetupFailure, "runtime_env setup failed: "+err.Error())
		return
	}
	if need := req.resources(); len(need) > 0 {
		held, msg := m.holdResources(sid, lj, need)
		if msg != "" {
			fail(Unschedulable, msg)
			return
		}
		if !held {
			m.stopped(sid, lj)
			return
		}
		lj.release = func() { m.cfg.Resources.Release(holdKey(sid)) }
	}
	if lj.stopRequested() || m.ctx.Err() != nil {
		m.stopped(sid, lj)
		return
	}
	m.run(sid, lj, rec, env, cwd, pypath)
}

// stopped records STOPPED for a job that ended before its entrypoint ran
// (or FAILED when the head is shutting down instead).
func (m *Manager) stopped(sid string, lj *liveJob) {
	if lj.stopRequested() {
		m.finish(sid, Stopped, "", "", nil)
		return
	}
	m.finish(sid, Failed, SupervisorDied, "Job supervisor actor died: the head shut down before the job ran.", nil)
}

func holdKey(sid string) string { return "_gray_job_entrypoint_" + sid }

// holdResources waits until the head holds need for the entrypoint. It
// returns a failure message when need can never fit, and held=false when
// the job is stopped (or the head closes) first.
func (m *Manager) holdResources(sid string, lj *liveJob, need map[string]float64) (held bool, failure string) {
	res := m.cfg.Resources
	if res == nil {
		return false, fmt.Sprintf("Job supervisor actor could not be scheduled: this head holds no entrypoint resources (asked for %s).", formatResources(need))
	}
	total := res.Total()
	for k, v := range need {
		if total[k] < v-1e-9 {
			return false, fmt.Sprintf("Job supervisor actor could not be scheduled: the entrypoint asks for %s, but the head node has %s in all.",
				formatResources(need), formatResources(total))
		}
	}
	for !res.TryHold(holdKey(sid), need) {
		select {
		case <-lj.stop:
			return false, ""
		case <-m.ctx.Done():
			return false, ""
		case <-m.clock.After(m.cfg.PollInterval):
		}
	}
	return true, ""
}

func formatResources(r map[string]float64) string {
	keys := make([]string, 0, len(r))
	for k := range r {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s: %g", k, r[k])
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// run starts the entrypoint and waits for it to exit or be stopped.
func (m *Manager) run(sid string, lj *liveJob, rec Record, env jobEnv, cwd string, pypath []string) {
	log, err := os.OpenFile(rec.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		m.finish(sid, Failed, CommandStartError, fmt.Sprintf("cannot open the job log: %v", err), nil)
		return
	}
	defer log.Close()
	fmt.Fprintf(log, "Running entrypoint for job %s: %s\n", sid, rec.Entrypoint)
	addrs := m.cfg.Addresses()
	penv := m.entrypointEnv(rec, env, pypath, addrs)
	if m.cfg.Credentials != nil {
		cred, id, err := m.cfg.Credentials(m.ctx, rec.Account, sid)
		if err != nil {
			msg := fmt.Sprintf("Failed to give the entrypoint its credentials: %v", err)
			fmt.Fprintln(log, msg)
			m.finish(sid, Failed, CommandStartError, msg, nil)
			return
		}
		rec.CredentialID = id
		if _, err := m.update(sid, func(r *Record) { r.CredentialID = id }); err != nil {
			m.log.Warn("job record lost", "submission_id", sid, "err", err)
		}
		penv = append(penv, cred...)
	}
	statusPath := filepath.Join(m.cfg.JobsDir, sid+".exit")
	_ = os.Remove(statusPath)
	if len(m.cfg.Wrapper) > 0 {
		// Recorded before the start: a head killed between the start and
		// the RUNNING record leaves a restarted head the means to find
		// the entrypoint (by its wrapper's command line) and adopt it.
		if _, err := m.update(sid, func(r *Record) { r.StatusPath = statusPath }); err != nil {
			m.log.Warn("job record lost", "submission_id", sid, "err", err)
		}
	}
	p, err := startProcess(m.cfg.Shell, m.cfg.Wrapper, statusPath, rec.Entrypoint, cwd, penv, log)
	if err != nil {
		msg := fmt.Sprintf("Failed to start the entrypoint command: %v", err)
		fmt.Fprintln(log, msg)
		m.releaseCredential(rec)
		m.finish(sid, Failed, CommandStartError, msg, nil)
		return
	}
	if _, err := m.update(sid, func(r *Record) {
		r.Status, r.Message, r.DriverPID = Running, "", p.pid()
		r.DriverStartTime, r.StatusPath = p.startTime, p.statusPath
		r.DriverNodeID, r.DriverAgentHTTPAddress = addrs.NodeID, addrs.APIServer
	}); err != nil {
		m.log.Warn("job record lost", "submission_id", sid, "err", err)
	}
	m.log.Info("job running", "submission_id", sid, "pid", p.pid(), "cwd", cwd)
	m.watch(sid, lj, rec, p)
}

// watch waits for a running entrypoint (started by this head or adopted)
// to exit or be stopped, and records how it ended.
func (m *Manager) watch(sid string, lj *liveJob, rec Record, p *process) {
	select {
	case <-p.done:
	case <-lj.stop:
		m.stopProcess(p)
		m.releaseCredential(rec)
		m.finish(sid, Stopped, "", "", nil)
		return
	case <-m.ctx.Done():
		_ = p.signalGroup(syscall.SIGKILL)
		<-p.done
		p.awaitGroupGone(time.Second)
		m.releaseCredential(rec)
		m.finish(sid, Failed, SupervisorDied, "Job supervisor actor died: the head shut down while the job ran.", nil)
		return
	}
	m.releaseCredential(rec)
	if lj.stopRequested() {
		m.finish(sid, Stopped, "", "", nil)
		return
	}
	code, ok := p.exitCode()
	if !ok {
		m.finish(sid, Failed, SupervisorDied, "Job supervisor actor died: the job's entrypoint ended while the head was down, and left no exit code.", nil)
		return
	}
	if code == 0 {
		m.finish(sid, Succeeded, "", "", &code)
		return
	}
	msg := fmt.Sprintf("Job entrypoint command failed with exit code %d. No logs available.", code)
	if tail := lastLines(rec.LogPath, 10, 20000); tail != "" {
		msg = fmt.Sprintf("Job entrypoint command failed with exit code %d, last available logs (truncated to 20,000 chars):\n%s", code, tail)
	}
	m.finish(sid, Failed, CommandError, msg, &code)
}

// stopProcess sends the stop signal to the entrypoint's group, then
// SIGKILL once the grace is over unless the whole group is gone by then
// (it is looked at every poll interval once the leader has exited).
func (m *Manager) stopProcess(p *process) {
	if err := p.signalGroup(m.cfg.StopSignal); err != nil {
		m.log.Warn("job stop", "err", err)
	}
	grace := m.clock.After(m.cfg.StopWait)
	done := p.done
	var poll <-chan time.Time
wait:
	for {
		select {
		case <-done:
			done = nil // the leader is gone; others of its group may linger
		case <-poll:
		case <-grace:
			break wait
		case <-m.ctx.Done():
			break wait
		}
		if p.groupGone() {
			return
		}
		poll = m.clock.After(m.cfg.PollInterval)
	}
	if err := p.signalGroup(syscall.SIGKILL); err != nil {
		m.log.Warn("job stop", "err", err)
	}
	<-p.done
}

// removedEnv are variables of the head's environment an entrypoint must
// not inherit (the ones Ray drops from a driver's, and the addresses gray
// sets itself).
var removedEnv = map[string]bool{
	"RAY_JOB_ID": true, "RAY_RAYLET_PID": true, "RAY_OVERRIDE_NODE_ID_FOR_TESTING": true,
	"RAY_ADDRESS": true, "RAY_API_SERVER_ADDRESS": true, "RAY_RUNTIME_ENV": true,
	"RAY_JOB_CONFIG_JSON_ENV_VAR": true,
	// The head's own credentials never reach a submitter's entrypoint.
	"RAY_AUTH_MODE": true, "RAY_AUTH_TOKEN": true, "RAY_AUTH_TOKEN_PATH": true,
}

// entrypointEnv is the entrypoint's environment: the head's, the
// runtime_env's env_vars, PYTHONPATH with the packages first, and the
// address of the pool. With native Ray the driver joins the native GCS
// and reads its job config (runtime_env, metadata with the submission
// id) from RAY_JOB_CONFIG_JSON_ENV_VAR, as stock Ray's drivers do. Without
// it the driver is a Ray Client, which ignores that variable (and
// RAY_RUNTIME_ENV too, in 2.60): the head tells its session by the
// connection's owner instead (OriginOf).
func (m *Manager) entrypointEnv(rec Record, env jobEnv, pypath []string, a Addresses) []string {
	vars := map[string]string{}
	var order []string
	set := func(k, v string) {
		if _, ok := vars[k]; !ok {
			order = append(order, k)
		}
		vars[k] = v
	}
	for _, kv := range m.cfg.BaseEnv {
		k, v, ok := strings.Cut(kv, "=")
		if ok && !removedEnv[k] {
			set(k, v)
		}
	}
	keys := make([]string, 0, len(env.envVars))
	for k := range env.envVars {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		set(k, env.envVars[k])
	}
	if len(pypath) > 0 {
		p := strings.Join(pypath, string(os.PathListSeparator))
		if old := vars["PYTHONPATH"]; old != "" {
			p += string(os.PathListSeparator) + old
		}
		set("PYTHONPATH", p)
	}
	python := m.cfg.Python
	if env.python != "" {
		python = env.python // the runtime_env's pip/uv environment
	}
	if dir := pythonDir(python); dir != "" {
		p := dir
		if old := vars["PATH"]; old != "" {
			p += string(os.PathListSeparator) + old
		}
		set("PATH", p)
	}
	set("PYTHONUNBUFFERED", "1")
	meta := map[string]string{"job_submission_id": rec.SubmissionID, "job_name": rec.SubmissionID}
	for k, v := range rec.Metadata {
		meta[k] = v
	}
	cfg, _ := json.Marshal(map[string]any{"runtime_env": orEmptyAny(rec.RuntimeEnv), "metadata": meta})
	set("RAY_JOB_CONFIG_JSON_ENV_VAR", string(cfg))
	if a.GCS != "" {
		set("RAY_ADDRESS", a.GCS)
	} else if a.Client != "" {
		set("RAY_ADDRESS", "ray://"+a.Client)
	}
	if a.APIServer != "" {
		set("RAY_API_SERVER_ADDRESS", a.APIServer)
	}
	out := make([]string, 0, len(order))
	for _, k := range order {
		out = append(out, k+"="+vars[k])
	}
	return out
}

// pythonDir is the directory of the pool's Python ("" if it is not
// found); a venv's python keeps its venv directory (no symlink is
// followed).
func pythonDir(python string) string {
	if python == "" {
		return ""
	}
	p, err := exec.LookPath(python)
	if err != nil {
		return ""
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return ""
	}
	return filepath.Dir(abs)
}

func appendLog(path, s string) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	_, _ = f.WriteString(s)
}

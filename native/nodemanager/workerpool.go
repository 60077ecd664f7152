package nodemanager

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	commonpb "github.com/gray-cluster/gray/proto/ray/commonpb"
	raypb "github.com/gray-cluster/gray/proto/ray/raypb"
)

// ErrNoPort is returned when the worker port range is exhausted.
var ErrNoPort = errors.New("nodemanager: no free worker port")

// nilJobHex is the job of a pooled worker that is not bound to a job yet.
const nilJobHex = "ffffffff"

type workerState int

const (
	wsStarting   workerState = iota // process started, not registered
	wsRegistered                    // registered on the socket, port not announced
	wsIdle                          // in the pool
	wsLeased                        // running a lease
	wsDriver                        // a driver
	wsDead
)

func (s workerState) String() string {
	return [...]string{"starting", "registered", "idle", "leased", "driver", "dead"}[s]
}

// worker is a core worker process (pooled worker or driver) known to the raylet.
type worker struct {
	id       WorkerID
	typ      int32
	pid      int
	jobHex   string     // nilJobHex while unbound
	env      runtimeEnv // what it was started with; it serves only leases with the same
	ranGPU   *bool      // nil until its first lease: then GPU work or CPU work only
	port     int32      // the port handed out at registration
	ip       string
	state    workerState
	client   *client   // unix connection once registered
	cmd      *exec.Cmd // nil for drivers
	launched time.Time
	idleFrom time.Time
	lease    *lease
	actorID  []byte // set while it hosts an actor
	detached bool   // the actor is detached

	blocked    bool
	blockedCPU []instAmount
	exiting    bool // told to exit (job finished, idle, ReturnWorkerLease worker_exiting)

	// driver only
	jobID      []byte
	jobConfig  *commonpb.JobConfig
	entrypoint string

	exitType   commonpb.WorkerExitType
	exitDetail string
	exitSet    bool

	gone     chan struct{} // closed when the process (or driver connection) is gone
	goneOnce sync.Once
}

func (w *worker) address(nodeID []byte) *commonpb.Address {
	return &commonpb.Address{NodeId: nodeID, IpAddress: w.ip, Port: w.port, WorkerId: append([]byte(nil), w.id[:]...)}
}

func (w *worker) grpcAddr() string {
	return net.JoinHostPort(w.ip, strconv.Itoa(int(w.port)))
}

func (w *worker) markGone() { w.goneOnce.Do(func() { close(w.gone) }) }

// kill kills the worker's process group (workers we started) or closes
// the connection (drivers).
func (w *worker) kill() {
	if w.cmd != nil && w.cmd.Process != nil {
		_ = syscall.Kill(-w.cmd.Process.Pid, syscall.SIGKILL)
		_ = w.cmd.Process.Kill()
	}
	if w.client != nil {
		w.client.close()
	}
}

func (w *worker) waitGone(d time.Duration) {
	if w.cmd == nil {
		return
	}
	select {
	case <-w.gone:
	case <-time.After(d):
	}
}

// allocPort picks a worker port: from the configured range (skipping ports
// in use and test-binding the candidate), or any free port.
func (r *Raylet) allocPortLocked() (int, error) {
	if r.cfg.MinWorkerPort == 0 && r.cfg.MaxWorkerPort == 0 {
		for i := 0; i < 16; i++ {
			l, err := net.Listen("tcp", "0.0.0.0:0")
			if err != nil {
				return 0, fmt.Errorf("%w: %v", ErrNoPort, err)
			}
			p := l.Addr().(*net.TCPAddr).Port
			l.Close()
			if !r.usedPorts[p] {
				r.usedPorts[p] = true
				return p, nil
			}
		}
		return 0, ErrNoPort
	}
	n := r.cfg.MaxWorkerPort - r.cfg.MinWorkerPort + 1
	for i := 0; i < n; i++ {
		p := r.nextPort
		r.nextPort++
		if r.nextPort > r.cfg.MaxWorkerPort {
			r.nextPort = r.cfg.MinWorkerPort
		}
		if r.usedPorts[p] {
			continue
		}
		l, err := net.Listen("tcp", "0.0.0.0:"+strconv.Itoa(p))
		if err != nil {
			continue
		}
		l.Close()
		r.usedPorts[p] = true
		return p, nil
	}
	return 0, ErrNoPort
}

func (r *Raylet) rayDir() (string, error) {
	r.mu.Lock()
	d := r.cfg.RayDir
	r.mu.Unlock()
	if d != "" {
		return d, nil
	}
	out, err := exec.Command(r.cfg.Python, "-c", "import os, ray; print(os.path.dirname(ray.__file__))").Output()
	if err != nil {
		return "", fmt.Errorf("nodemanager: locating ray with %s: %w", r.cfg.Python, err)
	}
	d = strings.TrimSpace(string(out))
	r.mu.Lock()
	r.cfg.RayDir = d
	r.mu.Unlock()
	return d, nil
}

// workerArgv is the command line of a pooled worker, in the stock order.
func (r *Raylet) workerArgv(rayDir string, id WorkerID, launched time.Time, env runtimeEnv) []string {
	c := r.cfg
	python, envHash := c.Python, env.hash
	if env.python != "" {
		python = env.python // the runtime_env's pip/uv environment, as Ray's py_executable
	}
	return []string{
		python, filepath.Join(rayDir, "_private", "workers", "default_worker.py"),
		"--node-ip-address=" + c.NodeIP,
		"--node-manager-port=" + strconv.Itoa(r.port),
		"--object-store-name=" + c.PlasmaSocket,
		"--raylet-name=" + c.RayletSocket,
		"--redis-address=None",
		"--metrics-agent-port=" + strconv.Itoa(c.MetricsAgentPort),
		"--logging-rotate-bytes=536870912",
		"--logging-rotate-backup-count=5",
		"--runtime-env-agent-port=" + strconv.Itoa(c.RuntimeEnvAgentPort),
		"--gcs-address=" + c.GCSAddress,
		"--session-name=" + c.SessionName,
		"--temp-dir=" + c.TempDir,
		"--webui=" + c.WebUI,
		"--cluster-id=" + c.ClusterIDHex,
		"--worker-id=" + id.String(),
		"--worker-launch-time-ms=" + strconv.FormatInt(launched.UnixMilli(), 10),
		"--node-id=" + r.nodeID.String(),
		"--runtime-env-hash=" + strconv.Itoa(int(envHash)),
	}
}

// startWorkerLocked launches one default_worker.py for jobHex (nilJobHex:
// a pooled, unbound worker). Called with r.mu held; the exec happens in
// a goroutine so the lock is not held across fork.
func (r *Raylet) startWorkerLocked(jobHex string, env runtimeEnv) *worker {
	var id WorkerID
	if _, err := randRead(id[:]); err != nil {
		r.log.Error("worker id", "err", err)
		return nil
	}
	w := &worker{id: id, typ: workerTypeWorker, jobHex: jobHex, env: env, ip: r.cfg.NodeIP, state: wsStarting,
		launched: time.Now(), gone: make(chan struct{})}
	r.byID[id] = w
	r.starting++
	if r.spawnHook != nil {
		r.goTracked(func() { r.spawnHook(w) })
		return w
	}
	r.goTracked(func() { r.execWorker(w) })
	return w
}

func (r *Raylet) execWorker(w *worker) {
	fail := func(err error) {
		w.markGone()
		r.log.Error("starting worker failed", "worker_id", w.id.String(), "err", err)
		r.workerGone(w, commonpb.WorkerExitType_SYSTEM_ERROR, "gray raylet could not start the worker: "+err.Error())
	}
	rayDir, err := r.rayDir()
	if err != nil {
		fail(err)
		return
	}
	argv := r.workerArgv(rayDir, w.id, w.launched, w.env)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(),
		"RAY_JOB_ID="+w.jobHex,
		"RAY_RAYLET_PID="+strconv.Itoa(os.Getpid()),
		"RAY_LD_PRELOAD_ON_WORKERS=0",
		"SPT_NOENV=1",
	)
	cmd.Env = append(cmd.Env, r.cfg.WorkerEnv...)
	cmd.Env = append(cmd.Env, w.env.vars...) // the runtime_env's env_vars win
	if pp, ok := workerPythonPath(w.env, append(os.Environ(), r.cfg.WorkerEnv...)); ok {
		cmd.Env = append(cmd.Env, "PYTHONPATH="+pp)
	}
	cmd.Dir = r.cfg.WorkerDir // "": the raylet's own working directory, as stock
	if w.env.cwd != "" {
		cmd.Dir = w.env.cwd // the runtime_env's working_dir
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// The 2.60 core worker redirects its own stdout/stderr into
	// logs/worker-<id>-<job>-<pid>.out/.err once it is up; what it prints
	// before that goes to one shared start-up log.
	if f, err := os.OpenFile(filepath.Join(r.cfg.SessionDir, "logs", "gray-raylet-worker-startup.log"),
		os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err == nil {
		cmd.Stdout, cmd.Stderr = f, f
		defer f.Close()
	}
	r.mu.Lock()
	if r.closed || w.state == wsDead {
		r.mu.Unlock()
		w.markGone()
		r.workerGone(w, commonpb.WorkerExitType_INTENDED_SYSTEM_EXIT, "raylet closed before the worker started")
		return
	}
	err = cmd.Start()
	pid, job := 0, w.jobHex
	if err == nil {
		w.cmd = cmd
		w.pid = cmd.Process.Pid
		pid = w.pid
	}
	r.mu.Unlock()
	if err != nil {
		fail(err)
		return
	}
	r.log.Debug("worker started", "worker_id", w.id.String(), "pid", pid, "job", job)
	werr := cmd.Wait()
	w.markGone()
	detail := "Worker process exited"
	if werr != nil {
		detail = "Worker unexpectedly exits: " + werr.Error()
	}
	r.workerGone(w, commonpb.WorkerExitType_SYSTEM_ERROR, detail)
}

// reapWorkers kills workers that never registered, and idle workers past
// the idle timeout beyond the prestart count.
func (r *Raylet) reapWorkers(now time.Time) {
	r.mu.Lock()
	var kill, exit []*worker
	var killPIDs []int
	idle := 0
	for _, w := range r.byID {
		switch w.state {
		case wsStarting, wsRegistered:
			if now.Sub(w.launched) > r.cfg.WorkerRegisterTimeout {
				kill = append(kill, w)
				killPIDs = append(killPIDs, w.pid)
				w.setExit(commonpb.WorkerExitType_SYSTEM_ERROR, "worker did not register with the raylet in time")
			}
		case wsIdle:
			idle++
		}
	}
	if excess := idle - r.cfg.NumPrestartWorkers; excess > 0 {
		for _, w := range r.byID {
			if excess == 0 {
				break
			}
			if w.state == wsIdle && !w.exiting && now.Sub(w.idleFrom) > r.cfg.IdleWorkerTimeout {
				w.exiting = true
				exit = append(exit, w)
				excess--
			}
		}
	}
	r.mu.Unlock()
	for i, w := range kill {
		r.log.Warn("worker did not register in time; killing it", "worker_id", w.id.String(), "pid", killPIDs[i])
		w.kill()
	}
	for _, w := range exit {
		r.exitWorker(w, false, "Worker exits because it was idle (it doesn't have objects it owns while no task or actor has been scheduled) for a long time.")
	}
}

func (w *worker) setExit(t commonpb.WorkerExitType, detail string) {
	if !w.exitSet {
		w.exitType, w.exitDetail, w.exitSet = t, detail, true
	}
}

// exitWorker asks a worker to exit (CoreWorkerService.Exit; force when its
// job finished, as the stock raylet does) and kills it if it is still
// there after the grace period.
func (r *Raylet) exitWorker(w *worker, force bool, detail string) {
	r.goTracked(func() {
		if w.port > 0 {
			if cw, err := r.workers.get(w.grpcAddr()); err == nil {
				ctx, cancel := context.WithTimeout(r.ctx, r.cfg.KillGrace)
				_, err := cw.Exit(ctx, &raypb.ExitRequest{ForceExit: force})
				cancel()
				if err != nil {
					r.log.Debug("Exit RPC failed", "worker_id", w.id.String(), "err", err)
				}
			}
		}
		select {
		case <-w.gone:
		case <-time.After(r.cfg.KillGrace):
			r.mu.Lock()
			w.setExit(commonpb.WorkerExitType_INTENDED_SYSTEM_EXIT, detail)
			r.mu.Unlock()
			w.kill()
		case <-r.ctx.Done():
		}
	})
}

// prestartLocked starts n pooled workers.
func (r *Raylet) prestartLocked(n int, jobHex string) {
	for i := 0; i < n; i++ {
		r.startWorkerLocked(jobHex, runtimeEnv{})
	}
}

func jobHexOf(b []byte) string {
	if len(b) == 0 {
		return nilJobHex
	}
	return hex.EncodeToString(b)
}

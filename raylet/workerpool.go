package raylet

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/rayerr"
	"github.com/gray-cluster/gray/sandbox"
	"github.com/gray-cluster/gray/sandbox/cgroup"
	"github.com/gray-cluster/gray/taskspec"
)

// Pool timing.
const (
	workerStartTimeout = 90 * time.Second
	defaultIdleTimeout = 2 * time.Minute
)

var errWorkerDied = errors.New("worker process died")

// pool starts, reuses, reaps and replaces Python worker processes.
type pool struct {
	r        *Raylet
	script   string
	sockPath string
	sockDir  string // a private directory made for the socket ("" = the session dir)
	ln       net.Listener

	mu      sync.Mutex
	seq     int
	idle    map[string][]*workerProc // by runtime env key
	all     map[string]*workerProc   // by worker id
	waiters map[string]chan *workerProc
	closed  bool
}

type workerProc struct {
	id     string
	envKey string
	cmd    *exec.Cmd
	pid    int

	pool      *pool
	conn      net.Conn
	dedicated bool // runs one actor; never pooled or replaced
	wmu       sync.Mutex
	loaded    map[ids.ObjectID]bool
	ready     chan struct{}
	dead      chan struct{}
	frames    chan *frame

	mu       sync.Mutex
	job      ids.JobID
	taskName string
	idleAt   time.Time

	// box is the worker's sandbox (nil with the sandbox off); limits what
	// its cgroup allows now (once limited); oom (set before dead closes) whether the OOM
	// killer killed it, overLimit whether it was killed for holding more
	// than a new limit.
	box       *sandbox.Proc
	limits    cgroup.Limits
	limited   bool // limits are applied
	oom       bool
	overLimit bool
}

type result struct {
	values    [][]byte
	contained [][]ids.ObjectID
	errBlob   []byte
	user      bool
	err       error // worker died
}

// maxSocketPath is the longest unix socket path (sun_path less its NUL).
const maxSocketPath = 107

func newPool(r *Raylet, script string) (*pool, error) {
	sock := filepath.Join(r.cfg.SessionDir, "raylet.sock")
	sockDir := ""
	if len(sock) > maxSocketPath {
		// A session dir too deep for a socket name (a long TMPDIR): the
		// socket goes to a short private directory instead.
		d, err := os.MkdirTemp("/tmp", "gray-raylet-")
		if err != nil {
			return nil, fmt.Errorf("raylet: socket dir: %w", err)
		}
		sockDir, sock = d, filepath.Join(d, "raylet.sock")
	}
	_ = os.Remove(sock)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		if sockDir != "" {
			_ = os.RemoveAll(sockDir)
		}
		return nil, fmt.Errorf("raylet: listen %s: %w", sock, err)
	}
	p := &pool{
		r: r, script: script, sockPath: sock, sockDir: sockDir, ln: ln,
		idle: map[string][]*workerProc{}, all: map[string]*workerProc{}, waiters: map[string]chan *workerProc{},
	}
	go p.acceptLoop()
	go p.reapLoop()
	return p, nil
}

func (p *pool) acceptLoop() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.handshake(c)
	}
}

func (p *pool) handshake(c net.Conn) {
	br := bufio.NewReaderSize(c, 1<<20)
	f, err := readFrame(br)
	if err != nil || f.str("t") != "ready" {
		c.Close()
		return
	}
	p.mu.Lock()
	w := p.all[f.str("worker_id")]
	p.mu.Unlock()
	if w == nil {
		c.Close()
		return
	}
	w.conn = c
	if w.box != nil {
		// The worker's own pid is its pid in its sandbox; tell it the one
		// the node reports (status, log prefixes, os.kill from outside).
		if pid := w.box.WorkerPID(); pid > 0 {
			w.mu.Lock()
			w.pid = pid
			w.mu.Unlock()
			_ = w.send(map[string]any{"t": "host_pid", "pid": pid}, nil)
		}
	}
	go w.readLoop(br)
	close(w.ready)
}

func (w *workerProc) readLoop(br *bufio.Reader) {
	for {
		f, err := readFrame(br)
		if err != nil {
			return
		}
		switch f.str("t") {
		case "rpc":
			go w.pool.r.handleRPC(w, f)
			continue
		case "refs":
			w.pool.r.handleRefs(w, f)
			continue
		}
		select {
		case w.frames <- f:
		case <-w.dead:
			return
		}
	}
}

// spawnDedicated starts a worker that will host one actor of job, on gpus.
func (p *pool) spawnDedicated(job ids.JobID, env taskspec.RuntimeEnv, gpus []int) (*workerProc, error) {
	return p.start(job, env, gpus, true)
}

// spawn starts a pooled worker process for job's work in env.
func (p *pool) spawn(job ids.JobID, env taskspec.RuntimeEnv, gpus []int) (*workerProc, error) {
	return p.start(job, env, gpus, false)
}

func (p *pool) start(job ids.JobID, env taskspec.RuntimeEnv, gpus []int, dedicated bool) (*workerProc, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, ErrClosed
	}
	p.seq++
	id := p.r.cfg.NodeID.Hex()[:8] + "-" + strconv.Itoa(os.Getpid()) + "-" + strconv.Itoa(p.seq)
	w := &workerProc{
		id: id, envKey: p.poolKey(job, env), loaded: map[ids.ObjectID]bool{}, dedicated: dedicated, pool: p,
		ready: make(chan struct{}), dead: make(chan struct{}), frames: make(chan *frame, 4),
	}
	p.all[id] = w
	p.mu.Unlock()

	python, envDir, err := p.r.interpreter(env)
	if err != nil {
		p.forget(w)
		return nil, fmt.Errorf("start worker: %w", err)
	}
	var cmd *exec.Cmd
	if p.r.sandbox != nil {
		box, err := p.sandboxed(w, env, python, envDir, gpus)
		if err != nil {
			p.forget(w)
			return nil, fmt.Errorf("start worker: %w", err)
		}
		w.box, cmd = box, box.Cmd
	} else {
		cmd = exec.Command(python, "-u", p.script,
			"--socket", p.sockPath, "--address", p.r.cfg.ClientAddress, "--worker-id", id)
	}
	cmd.Env = append(os.Environ(), "PYTHONUNBUFFERED=1", "GRAY_NODE_IP="+p.r.cfg.NodeIP,
		"RAY_CLIENT_RECONNECT_GRACE_PERIOD=30")
	if _, set := env.EnvVars[cudaVisible]; !set && p.r.cfg.Resources["GPU"] > 0 {
		// Tasks that asked for no GPU see none, as in Ray.
		cmd.Env = append(cmd.Env, cudaVisible+"=")
	}
	for k, v := range env.EnvVars {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	if env.WorkingDir != "" {
		cmd.Env = append(cmd.Env, "GRAY_WORKING_DIR="+env.WorkingDir)
	}
	if len(env.PyModules) > 0 {
		cmd.Env = append(cmd.Env, "GRAY_PY_MODULES="+strings.Join(env.PyModules, string(os.PathListSeparator)))
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	start := cmd.Start
	if w.box != nil {
		start = w.box.Start
	}
	if err := start(); err != nil {
		if w.box != nil && cmd.Process != nil {
			_ = cmd.Wait()
			w.box.Finish()
		}
		p.forget(w)
		return nil, fmt.Errorf("start worker: %w", err)
	}
	w.mu.Lock()
	w.cmd, w.pid = cmd, cmd.Process.Pid
	w.mu.Unlock()
	go p.pipeLogs(w, stdout, false)
	go p.pipeLogs(w, stderr, true)
	go func() {
		_ = cmd.Wait()
		if w.box != nil {
			oom := w.box.Finish()
			w.mu.Lock()
			w.oom = oom
			w.mu.Unlock()
		}
		close(w.dead)
		if w.conn != nil {
			w.conn.Close()
		}
		p.r.store.ReleaseAll(w.Holder())
		if p.r.cfg.OnHolderGone != nil {
			p.r.cfg.OnHolderGone(w.Holder())
		}
		p.onExit(w)
	}()
	return w, nil
}

func (p *pool) pipeLogs(w *workerProc, rd io.Reader, stderr bool) {
	sc := bufio.NewScanner(rd)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		w.mu.Lock()
		job, name, pid := w.job, w.taskName, w.pid
		w.mu.Unlock()
		if name == "" {
			p.r.log.Debug("worker output", "worker", w.id, "line", sc.Text())
			continue
		}
		line := fmt.Sprintf("(%s pid=%d) %s\n", name, pid, sc.Text())
		p.r.cfg.Logs(job, line, stderr)
	}
}

func (p *pool) forget(w *workerProc) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.all, w.id)
	list := p.idle[w.envKey]
	for i, x := range list {
		if x == w {
			p.idle[w.envKey] = append(list[:i], list[i+1:]...)
			break
		}
	}
}

func (p *pool) onExit(w *workerProc) {
	p.forget(w)
	p.mu.Lock()
	closed := p.closed
	need := !w.dedicated && w.envKey == "" && len(p.idle[""]) < p.r.cfg.PrestartWorkers
	p.mu.Unlock()
	if !closed && need {
		// Replace a crashed default worker so the pool stays warm.
		p.prestart(1)
	}
}

// prestart launches n default workers that join the idle list when ready.
func (p *pool) prestart(n int) {
	for i := 0; i < n; i++ {
		w, err := p.spawn(ids.JobID{}, taskspec.RuntimeEnv{}, nil)
		if err != nil {
			p.r.log.Warn("prestart worker failed", "err", err)
			return
		}
		go func() {
			if err := p.waitReady(context.Background(), w); err == nil {
				p.release(w)
			}
		}()
	}
}

func (p *pool) waitReady(ctx context.Context, w *workerProc) error {
	t := time.NewTimer(workerStartTimeout)
	defer t.Stop()
	select {
	case <-w.ready:
		return nil
	case <-w.dead:
		return errWorkerDied
	case <-t.C:
		w.kill()
		return fmt.Errorf("worker did not start within %s", workerStartTimeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// acquire returns an idle worker for job's work in env, starting one
// (on gpus) when none is idle.
func (p *pool) acquire(ctx context.Context, job ids.JobID, env taskspec.RuntimeEnv, gpus []int) (*workerProc, error) {
	key := p.poolKey(job, env)
	p.mu.Lock()
	for _, from := range p.candidates(key, env) {
		for len(p.idle[from]) > 0 {
			list := p.idle[from]
			w := list[len(list)-1]
			p.idle[from] = list[:len(list)-1]
			select {
			case <-w.dead:
				continue
			default:
			}
			refill := false
			if from != key {
				// An unbound prestarted worker now belongs to this job;
				// start another to keep the pool warm for the next one.
				w.envKey = key
				refill = !p.closed
			}
			p.mu.Unlock()
			if refill {
				p.prestart(1)
			}
			return w, nil
		}
	}
	p.mu.Unlock()
	w, err := p.spawn(job, env, gpus)
	if err != nil {
		return nil, err
	}
	if err := p.waitReady(ctx, w); err != nil {
		return nil, err
	}
	return w, nil
}

// candidates are the idle lists a worker for key may come from: its own,
// and with the sandbox on, for default-env work, the unbound prestarted one.
func (p *pool) candidates(key string, env taskspec.RuntimeEnv) []string {
	if k := env.Key(); key != k && k == "" {
		return []string{key, ""}
	}
	return []string{key}
}

// release returns a healthy worker to the idle list.
func (p *pool) release(w *workerProc) {
	w.mu.Lock()
	w.idleAt = time.Now()
	w.mu.Unlock()
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-w.dead:
		return
	default:
	}
	if p.closed {
		go w.kill()
		return
	}
	p.idle[w.envKey] = append(p.idle[w.envKey], w)
}

// discard drops a dead or killed worker.
func (p *pool) discard(w *workerProc) {
	w.kill()
	p.forget(w)
}

func (p *pool) reapLoop() {
	idle := p.r.cfg.IdleWorkerTimeout
	if idle <= 0 {
		idle = defaultIdleTimeout
	}
	t := time.NewTicker(min(15*time.Second, max(idle/2, 100*time.Millisecond)))
	defer t.Stop()
	for {
		select {
		case <-p.r.ctx.Done():
			return
		case <-t.C:
		}
		var victims []*workerProc
		p.mu.Lock()
		for key, list := range p.idle {
			keep := 0
			if key == "" {
				keep = p.r.cfg.PrestartWorkers
			}
			var rest []*workerProc
			for i, w := range list {
				w.mu.Lock()
				old := time.Since(w.idleAt) > idle
				w.mu.Unlock()
				if old && len(list)-len(victims) > keep && i < len(list)-keep {
					victims = append(victims, w)
					continue
				}
				rest = append(rest, w)
			}
			p.idle[key] = rest
		}
		p.mu.Unlock()
		for _, w := range victims {
			w.kill()
		}
	}
}

func (p *pool) close() {
	p.mu.Lock()
	p.closed = true
	var all []*workerProc
	for _, w := range p.all {
		all = append(all, w)
	}
	p.mu.Unlock()
	p.ln.Close()
	for _, w := range all {
		w.kill()
	}
	for _, w := range all {
		select {
		case <-w.dead:
		case <-time.After(5 * time.Second):
		}
	}
	_ = os.Remove(p.sockPath)
	if p.sockDir != "" {
		_ = os.RemoveAll(p.sockDir)
	}
}

// Holder is the key under which the worker's references are tracked.
func (w *workerProc) Holder() string { return WorkerHolder(w.id) }

// WorkerHolder is the reference holder key of a worker id.
func WorkerHolder(id string) string { return "worker:" + id }

func (w *workerProc) kill() {
	if w.cmd != nil && w.cmd.Process != nil {
		// The process group of the worker (or of its bwrap, whose
		// sandbox dies with it).
		_ = syscall.Kill(-w.cmd.Process.Pid, syscall.SIGKILL)
		_ = w.cmd.Process.Kill()
		if w.box != nil {
			w.box.Kill()
		}
	}
}

func (w *workerProc) send(header map[string]any, blobs []blob) error {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	if w.conn == nil {
		return errWorkerDied
	}
	return writeFrame(w.conn, header, blobs)
}

func (w *workerProc) cancel(id ids.TaskID) {
	_ = w.send(map[string]any{"t": "cancel", "task_id": id.Hex()}, nil)
}

// execute runs one task on the worker and waits for its outcome.
func (w *workerProc) execute(t *task, store Objects) result {
	s := t.spec
	w.mu.Lock()
	w.job, w.taskName = s.JobID, s.Name
	w.mu.Unlock()
	w.pool.r.workerJob(w.id, s.JobID)
	header := map[string]any{
		"t": "task", "task_id": s.TaskID.Hex(), "name": s.Name, "fn": s.FunctionID.Hex(),
		"num_returns": s.NumReturns, "self_refs": s.SelfRefs, "fn_blob": -1, "baseline_blob": -1,
	}
	var blobs []blob
	if !w.loaded[s.FunctionID] {
		fn, err := store.Get(s.FunctionID)
		if err != nil || fn == nil {
			return result{errBlob: lostError(s.FunctionID), user: false}
		}
		header["fn_blob"] = len(blobs)
		blobs = append(blobs, fn.Chunks)
	}
	header["args_blob"] = len(blobs)
	blobs = append(blobs, s.Args)
	if len(s.Baseline) > 0 {
		header["baseline_blob"] = len(blobs)
		blobs = append(blobs, blob{s.Baseline})
	}
	deps := map[string]int{}
	for _, d := range s.Deps {
		if _, ok := deps[d.Hex()]; ok {
			continue
		}
		obj, err := store.Get(d)
		if err != nil || obj == nil {
			return result{errBlob: lostError(d)}
		}
		deps[d.Hex()] = len(blobs)
		blobs = append(blobs, obj.Chunks)
	}
	header["deps"] = deps
	if err := w.send(header, blobs); err != nil {
		return result{err: fmt.Errorf("%w: %v", errWorkerDied, err)}
	}
	w.loaded[s.FunctionID] = true
	select {
	case f := <-w.frames:
		return decodeResult(f)
	case <-w.dead:
		return result{err: errWorkerDied}
	}
}

func decodeResult(f *frame) result {
	switch f.str("t") {
	case "done":
		res := result{values: f.Blobs}
		if raw, ok := f.Header["contained"].([]any); ok {
			for _, list := range raw {
				var out []ids.ObjectID
				items, _ := list.([]any)
				for _, it := range items {
					s, _ := it.(string)
					b, err := hex.DecodeString(s)
					if err != nil {
						continue
					}
					if oid, err := ids.ObjectFromBytes(b); err == nil {
						out = append(out, oid)
					}
				}
				res.contained = append(res.contained, out)
			}
		}
		return res
	case "error":
		user, _ := f.Header["user"].(bool)
		var b []byte
		if len(f.Blobs) > 0 {
			b = f.Blobs[0]
		}
		return result{errBlob: b, user: user}
	}
	return result{err: fmt.Errorf("%w: unexpected message %q", ErrFrame, f.str("t"))}
}

func lostError(id ids.ObjectID) []byte {
	b := rayerr.ObjectLost(id.Hex()).Pickle()
	return b
}

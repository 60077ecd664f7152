package jobs

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gray-cluster/gray/pyenv"
)

// Clock is the Manager's time: Now for the records' times, After for its
// waits (resources, stop grace, log polling). Tests inject a fake one.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Resources is the ledger entrypoint resources are held in (the head
// node's): TryHold reserves all of need under key or nothing.
type Resources interface {
	Total() map[string]float64
	TryHold(key string, need map[string]float64) bool
	Release(key string)
}

// Drivers lists the pool's drivers (Ray Client sessions, native drivers).
type Drivers interface {
	Drivers() []Driver
}

// Addresses say how an entrypoint reaches the pool from the head machine.
type Addresses struct {
	// GCS is the native GCS host:port ("" when native Ray is off): the
	// entrypoint's ray.init() then joins natively.
	GCS string
	// Client is the Ray Client host:port (used without native Ray).
	Client string
	// APIServer is this Jobs API's http:// URL, for nested SDK use.
	APIServer string
	// NodeID (hex) and NodeIP are the node entrypoints run on.
	NodeID, NodeIP string
}

// Config configures a Manager.
type Config struct {
	Store Store // nil: a MemStore
	Clock Clock // nil: the real clock
	// LogDir holds job-driver-<id>.log files; JobsDir a directory per job
	// (its unpacked working_dir and py_modules).
	LogDir, JobsDir string
	Packages        PackageSource
	// Resources holds entrypoint resources (nil: a job asking for any
	// fails as unschedulable).
	Resources Resources
	Drivers   Drivers
	Addresses func() Addresses
	// Credentials, when set, gives an entrypoint the environment it
	// authenticates with as its job's account (a token of that account
	// while it runs) and the credential's id, which is kept in the job's
	// record and given to ReleaseCredentials once the entrypoint has
	// exited (by this head or a restarted one).
	Credentials        func(ctx context.Context, account, submissionID string) (env []string, id string, err error)
	ReleaseCredentials func(id string)
	// Wrapper is the argv prefix of RunWrapper (e.g. the gray binary and
	// WrapperCommand): entrypoints run under it record their exit code in
	// a file, so that a head restarted after a kill adopts them. nil: the
	// entrypoint runs plainly and a restarted head marks it FAILED.
	Wrapper []string
	// Python is the pool's Python: its directory goes first on the
	// entrypoint's PATH, so that `python` there is the one with ray.
	Python string
	// PythonEnvs builds runtime_env pip/uv environments, whose python
	// then goes first on the entrypoint's PATH (nil: pip/uv are refused).
	PythonEnvs *pyenv.Builder
	// Shell runs the entrypoint (default "sh").
	Shell string
	// BaseEnv is the environment entrypoints start from (nil: the head's).
	BaseEnv []string
	// StopWait is the grace between the stop signal and SIGKILL (0:
	// $RAY_JOB_STOP_WAIT_TIME_S, else 3 s); StopSignal the first signal
	// (0: $RAY_JOB_STOP_SIGNAL SIGINT or SIGTERM).
	StopWait   time.Duration
	StopSignal syscall.Signal
	// PollInterval paces waiting for resources and following logs (0:
	// 200 ms).
	PollInterval time.Duration
	Logger       *slog.Logger
}

// Manager runs and records submissions.
type Manager struct {
	cfg    Config
	log    *slog.Logger
	store  Store
	clock  Clock
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	closed  bool
	live    map[string]*liveJob
	changed map[string]chan struct{} // closed (and replaced) on each update
}

// liveJob is a submission being supervised.
type liveJob struct {
	stopOnce sync.Once
	stop     chan struct{} // closed when a stop is asked for
	// release gives back the entrypoint's resources (set by its
	// supervisor once held; called before the terminal status shows).
	release func()
}

func (l *liveJob) requestStop() { l.stopOnce.Do(func() { close(l.stop) }) }

func (l *liveJob) stopRequested() bool {
	select {
	case <-l.stop:
		return true
	default:
		return false
	}
}

// New checks cfg and fills its defaults.
func New(cfg Config) (*Manager, error) {
	if cfg.LogDir == "" || cfg.JobsDir == "" {
		return nil, fmt.Errorf("jobs: LogDir and JobsDir are required")
	}
	if cfg.Store == nil {
		cfg.Store = NewMemStore()
	}
	if cfg.Clock == nil {
		cfg.Clock = realClock{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Shell == "" {
		cfg.Shell = "sh"
	}
	if cfg.BaseEnv == nil {
		cfg.BaseEnv = os.Environ()
	}
	if cfg.Addresses == nil {
		cfg.Addresses = func() Addresses { return Addresses{} }
	}
	if cfg.StopWait <= 0 {
		cfg.StopWait = 3 * time.Second
		if s := os.Getenv("RAY_JOB_STOP_WAIT_TIME_S"); s != "" {
			if n, err := strconv.Atoi(s); err == nil && n >= 0 {
				cfg.StopWait = time.Duration(n) * time.Second
			}
		}
	}
	if cfg.StopSignal == 0 {
		cfg.StopSignal = syscall.SIGTERM
		if os.Getenv("RAY_JOB_STOP_SIGNAL") == "SIGINT" {
			cfg.StopSignal = syscall.SIGINT
		}
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 200 * time.Millisecond
	}
	return &Manager{cfg: cfg, log: cfg.Logger.With("part", "jobs"), store: cfg.Store, clock: cfg.Clock,
		live: map[string]*liveJob{}, changed: map[string]chan struct{}{}}, nil
}

// Start makes the directories; jobs run until ctx ends or Close.
func (m *Manager) Start(ctx context.Context) error {
	for _, d := range []string{m.cfg.LogDir, m.cfg.JobsDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("jobs: %w", err)
		}
	}
	m.ctx, m.cancel = context.WithCancel(ctx)
	return m.resume(ctx)
}

// Close ends every running entrypoint (SIGKILL to its group) and waits
// for their supervisors.
func (m *Manager) Close() error {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	if m.cancel != nil {
		m.cancel()
	}
	m.wg.Wait()
	return nil
}

func (m *Manager) nowMs() int64 { return m.clock.Now().UnixMilli() }

// idChars are the characters of generated submission ids: letters and
// digits without the confusable I, l, o, O and 0, as Ray picks them.
const idChars = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnpqrstuvwxyz123456789"

// NewSubmissionID returns a fresh id of the form raysubmit_<16 chars>.
func NewSubmissionID() string {
	var b strings.Builder
	b.WriteString("raysubmit_")
	max := big.NewInt(int64(len(idChars)))
	for range 16 {
		n, err := rand.Int(rand.Reader, max)
		if err != nil {
			panic(err)
		}
		b.WriteByte(idChars[n.Int64()])
	}
	return b.String()
}

// checkSubmissionID refuses ids that cannot name a log file.
func checkSubmissionID(id string) error {
	if id == "" || id == "." || id == ".." || len(id) > 200 || strings.ContainsAny(id, "/\\\x00") {
		return fmt.Errorf("%w: submission_id %q must be 1-200 characters without slashes", ErrInvalid, id)
	}
	return nil
}

func checkRequest(r Request) error {
	if r.EntrypointNumCPUs < 0 || r.EntrypointNumGPUs < 0 || r.EntrypointMemory < 0 {
		return fmt.Errorf("%w: entrypoint_num_cpus, entrypoint_num_gpus and entrypoint_memory must not be negative", ErrInvalid)
	}
	for k, v := range r.EntrypointResources {
		if v < 0 || k == "" {
			return fmt.Errorf("%w: entrypoint_resources[%q] = %v: resources need a name and a quantity >= 0", ErrInvalid, k, v)
		}
	}
	return nil
}

// Submit records a PENDING job and starts supervising it; it returns the
// submission id.
func (m *Manager) Submit(ctx context.Context, req Request) (string, error) {
	if err := checkRequest(req); err != nil {
		return "", err
	}
	sid := req.SubmissionID
	if sid == "" {
		sid = NewSubmissionID()
	}
	if err := checkSubmissionID(sid); err != nil {
		return "", err
	}
	// The account is the submitter's (its token's), never one the request
	// names.
	account := req.Account
	if account == "" {
		account = DefaultAccount
	}
	rec := Record{
		SubmissionID: sid, Entrypoint: req.Entrypoint, Status: Pending, StartTime: m.nowMs(),
		Metadata: req.Metadata, RuntimeEnv: req.RuntimeEnv,
		EntrypointNumCPUs: req.EntrypointNumCPUs, EntrypointNumGPUs: req.EntrypointNumGPUs,
		EntrypointMemory: req.EntrypointMemory, EntrypointResources: req.EntrypointResources,
		EntrypointLabelSelector: req.EntrypointLabelSelector,
		Account:                 account, LogPath: filepath.Join(m.cfg.LogDir, "job-driver-"+sid+".log"),
	}
	if rec.Metadata == nil {
		rec.Metadata = map[string]string{}
	}
	if rec.RuntimeEnv == nil {
		rec.RuntimeEnv = map[string]any{}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed || m.ctx == nil {
		return "", ErrClosed
	}
	if err := m.store.Create(ctx, rec); err != nil {
		if errors.Is(err, ErrDuplicate) {
			return "", fmt.Errorf("%w: Job with submission_id %s already exists. Please use a different submission_id.", ErrDuplicate, sid)
		}
		return "", fmt.Errorf("jobs: recording %s: %w", sid, err)
	}
	// An empty log from the start: logs of a pending job read as "".
	if f, err := os.OpenFile(rec.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err == nil {
		f.Close()
	}
	lj := &liveJob{stop: make(chan struct{})}
	m.live[sid] = lj
	m.wg.Add(1)
	go m.supervise(sid, lj, req)
	m.log.Info("job submitted", "submission_id", sid, "entrypoint", req.Entrypoint, "account", account)
	return sid, nil
}

// update changes a record under the lock and wakes its watchers.
func (m *Manager) update(sid string, f func(*Record)) (Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	rec, err := m.store.Get(context.Background(), sid)
	if err != nil {
		return rec, err
	}
	f(&rec)
	if err := m.store.Put(context.Background(), rec); err != nil {
		return rec, err
	}
	if ch := m.changed[sid]; ch != nil {
		close(ch)
		delete(m.changed, sid)
	}
	return rec, nil
}

// changes returns a channel closed at the record's next update.
func (m *Manager) changes(sid string) <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	ch := m.changed[sid]
	if ch == nil {
		ch = make(chan struct{})
		m.changed[sid] = ch
	}
	return ch
}

// finish moves a job to a terminal status, its resources given back first.
func (m *Manager) finish(sid string, st Status, et ErrorType, msg string, exit *int) {
	m.mu.Lock()
	lj := m.live[sid]
	m.mu.Unlock()
	if lj != nil && lj.release != nil {
		lj.release() // only the job's supervisor calls finish
		lj.release = nil
	}
	if _, err := m.update(sid, func(r *Record) {
		r.Status, r.ErrorType, r.Message, r.EndTime = st, et, msg, m.nowMs()
		r.DriverExitCode = exit
	}); err != nil {
		m.log.Warn("job record lost", "submission_id", sid, "err", err)
		return
	}
	m.log.Info("job finished", "submission_id", sid, "status", st, "error_type", et)
}

// Submission resolves id to a submission record (ErrNotSubmission for a
// plain driver).
func (m *Manager) Submission(ctx context.Context, id string) (Record, error) {
	rec, drv, err := m.resolve(ctx, id, m.drivers())
	if err != nil {
		return Record{}, err
	}
	if drv != nil {
		return Record{}, ErrNotSubmission
	}
	return *rec, nil
}

// Logs returns a submission's whole log ("" before its entrypoint runs).
func (m *Manager) Logs(ctx context.Context, id string) (string, error) {
	rec, err := m.Submission(ctx, id)
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile(rec.LogPath)
	if os.IsNotExist(err) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("jobs: reading the log of %s: %w", rec.SubmissionID, err)
	}
	return string(b), nil
}

// Stop asks a pending or running job to stop; it reports false for a job
// already in a terminal state.
func (m *Manager) Stop(ctx context.Context, id string) (bool, error) {
	rec, err := m.Submission(ctx, id)
	if err != nil {
		return false, err
	}
	m.mu.Lock()
	lj := m.live[rec.SubmissionID]
	m.mu.Unlock()
	if lj == nil || rec.Status.Terminal() {
		return false, nil
	}
	lj.requestStop()
	m.log.Info("job stop requested", "submission_id", rec.SubmissionID)
	return true, nil
}

// Delete forgets a terminal job's record (its log file stays) and its
// job directory.
func (m *Manager) Delete(ctx context.Context, id string) (bool, error) {
	rec, err := m.Submission(ctx, id)
	if err != nil {
		return false, err
	}
	if !rec.Status.Terminal() {
		return false, fmt.Errorf("%w: Attempted to delete job '%s', but it is in a non-terminal state %s.", ErrNotTerminal, rec.SubmissionID, rec.Status)
	}
	m.mu.Lock()
	err = m.store.Delete(ctx, rec.SubmissionID)
	m.mu.Unlock()
	if err != nil {
		return false, err
	}
	_ = os.RemoveAll(filepath.Join(m.cfg.JobsDir, rec.SubmissionID))
	_ = os.Remove(filepath.Join(m.cfg.JobsDir, rec.SubmissionID+".exit"))
	return true, nil
}

// Record returns a submission's stored record (for the head's own views).
func (m *Manager) Record(ctx context.Context, sid string) (Record, error) {
	return m.store.Get(ctx, sid)
}

// Wait blocks until a submission is in a terminal status (or ctx ends)
// and returns its record.
func (m *Manager) Wait(ctx context.Context, sid string) (Record, error) {
	for {
		ch := m.changes(sid)
		rec, err := m.store.Get(ctx, sid)
		if err != nil {
			return rec, err
		}
		if rec.Status.Terminal() {
			return rec, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return rec, ctx.Err()
		}
	}
}

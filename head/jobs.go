package head

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/gray-cluster/gray/auth"
	"github.com/gray-cluster/gray/clientserver"
	"github.com/gray-cluster/gray/gcs"
	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/jobs"
	"github.com/gray-cluster/gray/jobs/httpapi"
	"github.com/gray-cluster/gray/raylet"
)

// rayInternalNamespacePrefix marks namespaces of Ray's own drivers, which
// the job list leaves out.
const rayInternalNamespacePrefix = "_ray_internal_"

// listenStatus binds the status (dashboard) port early, so that the
// address the Ray Client and the KV advertise has its real port.
func (h *Head) listenStatus() error {
	if h.cfg.StatusAddr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", h.cfg.StatusAddr)
	if err != nil {
		return fmt.Errorf("status endpoint: %w", err)
	}
	h.statusLn = ln
	return nil
}

// DashboardAddr is host:port of the Jobs API / dashboard as clients on
// other machines reach it: the node IP when the port listens on every
// interface ("" when there is none).
func (h *Head) DashboardAddr() string {
	if h.statusLn == nil {
		return ""
	}
	return advertise(h.statusLn.Addr().String(), h.cfg.NodeIP)
}

// advertise replaces an unspecified listen host by ip.
func advertise(addr, ip string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if h := net.ParseIP(host); host == "" || (h != nil && h.IsUnspecified()) {
		host = ip
	}
	return net.JoinHostPort(host, port)
}

// localAddr is how a process on the head machine reaches addr.
func localAddr(addr string) string { return advertise(addr, "127.0.0.1") }

// startJobs starts the Jobs API's manager: entrypoints run on the head,
// hold their entrypoint resources in the head raylet's ledger, and log
// into the session's logs directory (the native session's when native Ray
// is on, where stock Ray keeps job-driver-*.log).
func (h *Head) startJobs(ctx context.Context) error {
	logDir := filepath.Join(h.cfg.SessionDir, "logs")
	if h.Native != nil {
		logDir = filepath.Join(h.Native.SessionDir(), "logs")
	}
	nodeID := h.Raylet.NodeID()
	if h.Native != nil {
		nodeID = ids.NodeID{}
		copy(nodeID[:], h.Native.NodeID())
	}
	var store jobs.Store // in memory without a GCS store
	if h.gcsStore != nil {
		store = jobs.NewGCSStore(h.gcsStore)
	}
	m, err := jobs.New(jobs.Config{
		Store:  store,
		LogDir: logDir, JobsDir: filepath.Join(h.cfg.SessionDir, "jobs"),
		Packages: func(ctx context.Context, account, uri string) ([]byte, error) {
			b, ok, err := h.KV.Get(ctx, h.accountKV(account), []byte(uri))
			if err != nil {
				return nil, fmt.Errorf("package %s: %w", uri, err)
			}
			if !ok {
				return nil, fmt.Errorf("package %s was not uploaded", uri)
			}
			return b, nil
		},
		Resources:   raylethold{h.Raylet},
		Drivers:     headDrivers{h},
		Credentials: h.jobCredentials(), ReleaseCredentials: h.releaseJobCredential,
		Wrapper: jobWrapper(),
		Addresses: func() jobs.Addresses {
			// With token auth an entrypoint is a Ray Client of its
			// submitter's account, never a native driver (the native GCS
			// checks no tokens).
			gcsAddr := h.GCSAddress()
			if h.auth.Enabled() {
				gcsAddr = ""
			}
			a := jobs.Addresses{GCS: gcsAddr, Client: localAddr(h.ClientAddr()), NodeID: hex.EncodeToString(nodeID[:]), NodeIP: h.cfg.NodeIP}
			if h.statusLn != nil {
				a.APIServer = "http://" + localAddr(h.statusLn.Addr().String())
			}
			return a
		},
		Python: h.cfg.Python, PythonEnvs: h.Raylet.PythonEnvs(), Logger: h.log,
	})
	if err != nil {
		return err
	}
	if err := m.Start(ctx); err != nil {
		return err
	}
	h.jobs.Store(m)
	// Job clients given a GCS address (`--address HEAD:6379`) read the
	// dashboard's address here.
	if d := h.DashboardAddr(); d != "" {
		if _, err := h.KV.Put(ctx, []byte("dashboard"), []byte("dashboard"), []byte(d), true); err != nil {
			return fmt.Errorf("jobs: recording the dashboard address: %w", err)
		}
	}
	return nil
}

// jobsAPI mounts the Jobs REST API on the status mux.
func (h *Head) jobsAPI(mux *http.ServeMux) {
	m := h.jobs.Load()
	if m == nil {
		return
	}
	api := httpapi.New(httpapi.Config{Manager: m, KV: h.KV, SessionName: h.sessionName, Logger: h.log,
		PackageNamespace: func(ctx context.Context) []byte { return h.accountKV(httpapi.AccountFrom(ctx)) }})
	// The caller's identity (auth middleware) is the account its jobs are
	// billed to and the only one whose jobs it sees, unless an operator.
	withCaller := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if id, ok := auth.FromContext(r.Context()); ok {
			r = r.WithContext(httpapi.WithAccount(r.Context(), id.Account, id.Operator))
		}
		api.ServeHTTP(w, r)
	})
	for _, p := range httpapi.Paths {
		mux.Handle(p, withCaller)
	}
}

// JobsManager runs the Jobs API's submissions (nil without a status port).
func (h *Head) JobsManager() *jobs.Manager { return h.jobs.Load() }

// jobOrigin tells the Ray Client front end whether a session comes from a
// job's entrypoint, so that it takes the job's runtime_env and account.
func (h *Head) jobOrigin(peer net.Addr) (clientserver.JobOrigin, bool) {
	m := h.jobs.Load()
	if m == nil {
		return clientserver.JobOrigin{}, false
	}
	o, ok := m.OriginOf(peer)
	if !ok {
		return clientserver.JobOrigin{}, false
	}
	h.log.Info("ray client session is a job's driver", "submission_id", o.SubmissionID, "pid", o.PID)
	return clientserver.JobOrigin{SubmissionID: o.SubmissionID, RuntimeEnv: o.RuntimeEnv, Account: o.Account}, true
}

// sessionName is the native session's name, or the head's session dir's.
func (h *Head) sessionName() string {
	if b, ok, err := h.KV.Get(context.Background(), []byte("session"), []byte("session_name")); err == nil && ok {
		return string(b)
	}
	return filepath.Base(h.cfg.SessionDir)
}

// raylethold holds entrypoint resources as a one-bundle reservation in the
// head raylet's ledger, so that tasks see them in use.
type raylethold struct{ r *raylet.Raylet }

func (x raylethold) Total() map[string]float64 { return x.r.Total() }

func (x raylethold) TryHold(key string, need map[string]float64) bool {
	return x.r.ReserveBundles(key, ids.JobID{}, map[int]map[string]float64{0: need}) == nil
}

func (x raylethold) Release(key string) { _ = x.r.ReleaseBundles(key) }

// headDrivers lists the pool's drivers: Ray Client sessions and, with
// native Ray, the native GCS job table.
type headDrivers struct{ h *Head }

func (d headDrivers) Drivers() []jobs.Driver {
	h := d.h
	var out []jobs.Driver
	for _, j := range h.Jobs.List() {
		drv := jobs.Driver{
			JobID: j.ID.Hex(), SubmissionID: j.SubmissionID, Namespace: j.Namespace, Alive: j.Alive,
			StartTime: j.StartTime.UnixMilli(), NodeIP: h.cfg.NodeIP, Account: h.Client.JobAccount(j.ID),
		}
		if !j.EndTime.IsZero() {
			drv.EndTime = j.EndTime.UnixMilli()
		}
		out = append(out, drv)
	}
	if h.Native == nil {
		return out
	}
	for _, j := range h.Native.Jobs() {
		cfg := j.GetConfig()
		if strings.HasPrefix(cfg.GetRayNamespace(), rayInternalNamespacePrefix) {
			continue
		}
		drv := jobs.Driver{
			JobID: hex.EncodeToString(j.GetJobId()), SubmissionID: cfg.GetMetadata()["job_submission_id"],
			Entrypoint: j.GetEntrypoint(), Namespace: cfg.GetRayNamespace(), Alive: !j.GetIsDead(),
			StartTime: int64(j.GetStartTime()), EndTime: int64(j.GetEndTime()), PID: int(j.GetDriverPid()),
			NodeIP: j.GetDriverAddress().GetIpAddress(), Metadata: cfg.GetMetadata(),
			// Native drivers have no token: they are the one account's of
			// a pool without authentication (operators see them always).
			Account: auth.DefaultAccount,
		}
		if drv.NodeIP == "" {
			drv.NodeIP = j.GetDriverIpAddress()
		}
		if s := cfg.GetRuntimeEnvInfo().GetSerializedRuntimeEnv(); s != "" {
			_ = json.Unmarshal([]byte(s), &drv.RuntimeEnv)
		}
		out = append(out, drv)
	}
	return out
}

// accountKV is the KV namespace an account's packages live in: its own
// with token auth, the default one without (kvscope in clientserver).
func (h *Head) accountKV(account string) []byte {
	if !h.auth.Enabled() {
		return nil
	}
	return gcs.AccountNamespace(account, nil)
}

// jobCredentials gives an entrypoint, with token auth, a token of its
// submitter's account for as long as it runs (revoked when it exits, by
// releaseJobCredential, also by a restarted head); without auth it needs
// none.
func (h *Head) jobCredentials() func(ctx context.Context, account, sid string) ([]string, string, error) {
	if !h.auth.Enabled() {
		return nil
	}
	return func(_ context.Context, account, sid string) ([]string, string, error) {
		tok, info, err := h.auth.Create(account, false, "job "+sid)
		if err != nil {
			return nil, "", err
		}
		return []string{"RAY_AUTH_MODE=token", "RAY_AUTH_TOKEN=" + tok}, info.ID, nil
	}
}

// releaseJobCredential revokes a finished job's token.
func (h *Head) releaseJobCredential(id string) {
	if _, err := h.auth.Revoke(id); err != nil {
		h.log.Warn("jobs: cannot revoke a finished job's token", "token_id", id, "err", err)
	}
}

// jobWrapper runs entrypoints under this binary's job-entrypoint command,
// which records their exit codes for a restarted head (nil when the
// binary cannot be found: entrypoints then die with the head's
// supervision).
func jobWrapper() []string {
	exe, err := os.Executable()
	if err != nil {
		return nil
	}
	return []string{exe, jobs.WrapperCommand}
}

// Package httpapi serves the Ray Jobs REST API (the endpoints the stock
// `ray job` CLI and JobSubmissionClient call on a dashboard, port 8265)
// over a jobs.Manager and the head's internal KV: /api/version, package
// upload, submit, info, list, logs, the logs tail WebSocket, stop and
// delete, with Ray's reply shapes and error codes. It is a plain
// http.Handler; authentication, if any, wraps it.
package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"github.com/gray-cluster/gray/gcs"
	"github.com/gray-cluster/gray/jobs"
)

// Jobs API version facts the client checks.
const (
	// APIVersion is the Jobs API version: 4 has DELETE.
	APIVersion = "4"
	RayVersion = "2.60.0"
	// RayCommit is the commit of the ray 2.60.0 wheel (ray/_version.py).
	RayCommit = "b7f4259e944bf6959f721b106adc366ddfa0c356"
	// MaxPackageBytes is the largest package upload, as stock's aiohttp
	// client_max_size (larger uploads get 413).
	MaxPackageBytes = 100 << 20
	// maxSubmitBytes bounds a submit body.
	maxSubmitBytes = 16 << 20
)

// Config configures the API.
type Config struct {
	Manager *jobs.Manager
	// KV stores uploaded packages under their full gcs:// URI, in the
	// namespace PackageNamespace gives for the request (nil: the default
	// namespace, where Ray Client uploads go too).
	KV               gcs.KV
	PackageNamespace func(ctx context.Context) []byte
	// SessionName is the session's name, as /api/version reports it.
	SessionName func() string
	// MaxPackageBytes bounds an upload (0: MaxPackageBytes).
	MaxPackageBytes int64
	Logger          *slog.Logger
}

// API is the Jobs REST API handler.
type API struct {
	cfg Config
	log *slog.Logger
}

// New returns the handler.
func New(cfg Config) *API {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxPackageBytes <= 0 {
		cfg.MaxPackageBytes = MaxPackageBytes
	}
	if cfg.SessionName == nil {
		cfg.SessionName = func() string { return "" }
	}
	return &API{cfg: cfg, log: cfg.Logger.With("part", "jobsapi")}
}

// Paths are the URL paths (and subtrees, ending in /) the API serves, for
// mounting on a mux.
var Paths = []string{"/api/version", "/api/packages/", "/api/jobs", "/api/jobs/"}

// ServeHTTP routes a request.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	switch {
	case path == "/api/version":
		a.only(w, r, http.MethodGet, a.version)
	case strings.HasPrefix(path, "/api/packages/"):
		a.packages(w, r, strings.TrimPrefix(path, "/api/packages/"))
	case path == "/api/jobs" || path == "/api/jobs/":
		switch r.Method {
		case http.MethodGet:
			a.list(w, r)
		case http.MethodPost:
			a.submit(w, r)
		default:
			methodNotAllowed(w, "GET, POST")
		}
	case strings.HasPrefix(path, "/api/jobs/"):
		a.job(w, r, strings.Split(strings.TrimSuffix(strings.TrimPrefix(path, "/api/jobs/"), "/"), "/"))
	default:
		http.NotFound(w, r)
	}
}

func (a *API) job(w http.ResponseWriter, r *http.Request, parts []string) {
	id := parts[0]
	// Another account's job does not exist for this caller.
	if d, err := a.cfg.Manager.Job(r.Context(), id); err == nil && !mayView(r.Context(), d.Account) {
		writeText(w, http.StatusNotFound, fmt.Sprintf("Job %s does not exist", id))
		return
	}
	switch {
	case len(parts) == 1:
		switch r.Method {
		case http.MethodGet:
			a.info(w, r, id)
		case http.MethodDelete:
			a.delete(w, r, id)
		default:
			methodNotAllowed(w, "GET, DELETE")
		}
	case len(parts) == 2 && parts[1] == "logs":
		a.only(w, r, http.MethodGet, func(w http.ResponseWriter, r *http.Request) { a.logs(w, r, id) })
	case len(parts) == 3 && parts[1] == "logs" && parts[2] == "tail":
		a.only(w, r, http.MethodGet, func(w http.ResponseWriter, r *http.Request) { a.tail(w, r, id) })
	case len(parts) == 2 && parts[1] == "stop":
		a.only(w, r, http.MethodPost, func(w http.ResponseWriter, r *http.Request) { a.stop(w, r, id) })
	default:
		http.NotFound(w, r)
	}
}

func (a *API) only(w http.ResponseWriter, r *http.Request, method string, h http.HandlerFunc) {
	if r.Method != method && !(method == http.MethodGet && r.Method == http.MethodHead) {
		methodNotAllowed(w, method)
		return
	}
	h(w, r)
}

func methodNotAllowed(w http.ResponseWriter, allow string) {
	w.Header().Set("Allow", allow)
	http.Error(w, "405: Method Not Allowed", http.StatusMethodNotAllowed)
}

func (a *API) version(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, map[string]string{
		"version": APIVersion, "ray_version": RayVersion, "ray_commit": RayCommit,
		"session_name": a.cfg.SessionName(),
	})
}

func writeJSON(w http.ResponseWriter, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(bytes.TrimSuffix(buf.Bytes(), []byte("\n")))
}

func writeText(w http.ResponseWriter, code int, text string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(text))
}

// sentinels are the Manager's errors with their HTTP status; the text sent
// is the error's message past the sentinel (Ray's own wording).
var sentinels = []struct {
	err  error
	code int
}{
	{jobs.ErrNotFound, http.StatusNotFound},
	{jobs.ErrInvalid, http.StatusBadRequest},
	{jobs.ErrNotSubmission, http.StatusBadRequest},
	// Stock answers 500 for these two.
	{jobs.ErrDuplicate, http.StatusInternalServerError},
	{jobs.ErrNotTerminal, http.StatusInternalServerError},
	{jobs.ErrClosed, http.StatusServiceUnavailable},
}

// fail answers a Manager error; notSubmission is the text for a request
// about a DRIVER job.
func (a *API) fail(w http.ResponseWriter, id string, err error, notSubmission string) {
	if errors.Is(err, jobs.ErrNotSubmission) {
		writeText(w, http.StatusBadRequest, notSubmission)
		return
	}
	if errors.Is(err, jobs.ErrNotFound) {
		writeText(w, http.StatusNotFound, fmt.Sprintf("Job %s does not exist", id))
		return
	}
	for _, s := range sentinels {
		if errors.Is(err, s.err) {
			writeText(w, s.code, strings.TrimPrefix(err.Error(), s.err.Error()+": "))
			return
		}
	}
	a.log.Warn("jobs API", "err", err)
	writeText(w, http.StatusInternalServerError, err.Error())
}

func (a *API) list(w http.ResponseWriter, r *http.Request) {
	list, err := a.cfg.Manager.List(r.Context())
	if err != nil {
		a.fail(w, "", err, "")
		return
	}
	redact := looksLikeBrowser(r)
	shown := list[:0]
	for _, d := range list {
		if mayView(r.Context(), d.Account) {
			shown = append(shown, redacted(d, redact))
		}
	}
	writeJSON(w, shown)
}

func (a *API) info(w http.ResponseWriter, r *http.Request, id string) {
	d, err := a.cfg.Manager.Job(r.Context(), id)
	if err != nil {
		a.fail(w, id, err, "")
		return
	}
	writeJSON(w, redacted(d, looksLikeBrowser(r)))
}

func (a *API) logs(w http.ResponseWriter, r *http.Request, id string) {
	logs, err := a.cfg.Manager.Logs(r.Context(), id)
	if err != nil {
		a.fail(w, id, err, "Can only get logs of submission type jobs")
		return
	}
	writeJSON(w, map[string]string{"logs": logs})
}

func (a *API) stop(w http.ResponseWriter, r *http.Request, id string) {
	stopped, err := a.cfg.Manager.Stop(r.Context(), id)
	if err != nil {
		a.fail(w, id, err, "Can only stop submission type jobs")
		return
	}
	writeJSON(w, map[string]bool{"stopped": stopped})
}

func (a *API) delete(w http.ResponseWriter, r *http.Request, id string) {
	deleted, err := a.cfg.Manager.Delete(r.Context(), id)
	if err != nil {
		a.fail(w, id, err, "Can only delete submission type jobs")
		return
	}
	writeJSON(w, map[string]bool{"deleted": deleted})
}

// looksLikeBrowser is stock's test for a request from a web page (whose
// runtime_env env_vars values are redacted).
func looksLikeBrowser(r *http.Request) bool {
	if strings.HasPrefix(r.UserAgent(), "Mozilla") || r.Header.Get("Referer") != "" || r.Header.Get("Origin") != "" {
		return true
	}
	for k := range r.Header {
		if strings.HasPrefix(k, "Sec-Fetch-") || strings.HasPrefix(k, "Access-Control-Request-") {
			return true
		}
	}
	return false
}

func redacted(d jobs.Details, redact bool) jobs.Details {
	if !redact || d.RuntimeEnv == nil {
		return d
	}
	vars, ok := d.RuntimeEnv["env_vars"].(map[string]any)
	if !ok {
		return d
	}
	re := make(map[string]any, len(d.RuntimeEnv))
	for k, v := range d.RuntimeEnv {
		re[k] = v
	}
	masked := make(map[string]any, len(vars))
	for k := range vars {
		masked[k] = "<redacted>"
	}
	re["env_vars"] = masked
	d.RuntimeEnv = re
	return d
}

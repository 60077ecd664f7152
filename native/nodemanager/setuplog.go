package nodemanager

import (
	"encoding/hex"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
)

// runtime_env set-up logs: what building a lease's pip/uv environment
// prints goes to logs/runtime_env_setup-<job hex>.log in the session dir
// (the file stock Ray's runtime_env agent writes), and tailLogs publishes
// its lines to the job's driver. Stock Ray only streams these files when
// RAY_RUNTIME_ENV_LOG_TO_DRIVER_ENABLED=1; gray streams them unless that
// variable is "0" in the raylet's environment (a pip build on a remote
// provider can take minutes, and the driver should see why).
var setupLogRe = regexp.MustCompile(`^runtime_env_setup-([0-9a-f]+)\.log$`)

// setupLogPid is the pid a set-up log's lines carry (as stock Ray's log
// monitor labels them).
const setupLogPid = "runtime_env"

// setupLogsToDriver reports whether set-up logs are streamed.
func setupLogsToDriver() bool {
	return strings.TrimSpace(os.Getenv("RAY_RUNTIME_ENV_LOG_TO_DRIVER_ENABLED")) != "0"
}

// setupLog appends lines to one job's set-up log.
type setupLog struct {
	mu   sync.Mutex
	path string
}

// newSetupLog is the set-up log of the job jobID (nil when the session has
// no logs directory or the job is unknown: lines then go nowhere).
func (r *Raylet) newSetupLog(jobID []byte) *setupLog {
	if r.cfg.SessionDir == "" || len(jobID) == 0 {
		return nil
	}
	return &setupLog{path: filepath.Join(r.cfg.SessionDir, "logs", "runtime_env_setup-"+hex.EncodeToString(jobID)+".log")}
}

// line appends one line; a failure to write is not the lease's failure.
func (l *setupLog) line(s string) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	f, err := os.OpenFile(l.path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return
	}
	_, _ = f.WriteString(strings.TrimRight(s, "\n") + "\n")
	_ = f.Close()
}

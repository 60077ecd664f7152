// Package jobs runs Ray Jobs API submissions on the head: each job's
// entrypoint is a shell command started in its own process group, in a
// per-job directory holding its unpacked working_dir, with its stdout and
// stderr in one log file; its status follows Ray's PENDING → RUNNING →
// SUCCEEDED / FAILED / STOPPED with Ray's messages, error types and exit
// codes. The Manager keeps job records behind a Store (in memory or the
// GCS store; a restarted head adopts the entrypoints still running) and
// lists the pool's other drivers (Ray Client sessions, native drivers) as
// DRIVER jobs, as Ray's job table does. The HTTP adapter is jobs/httpapi.
package jobs

import (
	"errors"
	"maps"
)

// Status is a job's status, as Ray spells it.
type Status string

// Ray's job statuses.
const (
	Pending   Status = "PENDING"
	Running   Status = "RUNNING"
	Stopped   Status = "STOPPED"
	Succeeded Status = "SUCCEEDED"
	Failed    Status = "FAILED"
)

// Terminal reports whether the status never changes again.
func (s Status) Terminal() bool { return s == Stopped || s == Succeeded || s == Failed }

// ErrorType says why a job failed (Ray's JobErrorType values).
type ErrorType string

// The error types gray reports.
const (
	RuntimeEnvSetupFailure ErrorType = "RUNTIME_ENV_SETUP_FAILURE"
	Unschedulable          ErrorType = "JOB_SUPERVISOR_ACTOR_UNSCHEDULABLE"
	SupervisorDied         ErrorType = "JOB_SUPERVISOR_ACTOR_DIED"
	CommandStartError      ErrorType = "JOB_ENTRYPOINT_COMMAND_START_ERROR"
	CommandError           ErrorType = "JOB_ENTRYPOINT_COMMAND_ERROR"
)

// Job types in listings.
const (
	TypeSubmission = "SUBMISSION"
	TypeDriver     = "DRIVER"
)

// Errors the Manager returns; the HTTP adapter maps them to Ray's replies.
var (
	ErrNotFound      = errors.New("job does not exist")
	ErrDuplicate     = errors.New("job already exists")
	ErrInvalid       = errors.New("invalid job request")
	ErrNotSubmission = errors.New("not a submission job")
	ErrNotTerminal   = errors.New("job is not in a terminal state")
	ErrClosed        = errors.New("job manager closed")
)

// DefaultAccount is the billing account of a job whose submitter named none.
const DefaultAccount = "default"

// Request is one submission.
type Request struct {
	Entrypoint string
	// SubmissionID is the caller's id ("" = generate raysubmit_...).
	SubmissionID string
	RuntimeEnv   map[string]any
	Metadata     map[string]string
	// Entrypoint resources are held on the head while the entrypoint runs.
	EntrypointNumCPUs       float64
	EntrypointNumGPUs       float64
	EntrypointMemory        int64
	EntrypointResources     map[string]float64
	EntrypointLabelSelector map[string]string
	// Account is who the job's work is charged to: the authenticated
	// submitter's account when there is one ("" = the runtime_env's
	// GRAY_ACCOUNT, else DefaultAccount).
	Account string
}

// resources is what the entrypoint holds while it runs.
func (r Request) resources() map[string]float64 {
	out := map[string]float64{}
	if r.EntrypointNumCPUs > 0 {
		out["CPU"] = r.EntrypointNumCPUs
	}
	if r.EntrypointNumGPUs > 0 {
		out["GPU"] = r.EntrypointNumGPUs
	}
	if r.EntrypointMemory > 0 {
		out["memory"] = float64(r.EntrypointMemory)
	}
	for k, v := range r.EntrypointResources {
		if v > 0 {
			out[k] += v
		}
	}
	return out
}

// Record is a submission's stored state: what a Store keeps (and issue 16
// makes durable). Times are Unix milliseconds, 0 for none.
type Record struct {
	SubmissionID           string            `json:"submission_id"`
	Entrypoint             string            `json:"entrypoint"`
	Status                 Status            `json:"status"`
	Message                string            `json:"message,omitempty"`
	ErrorType              ErrorType         `json:"error_type,omitempty"`
	StartTime              int64             `json:"start_time"`
	EndTime                int64             `json:"end_time,omitempty"`
	Metadata               map[string]string `json:"metadata,omitempty"`
	RuntimeEnv             map[string]any    `json:"runtime_env,omitempty"`
	DriverAgentHTTPAddress string            `json:"driver_agent_http_address,omitempty"`
	DriverNodeID           string            `json:"driver_node_id,omitempty"`
	DriverExitCode         *int              `json:"driver_exit_code,omitempty"`
	// DriverPID is the entrypoint's pid (its process group's id);
	// ClientPID the process of it whose Ray Client session drives the job.
	DriverPID               int                `json:"driver_pid,omitempty"`
	ClientPID               int                `json:"client_pid,omitempty"`
	EntrypointNumCPUs       float64            `json:"entrypoint_num_cpus,omitempty"`
	EntrypointNumGPUs       float64            `json:"entrypoint_num_gpus,omitempty"`
	EntrypointMemory        int64              `json:"entrypoint_memory,omitempty"`
	EntrypointResources     map[string]float64 `json:"entrypoint_resources,omitempty"`
	EntrypointLabelSelector map[string]string  `json:"entrypoint_label_selector,omitempty"`
	Account                 string             `json:"account"`
	LogPath                 string             `json:"log_path"`
	// What a restarted head needs to adopt a running entrypoint: its
	// leader's start time (/proc/PID/stat, so that a reused pid is not
	// taken for it), the file its wrapper writes the exit code to, and the
	// id of the credential it runs with (revoked when it ends).
	DriverStartTime uint64 `json:"driver_start_time,omitempty"`
	StatusPath      string `json:"status_path,omitempty"`
	CredentialID    string `json:"credential_id,omitempty"`
}

func (r Record) clone() Record {
	r.Metadata = maps.Clone(r.Metadata)
	r.RuntimeEnv = cloneAny(r.RuntimeEnv)
	r.EntrypointResources = maps.Clone(r.EntrypointResources)
	r.EntrypointLabelSelector = maps.Clone(r.EntrypointLabelSelector)
	if r.DriverExitCode != nil {
		c := *r.DriverExitCode
		r.DriverExitCode = &c
	}
	return r
}

func (r Record) resourcesSpecified() bool {
	return r.EntrypointNumCPUs > 0 || r.EntrypointNumGPUs > 0 || r.EntrypointMemory > 0 || len(r.EntrypointResources) > 0
}

// message is the record's status message, or Ray's default for its status.
func (r Record) message() string {
	if r.Message != "" {
		return r.Message
	}
	switch r.Status {
	case Pending:
		m := "Job has not started yet."
		if r.resourcesSpecified() {
			m += " It may be waiting for resources (CPUs, GPUs, memory, custom resources) to become available."
		}
		if len(r.RuntimeEnv) > 0 {
			m += " It may be waiting for the runtime environment to be set up."
		}
		return m
	case Running:
		return "Job is currently running."
	case Stopped:
		return "Job was intentionally stopped."
	case Succeeded:
		return "Job finished successfully."
	case Failed:
		return "Job failed."
	}
	return ""
}

// Driver is a Ray driver the pool knows of: a Ray Client session or a
// native driver in the GCS job table.
type Driver struct {
	JobID string // hex
	// SubmissionID links a driver to the submission whose entrypoint
	// started it ("" for a driver run by hand).
	SubmissionID string
	Entrypoint   string
	Namespace    string
	Alive        bool
	StartTime    int64 // ms
	EndTime      int64 // ms, 0 while alive
	PID          int   // 0 = unknown
	NodeIP       string
	Metadata     map[string]string
	RuntimeEnv   map[string]any
	// Account is the account the driver acts for ("" unknown).
	Account string
}

// Details is a job as the Jobs API shows it (Ray's JobDetails).
type Details struct {
	// Account owns the job (not part of Ray's JobDetails: never sent).
	Account                string            `json:"-"`
	Type                   string            `json:"type"`
	JobID                  *string           `json:"job_id"`
	SubmissionID           *string           `json:"submission_id"`
	DriverInfo             *DriverInfo       `json:"driver_info"`
	Status                 Status            `json:"status"`
	Entrypoint             string            `json:"entrypoint"`
	Message                *string           `json:"message"`
	ErrorType              *string           `json:"error_type"`
	StartTime              *int64            `json:"start_time"`
	EndTime                *int64            `json:"end_time"`
	Metadata               map[string]string `json:"metadata"`
	RuntimeEnv             map[string]any    `json:"runtime_env"`
	DriverAgentHTTPAddress *string           `json:"driver_agent_http_address"`
	DriverNodeID           *string           `json:"driver_node_id"`
	DriverExitCode         *int              `json:"driver_exit_code"`
}

// DriverInfo is a job's driver process; PID is a string, as Ray sends it.
type DriverInfo struct {
	ID            string `json:"id"`
	NodeIPAddress string `json:"node_ip_address"`
	PID           string `json:"pid"`
}

func strp(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func msp(ms int64) *int64 {
	if ms == 0 {
		return nil
	}
	return &ms
}

func cloneAny(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	out := make(map[string]any, len(m))
	for k, v := range m {
		switch t := v.(type) {
		case map[string]any:
			out[k] = cloneAny(t)
		case []any:
			out[k] = append([]any(nil), t...)
		default:
			out[k] = v
		}
	}
	return out
}

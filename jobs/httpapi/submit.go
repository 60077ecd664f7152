package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"

	"github.com/gray-cluster/gray/jobs"
)

// submitKeys are the fields of Ray's JobSubmitRequest.
var submitKeys = map[string]bool{
	"entrypoint": true, "submission_id": true, "job_id": true, "runtime_env": true, "metadata": true,
	"entrypoint_num_cpus": true, "entrypoint_num_gpus": true, "entrypoint_memory": true,
	"entrypoint_resources": true, "entrypoint_label_selector": true,
}

// errBadRequest is a submit body Ray's JobSubmitRequest would refuse.
var errBadRequest = errors.New("bad request")

func (a *API) submit(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxSubmitBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeText(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("Request body is larger than %d bytes", maxSubmitBytes))
			return
		}
		writeText(w, http.StatusBadRequest, "reading the request: "+err.Error())
		return
	}
	req, err := parseSubmit(body)
	if err != nil {
		writeText(w, http.StatusBadRequest, err.Error())
		return
	}
	// Billing hook: an authenticating middleware in front of this handler
	// sets the submitter's account; without one the runtime_env's
	// GRAY_ACCOUNT (or "default") is charged.
	req.Account = AccountFrom(r.Context())
	sid, err := a.cfg.Manager.Submit(r.Context(), req)
	if err != nil {
		a.fail(w, req.SubmissionID, err, "")
		return
	}
	writeJSON(w, map[string]string{"job_id": sid, "submission_id": sid})
}

// parseSubmit reads a JobSubmitRequest body with the checks Ray's
// dataclass makes (keys with null values are dropped first, as Ray does).
func parseSubmit(body []byte) (jobs.Request, error) {
	var req jobs.Request
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var raw map[string]any
	if err := dec.Decode(&raw); err != nil {
		return req, fmt.Errorf("%w: the body is not a JSON object: %v", errBadRequest, err)
	}
	if raw == nil {
		return req, fmt.Errorf("%w: the body must be a JSON object", errBadRequest)
	}
	var unknown []string
	for k, v := range raw {
		if v == nil {
			delete(raw, k)
			continue
		}
		if !submitKeys[k] {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return req, fmt.Errorf("%w: TypeError: JobSubmitRequest.__init__() got an unexpected keyword argument '%s'", errBadRequest, unknown[0])
	}
	ep, ok := raw["entrypoint"]
	if !ok {
		return req, fmt.Errorf("%w: TypeError: JobSubmitRequest.__init__() missing 1 required positional argument: 'entrypoint'", errBadRequest)
	}
	if req.Entrypoint, ok = ep.(string); !ok {
		return req, typeErr("entrypoint must be a string", ep)
	}
	for _, k := range []string{"submission_id", "job_id"} {
		if v, ok := raw[k]; ok {
			s, ok := v.(string)
			if !ok {
				return req, typeErr(k+" must be a string if provided", v)
			}
			if req.SubmissionID == "" {
				req.SubmissionID = s // job_id is the deprecated name
			}
		}
	}
	if v, ok := raw["runtime_env"]; ok {
		m, ok := v.(map[string]any)
		if !ok {
			return req, typeErr("runtime_env must be a dict", v)
		}
		req.RuntimeEnv = m
	}
	var err error
	if req.Metadata, err = stringDict(raw, "metadata"); err != nil {
		return req, err
	}
	if req.EntrypointLabelSelector, err = stringDict(raw, "entrypoint_label_selector"); err != nil {
		return req, err
	}
	if req.EntrypointNumCPUs, err = number(raw, "entrypoint_num_cpus"); err != nil {
		return req, err
	}
	if req.EntrypointNumGPUs, err = number(raw, "entrypoint_num_gpus"); err != nil {
		return req, err
	}
	if v, ok := raw["entrypoint_memory"]; ok {
		n, isNum := v.(json.Number)
		i, err := strconv.ParseInt(string(n), 10, 64)
		if !isNum || err != nil {
			return req, typeErr("entrypoint_memory must be an integer", v)
		}
		req.EntrypointMemory = i
	}
	if v, ok := raw["entrypoint_resources"]; ok {
		m, ok := v.(map[string]any)
		if !ok {
			return req, typeErr("entrypoint_resources must be a dict", v)
		}
		req.EntrypointResources = make(map[string]float64, len(m))
		for k, x := range m {
			n, ok := x.(json.Number)
			f, err := n.Float64()
			if !ok || err != nil {
				return req, typeErr("entrypoint_resources values must be numbers", x)
			}
			req.EntrypointResources[k] = f
		}
	}
	return req, nil
}

func number(raw map[string]any, key string) (float64, error) {
	v, ok := raw[key]
	if !ok {
		return 0, nil
	}
	n, ok := v.(json.Number)
	f, err := n.Float64()
	if !ok || err != nil {
		return 0, typeErr(key+" must be a number", v)
	}
	return f, nil
}

func stringDict(raw map[string]any, key string) (map[string]string, error) {
	v, ok := raw[key]
	if !ok {
		return nil, nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, typeErr(key+" must be a dict", v)
	}
	out := make(map[string]string, len(m))
	for k, x := range m {
		s, ok := x.(string)
		if !ok {
			return nil, typeErr(key+" values must be strings", x)
		}
		out[k] = s
	}
	return out, nil
}

// typeErr words a type error as Ray's dataclass does.
func typeErr(what string, v any) error {
	return fmt.Errorf("%w: TypeError: %s, got <class '%s'>", errBadRequest, what, pyType(v))
}

func pyType(v any) string {
	switch t := v.(type) {
	case string:
		return "str"
	case bool:
		return "bool"
	case json.Number:
		if _, err := strconv.ParseInt(string(t), 10, 64); err == nil {
			return "int"
		}
		return "float"
	case []any:
		return "list"
	case map[string]any:
		return "dict"
	}
	return "NoneType"
}

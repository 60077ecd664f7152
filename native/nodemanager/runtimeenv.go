package nodemanager

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"sort"
	"strings"

	commonpb "github.com/gray-cluster/gray/proto/ray/commonpb"
)

// ErrRuntimeEnv is a runtime_env this raylet cannot set up.
var ErrRuntimeEnv = errors.New("runtime_env not supported")

// runtimeEnv is the part of a lease's runtime_env that decides which worker
// process may run it: workers are started with its environment variables
// and only serve leases with the same ones.
type runtimeEnv struct {
	key  string   // canonical form; "" = none
	hash int32    // --runtime-env-hash of its workers
	vars []string // KEY=VALUE
}

// runtimeEnvFields the raylet sets up or may ignore: env_vars becomes the
// worker's environment; config only tunes set-up (timeouts, eager
// install) of what there is.
var runtimeEnvFields = map[string]bool{"env_vars": true, "config": true}

// parseRuntimeEnv reads a lease's serialized runtime_env. Fields other
// than env_vars (working_dir, pip, conda, py_modules, containers, ...)
// need packages fetched or built, which this raylet does not do yet: they
// are refused with ErrRuntimeEnv naming the field.
func parseRuntimeEnv(spec *commonpb.LeaseSpec) (runtimeEnv, error) {
	s := strings.TrimSpace(spec.GetRuntimeEnvInfo().GetSerializedRuntimeEnv())
	if s == "" || s == "{}" {
		return runtimeEnv{}, nil
	}
	var env map[string]json.RawMessage
	if err := json.Unmarshal([]byte(s), &env); err != nil {
		return runtimeEnv{}, fmt.Errorf("%w: malformed runtime_env %q: %v", ErrRuntimeEnv, s, err)
	}
	var unsupported []string
	for k := range env {
		if !runtimeEnvFields[k] {
			unsupported = append(unsupported, k)
		}
	}
	if len(unsupported) > 0 {
		sort.Strings(unsupported)
		return runtimeEnv{}, fmt.Errorf("%w: gray's native raylet sets up only env_vars so far, not %s (runtime_env %s)",
			ErrRuntimeEnv, strings.Join(unsupported, ", "), s)
	}
	vars := map[string]string{}
	if raw, ok := env["env_vars"]; ok {
		if err := json.Unmarshal(raw, &vars); err != nil {
			return runtimeEnv{}, fmt.Errorf("%w: env_vars must map strings to strings: %v", ErrRuntimeEnv, err)
		}
	}
	if len(vars) == 0 {
		return runtimeEnv{}, nil
	}
	keys := make([]string, 0, len(vars))
	for k := range vars {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.Contains(vars[k], "\x00") {
			return runtimeEnv{}, fmt.Errorf("%w: bad environment variable %q", ErrRuntimeEnv, k)
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	re := runtimeEnv{}
	for _, k := range keys {
		re.vars = append(re.vars, k+"="+vars[k])
	}
	re.key = strings.Join(re.vars, "\x00")
	h := fnv.New32a()
	h.Write([]byte(re.key))
	re.hash = int32(h.Sum32() & 0x7fffffff)
	if re.hash == 0 {
		re.hash = 1
	}
	return re, nil
}

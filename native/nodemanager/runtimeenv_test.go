package nodemanager

import (
	"errors"
	"strings"
	"testing"

	commonpb "github.com/gray-cluster/gray/proto/ray/commonpb"
)

func leaseWithEnv(s string) *commonpb.LeaseSpec {
	return &commonpb.LeaseSpec{RuntimeEnvInfo: &commonpb.RuntimeEnvInfo{SerializedRuntimeEnv: s}}
}

func TestParseRuntimeEnv(t *testing.T) {
	for _, tc := range []struct {
		in      string
		vars    []string
		errWith string
	}{
		{in: ""},
		{in: "{}"},
		{in: `{"env_vars": {}}`},
		{in: `{"env_vars": {"B": "2", "A": "1"}}`, vars: []string{"A=1", "B=2"}},
		{in: `{"env_vars": {"A": "x=y"}, "config": {"setup_timeout_seconds": 600}}`, vars: []string{"A=x=y"}},
		{in: `{"working_dir": "gcs://x.zip", "pip": ["a"]}`, errWith: "not pip, working_dir"},
		{in: `{"env_vars": {"A": 1}}`, errWith: "env_vars must map strings"},
		{in: `{"env_vars": {"A=B": "1"}}`, errWith: "bad environment variable"},
		{in: `not json`, errWith: "malformed runtime_env"},
	} {
		env, err := parseRuntimeEnv(leaseWithEnv(tc.in))
		if tc.errWith != "" {
			if !errors.Is(err, ErrRuntimeEnv) || !strings.Contains(err.Error(), tc.errWith) {
				t.Errorf("%s: err %v, want one with %q", tc.in, err, tc.errWith)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.in, err)
			continue
		}
		if strings.Join(env.vars, ",") != strings.Join(tc.vars, ",") {
			t.Errorf("%s: vars %v, want %v", tc.in, env.vars, tc.vars)
		}
		if (env.key == "") != (len(tc.vars) == 0) || (env.hash == 0) != (len(tc.vars) == 0) {
			t.Errorf("%s: key %q hash %d", tc.in, env.key, env.hash)
		}
	}
	a, _ := parseRuntimeEnv(leaseWithEnv(`{"env_vars": {"A": "1", "B": "2"}}`))
	b, _ := parseRuntimeEnv(leaseWithEnv(`{"env_vars": {"B": "2", "A": "1"}}`))
	c, _ := parseRuntimeEnv(leaseWithEnv(`{"env_vars": {"A": "1"}}`))
	if a.key != b.key || a.hash != b.hash {
		t.Error("the same variables in another order are another env")
	}
	if a.key == c.key {
		t.Error("different variables share a pool")
	}
}

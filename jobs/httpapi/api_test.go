package httpapi

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/gray-cluster/gray/gcs"
	"github.com/gray-cluster/gray/jobs"
)

func testServer(t *testing.T) (*httptest.Server, gcs.KV) {
	t.Helper()
	dir := t.TempDir()
	kv := gcs.NewMemKV()
	m, err := jobs.New(jobs.Config{LogDir: filepath.Join(dir, "logs"), JobsDir: filepath.Join(dir, "jobs"),
		BaseEnv: []string{"PATH=" + os.Getenv("PATH")}, PollInterval: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(New(Config{Manager: m, KV: kv, SessionName: func() string { return "session_x" }, MaxPackageBytes: 1 << 10}))
	t.Cleanup(func() {
		srv.Close()
		cancel()
		m.Close()
	})
	return srv, kv
}

func do(t *testing.T, method, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func keys(t *testing.T, body string) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		t.Fatalf("%q: %v", body, err)
	}
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return strings.Join(sortStrings(ks), ",")
}

func sortStrings(s []string) []string {
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	return s
}

func TestVersion(t *testing.T) {
	srv, _ := testServer(t)
	code, body := do(t, "GET", srv.URL+"/api/version", "")
	var v map[string]string
	json.Unmarshal([]byte(body), &v)
	if code != 200 || v["version"] != "4" || v["ray_version"] != "2.60.0" || v["ray_commit"] != RayCommit || v["session_name"] != "session_x" {
		t.Fatalf("%d %s", code, body)
	}
}

func TestPackages(t *testing.T) {
	srv, kv := testServer(t)
	url := srv.URL + "/api/packages/gcs/_ray_pkg_abc.zip"
	if code, body := do(t, "GET", url, ""); code != 404 || body != "Package gcs://_ray_pkg_abc.zip does not exist" {
		t.Fatalf("%d %q", code, body)
	}
	if code, _ := do(t, "PUT", url, "zipbytes"); code != 200 {
		t.Fatalf("put %d", code)
	}
	if v, ok, err := kv.Get(context.Background(), nil, []byte("gcs://_ray_pkg_abc.zip")); err != nil || !ok || string(v) != "zipbytes" {
		t.Fatalf("kv %q %v", v, ok)
	}
	if code, _ := do(t, "GET", url, ""); code != 200 {
		t.Fatalf("get after put %d", code)
	}
	if code, _ := do(t, "PUT", url, strings.Repeat("x", 2<<10)); code != 413 {
		t.Fatalf("oversized put %d", code)
	}
	for _, bad := range []string{"/api/packages/s3/x.zip", "/api/packages/gcs", "/api/packages/gcs/"} {
		if code, _ := do(t, "GET", srv.URL+bad, ""); code != 400 {
			t.Errorf("%s: %d", bad, code)
		}
	}
}

func TestSubmitInfoLogsStopDelete(t *testing.T) {
	srv, _ := testServer(t)
	code, body := do(t, "POST", srv.URL+"/api/jobs/", `{"entrypoint": "echo hello", "runtime_env": {}, "metadata": {"a": "b"}, "submission_id": null}`)
	if code != 200 || keys(t, body) != "job_id,submission_id" {
		t.Fatalf("submit %d %s", code, body)
	}
	var sub map[string]string
	json.Unmarshal([]byte(body), &sub)
	sid := sub["submission_id"]
	if sub["job_id"] != sid || !strings.HasPrefix(sid, "raysubmit_") {
		t.Fatalf("%s", body)
	}
	// The tail follows the job to its end and closes normally.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, strings.Replace(srv.URL, "http", "ws", 1)+"/api/jobs/"+sid+"/logs/tail", nil)
	if err != nil {
		t.Fatal(err)
	}
	var got strings.Builder
	for {
		typ, data, err := c.Read(ctx)
		if err != nil {
			if websocket.CloseStatus(err) != websocket.StatusNormalClosure {
				t.Fatalf("tail ended with %v", err)
			}
			break
		}
		if typ != websocket.MessageText {
			t.Fatalf("frame type %v", typ)
		}
		got.WriteString(string(data))
	}
	if !strings.HasSuffix(got.String(), "\nhello\n") {
		t.Fatalf("tail %q", got.String())
	}
	for _, path := range []string{"/api/jobs/" + sid, "/api/jobs/" + sid + "/"} {
		code, body = do(t, "GET", srv.URL+path, "")
		var d map[string]any
		json.Unmarshal([]byte(body), &d)
		if code != 200 || d["status"] != "SUCCEEDED" || d["type"] != "SUBMISSION" || d["driver_exit_code"] != 0.0 || d["entrypoint"] != "echo hello" {
			t.Fatalf("%s: %d %s", path, code, body)
		}
	}
	code, body = do(t, "GET", srv.URL+"/api/jobs/"+sid+"/logs", "")
	if code != 200 || keys(t, body) != "logs" || !strings.Contains(body, `hello\n`) {
		t.Fatalf("logs %d %s", code, body)
	}
	code, body = do(t, "GET", srv.URL+"/api/jobs", "")
	if code != 200 || !strings.HasPrefix(body, "[{") || !strings.Contains(body, sid) {
		t.Fatalf("list %d %s", code, body)
	}
	if code, body = do(t, "POST", srv.URL+"/api/jobs/"+sid+"/stop", ""); code != 200 || body != `{"stopped":false}` {
		t.Fatalf("stop %d %s", code, body)
	}
	if code, body = do(t, "DELETE", srv.URL+"/api/jobs/"+sid, ""); code != 200 || body != `{"deleted":true}` {
		t.Fatalf("delete %d %s", code, body)
	}
	if code, body = do(t, "GET", srv.URL+"/api/jobs/"+sid, ""); code != 404 || body != "Job "+sid+" does not exist" {
		t.Fatalf("after delete %d %s", code, body)
	}
}

func TestBadRequestsGetRayErrors(t *testing.T) {
	srv, _ := testServer(t)
	for _, tc := range []struct {
		body string
		code int
		want string
	}{
		{`{"entrypoint": `, 400, "not a JSON object"},
		{`[1]`, 400, "not a JSON object"},
		{`null`, 400, "must be a JSON object"},
		{`{}`, 400, "missing 1 required positional argument: 'entrypoint'"},
		{`{"entrypoint": 3}`, 400, "entrypoint must be a string, got <class 'int'>"},
		{`{"entrypoint": "x", "bogus": 1}`, 400, "unexpected keyword argument 'bogus'"},
		{`{"entrypoint": "x", "metadata": {"a": 1}}`, 400, "metadata values must be strings"},
		{`{"entrypoint": "x", "runtime_env": []}`, 400, "runtime_env must be a dict, got <class 'list'>"},
		{`{"entrypoint": "x", "entrypoint_num_cpus": "1"}`, 400, "entrypoint_num_cpus must be a number"},
		{`{"entrypoint": "x", "entrypoint_memory": 1.5}`, 400, "entrypoint_memory must be an integer, got <class 'float'>"},
		{`{"entrypoint": "x", "entrypoint_resources": {"a": "b"}}`, 400, "entrypoint_resources values must be numbers"},
		{`{"entrypoint": "x", "entrypoint_num_gpus": -1}`, 400, "must not be negative"},
		{`{"entrypoint": "x", "submission_id": "a/b"}`, 400, "without slashes"},
	} {
		code, body := do(t, "POST", srv.URL+"/api/jobs/", tc.body)
		if code != tc.code || !strings.Contains(body, tc.want) {
			t.Errorf("%s: %d %q", tc.body, code, body)
		}
	}
	// Duplicate submission ids are a 500, as stock answers.
	do(t, "POST", srv.URL+"/api/jobs/", `{"entrypoint": "true", "submission_id": "dup"}`)
	if code, body := do(t, "POST", srv.URL+"/api/jobs/", `{"entrypoint": "true", "submission_id": "dup"}`); code != 500 ||
		body != "Job with submission_id dup already exists. Please use a different submission_id." {
		t.Errorf("duplicate: %d %q", code, body)
	}
	for _, tc := range []struct{ method, path string }{
		{"GET", "/api/jobs/nope"}, {"GET", "/api/jobs/nope/logs"}, {"POST", "/api/jobs/nope/stop"},
		{"DELETE", "/api/jobs/nope"}, {"GET", "/api/jobs/nope/logs/tail"},
	} {
		if code, body := do(t, tc.method, srv.URL+tc.path, ""); code != 404 || body != "Job nope does not exist" {
			t.Errorf("%s %s: %d %q", tc.method, tc.path, code, body)
		}
	}
	if code, _ := do(t, "PUT", srv.URL+"/api/jobs/", "{}"); code != 405 {
		t.Errorf("PUT /api/jobs/: %d", code)
	}
	// And the server still serves.
	if code, _ := do(t, "GET", srv.URL+"/api/version", ""); code != 200 {
		t.Fatal("server down after bad requests")
	}
}

func TestBrowserRequestsSeeRedactedEnvVars(t *testing.T) {
	srv, _ := testServer(t)
	_, body := do(t, "POST", srv.URL+"/api/jobs/", `{"entrypoint": "true", "runtime_env": {"env_vars": {"TOKEN": "secret"}}}`)
	var sub map[string]string
	json.Unmarshal([]byte(body), &sub)
	req, _ := http.NewRequest("GET", srv.URL+"/api/jobs/"+sub["submission_id"], nil)
	req.Header.Set("User-Agent", "Mozilla/5.0")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.Contains(string(b), "secret") || !strings.Contains(string(b), `"TOKEN":"<redacted>"`) {
		t.Fatalf("%s", b)
	}
	if _, body := do(t, "GET", srv.URL+"/api/jobs/"+sub["submission_id"], ""); !strings.Contains(body, "secret") {
		t.Fatalf("the CLI's view lost the value: %s", body)
	}
}

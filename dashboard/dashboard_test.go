package dashboard

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestHandlerServesPageAndAssetsOnly(t *testing.T) {
	h := Handler()
	cases := []struct {
		method, path string
		code         int
		contains     string
	}{
		{"GET", "/", 200, "<title>gray dashboard</title>"},
		{"GET", "/index.html", 200, "/static/app.js"},
		{"GET", "/static/app.js", 200, "textContent"},
		{"GET", "/static/app.css", 200, "--accent"},
		{"HEAD", "/", 200, ""},
		{"GET", "/static/", 404, ""},
		{"GET", "/static/missing.js", 404, ""},
		{"GET", "/api/unknown", 404, ""},
		{"GET", "/static/../dashboard.go", 404, ""},
		{"POST", "/", 405, ""},
		{"DELETE", "/static/app.js", 405, ""},
	}
	for _, c := range cases {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(c.method, c.path, nil))
		if rec.Code != c.code {
			t.Errorf("%s %s: code %d, want %d", c.method, c.path, rec.Code, c.code)
			continue
		}
		body, _ := io.ReadAll(rec.Body)
		if c.contains != "" && !strings.Contains(string(body), c.contains) {
			t.Errorf("%s %s: body lacks %q", c.method, c.path, c.contains)
		}
	}
}

func TestPageForbidsForeignOrigins(t *testing.T) {
	rec := httptest.NewRecorder()
	Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	got := rec.Header().Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'self'", "script-src 'self'", "frame-ancestors 'none'"} {
		if !strings.Contains(got, want) {
			t.Errorf("CSP %q lacks %q", got, want)
		}
	}
	if rec.Header().Get("X-Content-Type-Options") != "nosniff" {
		t.Error("no nosniff header")
	}
}

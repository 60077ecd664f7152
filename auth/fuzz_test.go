package auth

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
)

// FuzzParseToken: no input panics, and whatever parses has the token shape.
func FuzzParseToken(f *testing.F) {
	tok, _, _, _ := newToken()
	for _, s := range []string{tok, "", "gray_", "Bearer " + tok, tok + "\x00", "gray_zzzzzzzzzzzzzzzz_" + tok[22:]} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, _, err := ParseToken(s)
		if err == nil && (len(id) != idLen || ValidTokenID(id) != nil) {
			t.Fatalf("ParseToken(%q) accepted id %q", s, id)
		}
	})
}

// FuzzMiddleware drives the middleware with arbitrary headers, cookies,
// methods and query strings: it never panics, never lets a request without
// a valid token reach a private handler, and answers only 200/401/403/405.
func FuzzMiddleware(f *testing.F) {
	a, _ := New(Token, NewMemStore())
	good, _, _ := a.Create("alice", false, "")
	f.Add("GET", "/api/gray/billing", "account=alice&micro_usd=5", "Bearer "+good, "", "", "")
	f.Add("POST", "/api/gray/billing/deposit", "account=%00&micro_usd=-1", "Bearer x", "x", good, "http://evil")
	f.Add("GET", "/static/../api/x", "", "", "", "", "")
	f.Add("OPTIONS", "/", "a=%zz", "bearer  "+good+" ", "", "", "")
	reached := false
	h := a.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached = true
		_ = r.URL.Query()
		w.WriteHeader(http.StatusOK)
	}), nil)
	f.Fuzz(func(t *testing.T, method, path, rawQuery, authz, xray, cookie, origin string) {
		if !validMethod(method) {
			method = "GET"
		}
		u := &url.URL{Path: "/" + path, RawQuery: rawQuery}
		r := httptest.NewRequest(method, "/", nil)
		r.URL = u
		r.RequestURI = u.RequestURI()
		setIfValid(r, "Authorization", authz)
		setIfValid(r, "X-Ray-Authorization", xray)
		setIfValid(r, "Origin", origin)
		if cookie != "" && validHeader(cookie) {
			r.Header.Set("Cookie", CookieName+"="+cookie)
		}
		reached = false
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		switch w.Code {
		case 200, 401, 403, 405:
		default:
			t.Fatalf("code %d", w.Code)
		}
		if reached && !IsPublic(r.URL.Path) {
			tok, _ := FromRequest(r)
			if _, err := a.Authenticate(tok); err != nil {
				t.Fatalf("private path %q reached without a valid token", r.URL.Path)
			}
		}
	})
}

func validMethod(m string) bool {
	if m == "" {
		return false
	}
	for _, c := range m {
		if c < 'A' || c > 'Z' {
			return false
		}
	}
	return true
}

func validHeader(v string) bool {
	for i := 0; i < len(v); i++ {
		if v[i] < 0x20 || v[i] == 0x7f {
			return false
		}
	}
	return true
}

func setIfValid(r *http.Request, k, v string) {
	if v != "" && validHeader(v) {
		r.Header.Set(k, v)
	}
}

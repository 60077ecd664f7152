package auth

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func newTokenAuth(t *testing.T) *Authenticator {
	t.Helper()
	a, err := New(Token, NewMemStore())
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestParseToken(t *testing.T) {
	tok, id, hash, err := newToken()
	if err != nil {
		t.Fatal(err)
	}
	gotID, gotHash, err := ParseToken("  " + tok + "\n")
	if err != nil || gotID != id || gotHash != hash {
		t.Fatalf("ParseToken(own token) = %q, %v; want %q", gotID, err, id)
	}
	bad := []string{
		"", "gray_", "secret123", strings.ToUpper(tok), tok[:len(tok)-1], tok + "0",
		strings.Replace(tok, "_", "-", 1), "ray_" + tok[4:], tok[:len(tok)-1] + "g",
		strings.Replace(tok, tok[len(tokenPrefix)+idLen:len(tokenPrefix)+idLen+1], "x", 1),
	}
	for _, b := range bad {
		if _, _, err := ParseToken(b); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseToken(%q) = %v, want ErrInvalid", b, err)
		}
	}
}

func TestFromAuthorization(t *testing.T) {
	for _, tt := range []struct {
		in, tok string
		ok      bool
	}{
		{"Bearer abc", "abc", true},
		{"bearer  abc ", "abc", true},
		{"BEARER abc", "abc", true},
		{"Basic abc", "", false},
		{"Bearer", "", false},
		{"Bearer   ", "", false},
		{"abc", "", false},
		{"", "", false},
	} {
		tok, ok := FromAuthorization(tt.in)
		if tok != tt.tok || ok != tt.ok {
			t.Errorf("FromAuthorization(%q) = %q, %v; want %q, %v", tt.in, tok, ok, tt.tok, tt.ok)
		}
	}
}

func TestAuthenticate(t *testing.T) {
	a := newTokenAuth(t)
	tok, info, err := a.Create("alice", false, "")
	if err != nil {
		t.Fatal(err)
	}
	other, _, _ := a.Create("bob", false, "")
	id, err := a.Authenticate(tok)
	if err != nil || id.Account != "alice" || id.Operator || id.TokenID != info.ID {
		t.Fatalf("Authenticate(alice) = %+v, %v", id, err)
	}
	// The right id with another secret: invalid.
	forged := tok[:len(tokenPrefix)+idLen+1] + other[len(tokenPrefix)+idLen+1:]
	for _, tt := range []struct {
		tok  string
		want error
	}{
		{"", ErrMissing},
		{"gray_0000000000000000_" + strings.Repeat("0", 64), ErrInvalid},
		{forged, ErrInvalid},
		{"nonsense", ErrInvalid},
	} {
		if _, err := a.Authenticate(tt.tok); !errors.Is(err, tt.want) {
			t.Errorf("Authenticate(%q) = %v, want %v", tt.tok, err, tt.want)
		}
	}
	if _, err := a.Revoke(info.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Authenticate(tok); !errors.Is(err, ErrInvalid) {
		t.Fatalf("revoked token authenticates: %v", err)
	}
	if _, err := a.Revoke("0123456789abcdef"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Revoke(unknown) = %v", err)
	}
	if _, err := a.Revoke("../x"); !errors.Is(err, ErrBadInput) {
		t.Fatalf("Revoke(bad id) = %v", err)
	}
	list, _ := a.List()
	if len(list) != 2 || list[0].Account != "alice" || list[0].Revoked.IsZero() {
		t.Fatalf("List = %+v", list)
	}
}

func TestCreateRefusesBadAccounts(t *testing.T) {
	a := newTokenAuth(t)
	for _, acct := range []string{"", "provider:x", "escrow:1", ".hidden", "a b", strings.Repeat("a", 65), "ü"} {
		if _, _, err := a.Create(acct, false, ""); !errors.Is(err, ErrBadInput) {
			t.Errorf("Create(%q) = %v, want ErrBadInput", acct, err)
		}
	}
}

func TestDisabledIsDefaultAccount(t *testing.T) {
	a, _ := New(Disabled, nil)
	id, err := a.Authenticate("")
	if err != nil || id.Account != DefaultAccount || id.Operator {
		t.Fatalf("disabled Authenticate = %+v, %v", id, err)
	}
}

func TestBoltStoreKeepsHashesOnly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.db")
	s, err := OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := New(Token, s)
	tok, _, err := a.Create("alice", false, "")
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	raw, _ := os.ReadFile(path)
	secret := tok[len(tokenPrefix)+idLen+1:]
	if strings.Contains(string(raw), secret) {
		t.Fatal("the token secret is stored in clear")
	}
	s, err = OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a, _ = New(Token, s)
	if id, err := a.Authenticate(tok); err != nil || id.Account != "alice" {
		t.Fatalf("after reopen: %+v, %v", id, err)
	}
}

func TestEnsureOperatorToken(t *testing.T) {
	a := newTokenAuth(t)
	path := filepath.Join(t.TempDir(), OperatorTokenFile)
	tok, err := a.EnsureOperatorToken(path)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(path)
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("operator token mode %v", st.Mode().Perm())
	}
	again, _ := a.EnsureOperatorToken(path)
	if again != tok {
		t.Fatal("a second start minted another operator token")
	}
	if id, err := a.Authenticate(tok); err != nil || !id.Operator {
		t.Fatalf("operator token: %+v, %v", id, err)
	}
}

func TestWorkerCredential(t *testing.T) {
	k1, k2 := NodeWorkerKey("secret", "node1"), NodeWorkerKey("secret", "node2")
	c := WorkerCredential(k1, "w1")
	for _, tt := range []struct {
		key        []byte
		id, cred   string
		wantAccept bool
	}{
		{k1, "w1", c, true},
		{k2, "w1", c, false},
		{k1, "w2", c, false},
		{k1, "w1", "", false},
		{nil, "w1", WorkerCredential(nil, "w1"), false},
		{NodeWorkerKey("other", "node1"), "w1", c, false},
	} {
		if got := CheckWorkerCredential(tt.key, tt.id, tt.cred); got != tt.wantAccept {
			t.Errorf("CheckWorkerCredential(%s, %q) = %v", tt.id, tt.cred, got)
		}
	}
}

func TestMiddleware(t *testing.T) {
	a := newTokenAuth(t)
	user, _, _ := a.Create("alice", false, "")
	op, _, _ := a.Create("ops", true, "")
	seen := ""
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := FromContext(r.Context())
		seen = ""
		if ok {
			seen = id.Account
		}
		w.WriteHeader(http.StatusOK)
	})
	mux := http.NewServeMux()
	mux.Handle("/", next)
	mux.Handle("/op", RequireOperator(next))
	h := a.Middleware(mux, nil)
	for _, tt := range []struct {
		name, method, path string
		header             map[string]string
		cookie             string
		code               int
		account            string
	}{
		{"missing", "GET", "/api/x", nil, "", 401, ""},
		{"bad", "GET", "/api/x", map[string]string{"Authorization": "Bearer nope"}, "", 403, ""},
		{"not bearer", "GET", "/api/x", map[string]string{"Authorization": "Basic " + user}, "", 403, ""},
		{"header", "GET", "/api/x", map[string]string{"Authorization": "Bearer " + user}, "", 200, "alice"},
		{"x-ray header", "GET", "/api/x", map[string]string{"X-Ray-Authorization": "Bearer " + user}, "", 200, "alice"},
		{"cookie", "GET", "/api/x", nil, user, 200, "alice"},
		{"authorization wins", "GET", "/api/x", map[string]string{"Authorization": "Bearer bad", "X-Ray-Authorization": "Bearer " + user}, "", 403, ""},
		{"public", "GET", "/api/authentication_mode", nil, "", 200, ""},
		{"public static", "GET", "/static/app.js", nil, "", 200, ""},
		{"public with token", "GET", "/-/healthz", map[string]string{"Authorization": "Bearer " + user}, "", 200, "alice"},
		{"user not operator", "POST", "/op", map[string]string{"Authorization": "Bearer " + user}, "", 403, ""},
		{"operator", "POST", "/op", map[string]string{"Authorization": "Bearer " + op}, "", 200, "ops"},
		{"browser post", "POST", "/op", map[string]string{"Authorization": "Bearer " + op, "Origin": "http://x"}, "", 405, ""},
		{"browser ua post", "PUT", "/api/x", map[string]string{"User-Agent": "Mozilla/5.0"}, "", 405, ""},
		{"browser get", "GET", "/api/x", map[string]string{"Authorization": "Bearer " + user, "Sec-Fetch-Mode": "cors"}, "", 200, "alice"},
		{"browser authenticate", "POST", "/api/authenticate", map[string]string{"Origin": "http://x"}, "", 200, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(tt.method, tt.path, nil)
			for k, v := range tt.header {
				r.Header.Set(k, v)
			}
			if tt.cookie != "" {
				r.AddCookie(&http.Cookie{Name: CookieName, Value: tt.cookie})
			}
			w := httptest.NewRecorder()
			seen = "-"
			h.ServeHTTP(w, r)
			if w.Code != tt.code {
				t.Fatalf("code %d, want %d (%s)", w.Code, tt.code, w.Body.String())
			}
			if tt.code == 200 && seen != tt.account {
				t.Fatalf("identity %q, want %q", seen, tt.account)
			}
			if tt.code == 401 && !strings.Contains(w.Body.String(), MsgMissing) || tt.code == 403 && tt.path == "/api/x" && !strings.Contains(w.Body.String(), MsgInvalid) {
				t.Fatalf("body %q", w.Body.String())
			}
		})
	}
}

func TestDisabledMiddlewareOperatorFromLoopbackOnly(t *testing.T) {
	a, _ := New(Disabled, nil)
	var got Identity
	h := a.Middleware(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { got, _ = FromContext(r.Context()) }), nil)
	for addr, op := range map[string]bool{"127.0.0.1:5000": true, "[::1]:5000": true, "10.0.0.2:5000": false} {
		r := httptest.NewRequest("GET", "/api/gray/billing", nil)
		r.RemoteAddr = addr
		h.ServeHTTP(httptest.NewRecorder(), r)
		if got.Account != DefaultAccount || got.Operator != op {
			t.Errorf("%s: %+v, want operator=%v", addr, got, op)
		}
	}
}

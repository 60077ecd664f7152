package auth

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"
)

// Messages of Ray's dashboard for a refused request.
const (
	MsgMissing = "Unauthorized: Missing authentication token"
	MsgInvalid = "Forbidden: Invalid authentication token"
	MsgBrowser = "Method Not Allowed: browser requests may only read (GET, HEAD, OPTIONS)"
)

// publicExact and publicPrefixes need no token, as on Ray's dashboard.
var publicExact = map[string]bool{
	"/": true, "/favicon.ico": true, "/api/authentication_mode": true, "/api/authenticate": true,
	"/api/healthz": true, "/api/gcs_healthz": true, "/api/local_raylet_healthz": true, "/-/healthz": true,
}

var publicPrefixes = []string{"/static/"}

// IsPublic reports whether a path needs no token.
func IsPublic(path string) bool {
	if publicExact[path] {
		return true
	}
	for _, p := range publicPrefixes {
		if strings.HasPrefix(path, p) {
			return true
		}
	}
	return false
}

// LooksLikeBrowser is Ray's test for a request a browser sent: a Mozilla
// User-Agent, or a Referer, Origin, Sec-Fetch-* or Access-Control-Request-*
// header. The CLI and SDKs send none of these.
func LooksLikeBrowser(r *http.Request) bool {
	if strings.HasPrefix(r.Header.Get("User-Agent"), "Mozilla") {
		return true
	}
	for k := range r.Header {
		k = http.CanonicalHeaderKey(k)
		if k == "Referer" || k == "Origin" || strings.HasPrefix(k, "Sec-Fetch-") || strings.HasPrefix(k, "Access-Control-Request-") {
			return true
		}
	}
	return false
}

func readOnly(method string) bool {
	return method == http.MethodGet || method == http.MethodHead || method == http.MethodOptions
}

// IsLoopback reports whether a RemoteAddr is a loopback peer.
func IsLoopback(remoteAddr string) bool {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Middleware authenticates every request and puts its Identity in the
// request context (FromContext). Public paths pass without a token (with
// the identity when a valid one is given). In Disabled mode everyone is
// account "default", an operator only from a loopback peer.
func (a *Authenticator) Middleware(next http.Handler, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.Default()
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if LooksLikeBrowser(r) && !readOnly(r.Method) && r.URL.Path != "/api/authenticate" {
			http.Error(w, MsgBrowser, http.StatusMethodNotAllowed)
			return
		}
		if !a.Enabled() {
			id := Identity{Account: DefaultAccount, Operator: IsLoopback(r.RemoteAddr)}
			next.ServeHTTP(w, r.WithContext(NewContext(r.Context(), id)))
			return
		}
		tok, present := FromRequest(r)
		id, err := a.Authenticate(tok)
		if IsPublic(r.URL.Path) {
			if err == nil {
				r = r.WithContext(NewContext(r.Context(), id))
			}
			next.ServeHTTP(w, r)
			return
		}
		switch {
		case !present:
			http.Error(w, MsgMissing, http.StatusUnauthorized)
			return
		case errors.Is(err, ErrMissing), errors.Is(err, ErrInvalid):
			http.Error(w, MsgInvalid, http.StatusForbidden)
			return
		case err != nil:
			log.Warn("auth: token check failed", "err", err)
			http.Error(w, "token check failed", http.StatusInternalServerError)
			return
		}
		next.ServeHTTP(w, r.WithContext(NewContext(r.Context(), id)))
	})
}

// RequireOperator refuses (403) a request whose identity is not an operator.
func RequireOperator(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if id, ok := FromContext(r.Context()); !ok || !id.Operator {
			http.Error(w, "Forbidden: "+ErrForbidden.Error(), http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// ModeHandler answers GET /api/authentication_mode as Ray's dashboard does.
func (a *Authenticator) ModeHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"authentication_mode": string(a.Mode())})
	})
}

// AuthenticateHandler answers POST /api/authenticate: a valid token in the
// Authorization header becomes the HttpOnly cookie browsers send later.
func (a *Authenticator) AuthenticateHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		if !a.Enabled() {
			w.WriteHeader(http.StatusOK)
			return
		}
		tok, present := FromAuthorization(r.Header.Get(HeaderAuthorization))
		if !present {
			http.Error(w, MsgMissing, http.StatusUnauthorized)
			return
		}
		if _, err := a.Authenticate(tok); err != nil {
			http.Error(w, MsgInvalid, http.StatusForbidden)
			return
		}
		http.SetCookie(w, &http.Cookie{Name: CookieName, Value: tok, Path: "/", HttpOnly: true,
			SameSite: http.SameSiteStrictMode, MaxAge: 30 * 24 * 3600, Secure: r.TLS != nil})
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"message": "Successfully authenticated"}`))
	})
}

// Package dashboard serves gray's web dashboard: one page for people (nodes
// with their GPUs, jobs and their logs, actors, tasks, placement groups,
// billing) that reads the head's own HTTP APIs from the browser. Its assets
// are embedded in the binary; nothing is fetched from a CDN.
package dashboard

import (
	"embed"
	"io/fs"
	"net/http"
	"strings"
)

//go:embed assets
var assets embed.FS

// Paths the dashboard serves: the page itself and its static files. They are
// public, as Ray's dashboard's are: the page asks for a token when the APIs
// it calls refuse it.
const (
	PagePath   = "/"
	StaticPath = "/static/"
)

// csp keeps the page to its own origin: scripts, styles, API calls and the
// log WebSocket.
const csp = "default-src 'self'; connect-src 'self'; img-src 'self' data:; " +
	"style-src 'self'; script-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

// Handler serves the page at "/" and its assets under "/static/"; any other
// path is 404, so that it can be mounted as a mux's catch-all without hiding
// unknown API paths.
func Handler() http.Handler {
	sub, err := fs.Sub(assets, "assets")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	files := http.FileServer(http.FS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		switch {
		case r.URL.Path == PagePath || r.URL.Path == "/index.html":
			page, err := fs.ReadFile(sub, "index.html")
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			h := w.Header()
			h.Set("Content-Type", "text/html; charset=utf-8")
			h.Set("Content-Security-Policy", csp)
			h.Set("X-Content-Type-Options", "nosniff")
			h.Set("Cache-Control", "no-cache")
			_, _ = w.Write(page)
		case strings.HasPrefix(r.URL.Path, StaticPath) && !strings.HasSuffix(r.URL.Path, "/"):
			w.Header().Set("X-Content-Type-Options", "nosniff")
			w.Header().Set("Cache-Control", "no-cache")
			files.ServeHTTP(w, r)
		default:
			http.NotFound(w, r)
		}
	})
}

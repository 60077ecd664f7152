package httpapi

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// packages serves GET (exists?) and PUT (upload) of a runtime_env package
// at /api/packages/<protocol>/<name>; the KV key is the full URI.
func (a *API) packages(w http.ResponseWriter, r *http.Request, rest string) {
	protocol, name, ok := strings.Cut(rest, "/")
	if !ok || name == "" || strings.ContainsAny(name, "/\\") || name == "." || name == ".." {
		writeText(w, http.StatusBadRequest, fmt.Sprintf("bad package path %q: want /api/packages/gcs/<name>", r.URL.Path))
		return
	}
	if protocol != "gcs" {
		writeText(w, http.StatusBadRequest, fmt.Sprintf("gray stores gcs:// packages only, not %s://", protocol))
		return
	}
	uri := []byte(protocol + "://" + name)
	var ns []byte
	if a.cfg.PackageNamespace != nil {
		ns = a.cfg.PackageNamespace(r.Context())
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		exists, err := a.cfg.KV.Exists(r.Context(), ns, uri)
		if err != nil {
			writeText(w, http.StatusServiceUnavailable, "package store: "+err.Error())
			return
		}
		if !exists {
			writeText(w, http.StatusNotFound, fmt.Sprintf("Package %s does not exist", uri))
			return
		}
		w.WriteHeader(http.StatusOK)
	case http.MethodPut:
		data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.cfg.MaxPackageBytes))
		if err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				writeText(w, http.StatusRequestEntityTooLarge,
					fmt.Sprintf("Maximum request body size %d exceeded: package %s is too large", a.cfg.MaxPackageBytes, uri))
				return
			}
			writeText(w, http.StatusBadRequest, "reading the package: "+err.Error())
			return
		}
		if _, err := a.cfg.KV.Put(r.Context(), ns, uri, data, true); err != nil {
			writeText(w, http.StatusServiceUnavailable, "package store: "+err.Error())
			return
		}
		a.log.Info("package uploaded", "uri", string(uri), "bytes", len(data))
		w.WriteHeader(http.StatusOK)
	default:
		methodNotAllowed(w, "GET, PUT")
	}
}

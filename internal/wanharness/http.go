package wanharness

import (
	"encoding/json"
	"errors"
	"net/http"
)

// LinkInfo is what GET /links and the startup lines report of a link.
type LinkInfo struct {
	Name string `json:"name"`
	UDP  string `json:"udp,omitempty"`
	TCP  string `json:"tcp,omitempty"`
	// Gossip is the address the provider advertises for gossip.
	Gossip string `json:"gossip,omitempty"`
	Spec   string `json:"spec,omitempty"`
}

// Info describes the link's proxies.
func (l *Link) Info() LinkInfo {
	return LinkInfo{Name: l.Spec.Name, UDP: l.UDPAddr(), TCP: l.TCPAddr(), Gossip: l.GossipAddr(), Spec: l.Spec.String()}
}

// Handler serves the control API (see the package documentation). Errors
// are JSON objects {"error": "..."}.
func (h *Harness) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /partition", func(w http.ResponseWriter, r *http.Request) { h.partition(w, r, true) })
	mux.HandleFunc("POST /heal", func(w http.ResponseWriter, r *http.Request) { h.partition(w, r, false) })
	mux.HandleFunc("GET /stats", h.stats)
	mux.HandleFunc("GET /links", func(w http.ResponseWriter, _ *http.Request) {
		out := make([]LinkInfo, 0, len(h.links))
		for _, l := range h.links {
			out = append(out, l.Info())
		}
		writeJSON(w, http.StatusOK, out)
	})
	return mux
}

// link finds the link named by the request's ?link=, or answers an error.
func (h *Harness) link(w http.ResponseWriter, r *http.Request) *Link {
	name := r.URL.Query().Get("link")
	if name == "" {
		writeError(w, http.StatusBadRequest, "give ?link=NAME")
		return nil
	}
	l := h.Link(name)
	if l == nil {
		writeError(w, http.StatusNotFound, "no link "+name)
	}
	return l
}

func (h *Harness) partition(w http.ResponseWriter, r *http.Request, on bool) {
	l := h.link(w, r)
	if l == nil {
		return
	}
	proto, err := ParseProto(r.URL.Query().Get("proto"))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := l.SetPartitioned(on, proto); err != nil {
		code := http.StatusInternalServerError
		if errors.Is(err, ErrNoProxy) {
			code = http.StatusBadRequest
		}
		writeError(w, code, err.Error())
		return
	}
	h.log.Info("control", "link", l.Spec.Name, "partitioned", on, "proto", string(proto))
	writeJSON(w, http.StatusOK, l.Stats())
}

func (h *Harness) stats(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Has("link") {
		if l := h.link(w, r); l != nil {
			writeJSON(w, http.StatusOK, map[string]LinkStats{l.Spec.Name: l.Stats()})
		}
		return
	}
	out := make(map[string]LinkStats, len(h.links))
	for _, l := range h.links {
		out[l.Spec.Name] = l.Stats()
	}
	writeJSON(w, http.StatusOK, out)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

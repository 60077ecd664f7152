package stateapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
)

// Source hands out snapshots of the tables it holds (an empty snapshot for
// a resource it does not hold).
type Source interface {
	Snapshot(ctx context.Context, r Resource) (Snapshot, error)
}

// SourceFunc adapts a function to Source.
type SourceFunc func(ctx context.Context, r Resource) (Snapshot, error)

// Snapshot calls f.
func (f SourceFunc) Snapshot(ctx context.Context, r Resource) (Snapshot, error) { return f(ctx, r) }

// Merge is one view over several sources: their rows side by side.
func Merge(srcs ...Source) Source {
	return SourceFunc(func(ctx context.Context, r Resource) (Snapshot, error) {
		var out Snapshot
		for _, s := range srcs {
			if s == nil {
				continue
			}
			snap, err := s.Snapshot(ctx, r)
			if err != nil {
				return Snapshot{}, err
			}
			out.Rows = append(out.Rows, snap.Rows...)
			out.Dropped += snap.Dropped
			out.Warnings = append(out.Warnings, snap.Warnings...)
		}
		return out, nil
	})
}

// maxInFlight is Ray's RAY_STATE_SERVER_MAX_HTTP_REQUEST default.
const maxInFlight = 100

// Prefix is where the handler is mounted.
const Prefix = "/api/v0/"

// Handler serves GET /api/v0/{resource} and /api/v0/{tasks,actors,objects}/summarize
// with Ray's reply envelope {"result", "msg", "data": {"result": ...}}.
func Handler(src Source, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.Default()
	}
	h := &handler{src: src, log: log.With("component", "stateapi"), slots: make(chan struct{}, maxInFlight)}
	return h
}

type handler struct {
	src   Source
	log   *slog.Logger
	slots chan struct{}
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		reply(w, http.StatusMethodNotAllowed, "only GET is served here", nil)
		return
	}
	select {
	case h.slots <- struct{}{}:
		defer func() { <-h.slots }()
	default:
		reply(w, http.StatusTooManyRequests, fmt.Sprintf("Max number of in-progress requests=%d reached.", maxInFlight), nil)
		return
	}
	path := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, Prefix), "/")
	name, op, _ := strings.Cut(path, "/")
	schema, ok := SchemaOf(Resource(name))
	if !ok || (op != "" && op != "summarize") {
		reply(w, http.StatusNotFound, fmt.Sprintf("%v: %s", ErrUnknownResource, r.URL.Path), nil)
		return
	}
	res, err := h.serve(r.Context(), schema, op == "summarize", r)
	if err != nil {
		status := http.StatusInternalServerError
		switch {
		case errors.Is(err, ErrBadQuery):
			status = http.StatusBadRequest
		case errors.Is(err, ErrUnknownResource):
			status = http.StatusNotFound
		default:
			h.log.Warn("state query failed", "path", r.URL.Path, "err", err)
		}
		reply(w, status, err.Error(), nil)
		return
	}
	reply(w, http.StatusOK, "", res)
}

func (h *handler) serve(ctx context.Context, s Schema, summarize bool, r *http.Request) (any, error) {
	q, err := ParseQuery(r.URL.Query())
	if err != nil {
		return nil, err
	}
	if summarize {
		if _, ok := summaryBy[s.Resource]; !ok {
			return nil, fmt.Errorf("%w: %s cannot be summarized", ErrUnknownResource, s.Resource)
		}
	}
	snap, err := h.src.Snapshot(ctx, s.Resource)
	if err != nil {
		return nil, err
	}
	if summarize {
		return Summarize(s, snap, q)
	}
	return List(s, snap, q)
}

// reply writes Ray's envelope; keys inside data stay snake_case.
func reply(w http.ResponseWriter, status int, msg string, result any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"result": status == http.StatusOK,
		"msg":    msg,
		"data":   map[string]any{"result": result},
	})
}

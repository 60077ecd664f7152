package head

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/gray-cluster/gray/auth"
	"github.com/gray-cluster/gray/billing/ledger"
	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/transport"
)

// AuthConfig is the head's trust setup: token authentication, TLS on the
// Ray Client and HTTP ports, and where /metrics is served.
type AuthConfig struct {
	// Mode is auth.Token or auth.Disabled ("" = Disabled).
	Mode auth.Mode
	// TLSCert and TLSKey are PEM files of the certificate the Ray Client
	// and HTTP ports serve; TLSAuto issues one from the pool CA instead.
	TLSCert, TLSKey string
	TLSAuto         bool
	// TLSNames are extra DNS names or IPs the auto certificate is valid for.
	TLSNames []string
	// MetricsAddr serves /metrics on its own listener, without a token
	// ("" keeps it on the status port, behind the token in token mode).
	MetricsAddr string
}

// TLSCAFile names the CA bundle clients should trust, written under the
// state dir when TLS is on (the pool CA, or the given certificate chain).
const TLSCAFile = "tls-ca.pem"

// stateDir is where the head keeps its CA, tokens and secrets.
func (h *Head) stateDir() string {
	if h.cfg.StateDir != "" {
		return h.cfg.StateDir
	}
	return filepath.Join(h.cfg.SessionDir, "state")
}

// startAuth opens the token store (token mode), makes sure the operator
// token exists and derives the pool secret workers' credentials use.
func (h *Head) startAuth() error {
	mode := h.cfg.Auth.Mode
	if mode == "" {
		mode = auth.Disabled
	}
	dir := h.stateDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("head: state dir: %w", err)
	}
	var store auth.Store
	if mode == auth.Token {
		s, err := auth.OpenBolt(filepath.Join(dir, "tokens.db"))
		if err != nil {
			return err
		}
		store = s
	}
	a, err := auth.New(mode, store)
	if err != nil {
		return err
	}
	h.auth = a
	if mode == auth.Token {
		if _, err := a.EnsureOperatorToken(h.OperatorTokenPath()); err != nil {
			return fmt.Errorf("head: operator token: %w", err)
		}
	}
	secret := h.cfg.JoinSecret
	if secret == "" && h.cfg.NodeAddr != "" {
		if secret, err = joinSecret(dir, ""); err != nil {
			return fmt.Errorf("head: join secret: %w", err)
		}
	}
	if secret == "" {
		buf := make([]byte, 32)
		if _, err := rand.Read(buf); err != nil {
			return err
		}
		secret = hex.EncodeToString(buf)
	}
	h.poolSecret = secret
	return nil
}

// AuthMode is the head's authentication mode.
func (h *Head) AuthMode() auth.Mode { return h.auth.Mode() }

// OperatorTokenPath is the operator token file (token mode).
func (h *Head) OperatorTokenPath() string {
	return filepath.Join(h.stateDir(), auth.OperatorTokenFile)
}

// workerKey is the worker credential key of a node.
func (h *Head) workerKey(node ids.NodeID) []byte {
	return auth.NodeWorkerKey(h.poolSecret, node.Hex())
}

// serverTLS returns the TLS config of the Ray Client and HTTP ports (nil:
// plain TCP) and writes the CA bundle clients trust.
func (h *Head) serverTLS() (*tls.Config, error) {
	c := h.cfg.Auth
	if !c.TLSAuto && c.TLSCert == "" && c.TLSKey == "" {
		return nil, nil
	}
	var cert tls.Certificate
	var caPEM []byte
	var err error
	switch {
	case c.TLSAuto:
		if c.TLSCert != "" || c.TLSKey != "" {
			return nil, errors.New("head: give --tls=auto or --tls-cert/--tls-key, not both")
		}
		ca, err := loadCA(h.stateDir())
		if err != nil {
			return nil, fmt.Errorf("head: pool CA: %w", err)
		}
		cert, err = ca.NewServerCert("gray head", h.tlsNames())
		if err != nil {
			return nil, err
		}
		caPEM = transport.EncodeCertPEM(ca.Cert)
	default:
		if c.TLSCert == "" || c.TLSKey == "" {
			return nil, errors.New("head: --tls-cert and --tls-key go together")
		}
		cert, err = tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("head: TLS certificate: %w", err)
		}
		caPEM, err = os.ReadFile(c.TLSCert)
		if err != nil {
			return nil, err
		}
	}
	if err := os.WriteFile(filepath.Join(h.stateDir(), TLSCAFile), caPEM, 0o644); err != nil {
		return nil, err
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		// The stock client always presents RAY_TLS_SERVER_CERT; identity
		// is the token, so any client certificate is accepted unverified.
		ClientAuth: tls.RequestClientCert,
		NextProtos: []string{"h2", "http/1.1"},
	}, nil
}

// tlsNames are the names and IPs the auto certificate covers.
func (h *Head) tlsNames() []string {
	names := []string{"localhost", "127.0.0.1", "::1", h.cfg.NodeIP}
	if host, _, err := net.SplitHostPort(h.cfg.ClientAddr); err == nil && host != "" && host != "0.0.0.0" && host != "::" {
		names = append(names, host)
	}
	if hn, err := os.Hostname(); err == nil {
		names = append(names, hn)
	}
	return append(names, h.cfg.Auth.TLSNames...)
}

// httpHandler wraps the status mux in the auth middleware and adds the
// authentication and token endpoints.
func (h *Head) httpHandler(mux *http.ServeMux) http.Handler {
	mux.Handle("/api/authentication_mode", h.auth.ModeHandler())
	mux.Handle("/api/authenticate", h.auth.AuthenticateHandler())
	mux.HandleFunc("/api/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("success")) })
	mux.HandleFunc("/-/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("success")) })
	mux.HandleFunc("/api/gray/whoami", func(w http.ResponseWriter, r *http.Request) {
		id, _ := auth.FromContext(r.Context())
		writeJSON(w, id)
	})
	mux.Handle("/api/gray/tokens", auth.RequireOperator(http.HandlerFunc(h.serveTokens)))
	mux.Handle("/api/gray/tokens/revoke", auth.RequireOperator(http.HandlerFunc(h.serveRevoke)))
	return h.auth.Middleware(mux, h.log)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// CreatedToken is the answer of a token creation: the token, shown once.
type CreatedToken struct {
	Token string `json:"token"`
	auth.TokenInfo
}

// serveTokens lists tokens (GET) or creates one (POST account=, operator=).
func (h *Head) serveTokens(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
		list, err := h.auth.List()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		writeJSON(w, list)
	case http.MethodPost:
		q := r.URL.Query()
		operator := q.Get("operator") == "true"
		tok, info, err := h.auth.Create(q.Get("account"), operator, q.Get("note"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		h.log.Info("token created", "id", info.ID, "account", info.Account, "operator", operator)
		writeJSON(w, CreatedToken{Token: tok, TokenInfo: info})
	default:
		http.Error(w, "GET or POST", http.StatusMethodNotAllowed)
	}
}

// serveRevoke revokes a token (POST id=).
func (h *Head) serveRevoke(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	info, err := h.auth.Revoke(r.URL.Query().Get("id"))
	switch {
	case errors.Is(err, auth.ErrNotFound):
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	case err != nil:
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	h.log.Info("token revoked", "id", info.ID, "account", info.Account)
	writeJSON(w, info)
}

// ownBalances is what a non-operator sees of the ledger: its account only.
func ownBalances(all map[string]int64, account string) map[string]int64 {
	key := ledger.Client(account)
	out := map[string]int64{}
	if v, ok := all[key]; ok {
		out[key] = v
	}
	return out
}

// startMetrics serves /metrics alone on its own address, without a token.
func (h *Head) startMetrics(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics endpoint: %w", err)
	}
	h.metricsLn = ln
	mux := http.NewServeMux()
	mux.Handle("/metrics", h.metricsHandler())
	h.metricsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = h.metricsSrv.Serve(ln) }()
	return nil
}

// MetricsAddr is the bound address of the separate metrics listener.
func (h *Head) MetricsAddr() string {
	if h.metricsLn == nil {
		return ""
	}
	return h.metricsLn.Addr().String()
}

// snapshotFor is the status as the request's identity may see it: an
// operator sees every session, a user only its own account's.
func (h *Head) snapshotFor(ctx context.Context) Status {
	st := h.Snapshot()
	if id, _ := auth.FromContext(ctx); !id.Operator {
		own := st.Sessions[:0]
		for _, s := range st.Sessions {
			if s.Account == id.Account {
				own = append(own, s)
			}
		}
		st.Sessions = own
	}
	return st
}

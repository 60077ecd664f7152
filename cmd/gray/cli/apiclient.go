package cli

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/gray-cluster/gray/auth"
	"github.com/gray-cluster/gray/head"
)

// clientFlags are the flags every command that talks to a head's HTTP port
// shares (persistent on the root command).
var clientFlags struct {
	tokenFile string
	caFile    string
}

func addClientFlags(root *cobra.Command) {
	f := root.PersistentFlags()
	f.StringVar(&clientFlags.tokenFile, "auth-token-file", "",
		"file holding the token to call the head with (default: $RAY_AUTH_TOKEN, $RAY_AUTH_TOKEN_PATH, then the operator token of a pool started on this machine)")
	f.StringVar(&clientFlags.caFile, "tls-ca", "", "CA bundle to verify a TLS head with (default: $RAY_TLS_CA_CERT, or the pool's own)")
}

// localPool is a head started on this machine: its status address, state
// dir and HTTP scheme, kept in a small file per status address.
type localPool struct {
	StatusAddr string `json:"status_addr"`
	StateDir   string `json:"state_dir"`
	Scheme     string `json:"scheme"`
}

func localPoolFile(statusAddr string) string {
	name := strings.NewReplacer(":", "_", "/", "_", "[", "", "]", "").Replace(statusAddr)
	return filepath.Join(filepath.Dir(pidFile()), "pools", name+".json")
}

// recordLocalPool notes a head for the CLI on this machine; the returned
// func removes the note.
func recordLocalPool(statusAddr, stateDir, scheme string) func() {
	if statusAddr == "" {
		return func() {}
	}
	path := localPoolFile(statusAddr)
	b, _ := json.Marshal(localPool{StatusAddr: statusAddr, StateDir: stateDir, Scheme: scheme})
	if os.MkdirAll(filepath.Dir(path), 0o755) != nil || os.WriteFile(path, b, 0o644) != nil {
		return func() {}
	}
	return func() { _ = os.Remove(path) }
}

func findLocalPool(addr string) (localPool, bool) {
	var p localPool
	b, err := os.ReadFile(localPoolFile(addr))
	if err != nil || json.Unmarshal(b, &p) != nil || p.StatusAddr != addr {
		return localPool{}, false
	}
	return p, true
}

// callerToken is the token the CLI calls with ("" for none).
func callerToken(pool localPool, isLocal bool) (string, error) {
	if clientFlags.tokenFile != "" {
		b, err := os.ReadFile(clientFlags.tokenFile)
		if err != nil {
			return "", err
		}
		return strings.TrimSpace(string(b)), nil
	}
	if t := strings.TrimSpace(os.Getenv("RAY_AUTH_TOKEN")); t != "" {
		return t, nil
	}
	if p := os.Getenv("RAY_AUTH_TOKEN_PATH"); p != "" {
		b, err := os.ReadFile(p)
		if err != nil {
			return "", err
		}
		return strings.TrimSpace(string(b)), nil
	}
	if isLocal {
		if b, err := os.ReadFile(filepath.Join(pool.StateDir, auth.OperatorTokenFile)); err == nil {
			return strings.TrimSpace(string(b)), nil
		}
	}
	return "", nil
}

// apiCall sends one request to a head's HTTP port, with the token and
// (for a TLS head) the CA it needs.
func apiCall(addr, method, path string, q url.Values, timeout time.Duration) ([]byte, error) {
	pool, isLocal := findLocalPool(addr)
	scheme := "http"
	if isLocal && pool.Scheme == "https" {
		scheme = "https"
	}
	client := &http.Client{Timeout: timeout}
	caFile := clientFlags.caFile
	if caFile == "" {
		caFile = os.Getenv("RAY_TLS_CA_CERT")
	}
	if caFile == "" && isLocal && scheme == "https" {
		caFile = filepath.Join(pool.StateDir, head.TLSCAFile)
	}
	if caFile != "" {
		scheme = "https"
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, err
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("no certificate in %s", caFile)
		}
		client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}
	}
	tok, err := callerToken(pool, isLocal)
	if err != nil {
		return nil, err
	}
	u := scheme + "://" + addr + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		return nil, err
	}
	if tok != "" {
		req.Header.Set(auth.HeaderAuthorization, "Bearer "+tok)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("no gray pool answers at %s: %w", addr, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if resp.StatusCode >= 300 {
		return nil, fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}

func getJSON(addr, path string, v any) error {
	body, err := apiCall(addr, http.MethodGet, path, nil, 5*time.Second)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("bad reply from %s: %w", path, err)
	}
	return nil
}

func post(addr, path string, q url.Values) error {
	_, err := apiCall(addr, http.MethodPost, path, q, 5*time.Minute)
	return err
}

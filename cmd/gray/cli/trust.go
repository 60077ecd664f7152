package cli

import (
	"fmt"
	"io"
	"net"
	"path/filepath"

	"github.com/spf13/pflag"

	"github.com/gray-cluster/gray/auth"
	"github.com/gray-cluster/gray/head"
)

func addTrustFlags(f *pflag.FlagSet, o *startFlags) {
	f.StringVar(&o.authMode, "auth-mode", "", "token or disabled: clients authenticate with tokens bound to accounts (head; default token unless --host is loopback)")
	f.StringVar(&o.tls, "tls", "", `"auto": serve the Ray Client and HTTP ports over TLS with a certificate from the pool CA (head)`)
	f.StringVar(&o.tlsCert, "tls-cert", "", "PEM certificate (chain) the Ray Client and HTTP ports serve TLS with (head)")
	f.StringVar(&o.tlsKey, "tls-key", "", "PEM private key of --tls-cert (head)")
	f.StringVar(&o.metricsAddr, "metrics-addr", "", "serve /metrics on this address, without a token (head; default: on the status port)")
}

// trustConfig reads the trust flags; the auth mode defaults to token on a
// head reachable from other hosts.
func trustConfig(o startFlags) (head.AuthConfig, error) {
	c := head.AuthConfig{TLSCert: o.tlsCert, TLSKey: o.tlsKey, MetricsAddr: o.metricsAddr}
	switch o.tls {
	case "":
	case "auto":
		c.TLSAuto = true
	default:
		return c, fmt.Errorf("--tls takes only \"auto\" (or give --tls-cert and --tls-key)")
	}
	if o.authMode == "" {
		c.Mode = auth.Token
		if ip := net.ParseIP(o.host); o.host == "localhost" || (ip != nil && ip.IsLoopback()) {
			c.Mode = auth.Disabled
		}
		return c, nil
	}
	m, err := auth.ParseMode(o.authMode)
	c.Mode = m
	return c, err
}

// printTrust says loudly how clients authenticate.
func printTrust(out io.Writer, h *head.Head, c head.AuthConfig, stateDir string) {
	if h.AuthMode() == auth.Token {
		fmt.Fprintf(out, "  Auth:         TOKEN — clients need RAY_AUTH_MODE=token and RAY_AUTH_TOKEN=<token from `gray token create --account NAME`>\n")
		fmt.Fprintf(out, "                operator token: %s (gray CLI on this machine uses it)\n", h.OperatorTokenPath())
	} else {
		fmt.Fprintf(out, "  Auth:         DISABLED — anyone who reaches the ports is account \"default\" (use --auth-mode token on a shared pool)\n")
	}
	if c.TLSAuto || c.TLSCert != "" {
		fmt.Fprintf(out, "  TLS:          on — clients set RAY_USE_TLS=1 RAY_TLS_CA_CERT=%s (and RAY_TLS_SERVER_CERT/KEY: any client cert)\n",
			filepath.Join(stateDir, head.TLSCAFile))
	}
	if a := h.MetricsAddr(); a != "" {
		fmt.Fprintf(out, "  Metrics:      http://%s/metrics (no token)\n", a)
	}
}

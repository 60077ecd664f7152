package cli

import (
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/spf13/pflag"

	"github.com/gray-cluster/gray/raylet"
	"github.com/gray-cluster/gray/sandbox"
)

// sandboxFlags are the worker sandbox's options (head and provider).
type sandboxFlags struct {
	mode   string
	devDir string
	shares []string
}

func (s *sandboxFlags) register(f *pflag.FlagSet) {
	f.StringVar(&s.mode, "sandbox", "on", `run workers in bubblewrap sandboxes with cgroup limits ("on", needs the bubblewrap package), or "off": workers then run as this user with full access to the machine (only for trusted single-user pools)`)
	f.StringVar(&s.devDir, "sandbox-dev-dir", "/dev", "where the GPU device nodes (nvidia<N>, nvidiactl, nvidia-uvm*) a sandboxed worker gets are found (tests point it at fake nodes)")
	f.StringArrayVar(&s.shares, "sandbox-share", nil, "host directory shared with every sandboxed worker at the same path, read-write (PATH) or read-only (PATH:ro); repeatable")
}

// config is the raylet's sandbox configuration (nil with --sandbox=off,
// announced loudly on out and in the log).
func (s *sandboxFlags) config(out io.Writer, log *slog.Logger) (*raylet.SandboxConfig, error) {
	switch s.mode {
	case "on":
	case "off":
		const msg = "WARNING: --sandbox=off: workers run as this user with full access to this machine " +
			"(its files, keys and processes). Use it only for a trusted single-user pool."
		fmt.Fprintln(out, msg)
		log.Warn("SANDBOX OFF: workers are not isolated from this machine")
		return nil, nil
	default:
		return nil, fmt.Errorf("--sandbox must be on or off, not %q", s.mode)
	}
	cfg := &raylet.SandboxConfig{DevDir: s.devDir}
	for _, v := range s.shares {
		sh, err := sandbox.ParseShare(v)
		if err != nil {
			return nil, fmt.Errorf("--sandbox-share: %w", err)
		}
		cfg.Shared = append(cfg.Shared, sh)
	}
	if home, err := os.UserHomeDir(); err == nil && home != "" {
		cfg.Protected = append(cfg.Protected, home)
	}
	return cfg, nil
}

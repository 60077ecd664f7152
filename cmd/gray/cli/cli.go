// Package cli holds gray's cobra commands: start, stop, status.
package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/gray-cluster/gray/head"
)

// pidFile records running pools for `gray stop`.
func pidFile() string { return filepath.Join(os.TempDir(), "gray", "gray.pid") }

// Root returns the gray command tree.
func Root() *cobra.Command {
	root := &cobra.Command{Use: "gray", Short: "A Ray-compatible GPU pool", SilenceUsage: true}
	root.AddCommand(startCmd(), stopCmd(), statusCmd(), benchCmd(), billingCmd(), gpuCheckCmd(), newLinkemuCmd(), newNativeGCSCmd(), newNativeNodeCmd(), tokenCmd())
	addClientFlags(root)
	return root
}

func recordPid(statusAddr string) {
	_ = os.MkdirAll(filepath.Dir(pidFile()), 0o755)
	line := fmt.Sprintf("%d %s\n", os.Getpid(), statusAddr)
	f, err := os.OpenFile(pidFile(), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err == nil {
		_, _ = f.WriteString(line)
		f.Close()
	}
}

func readPids() [][2]string {
	b, _ := os.ReadFile(pidFile())
	var out [][2]string
	for _, line := range strings.Split(string(b), "\n") {
		parts := strings.Fields(line)
		if len(parts) == 0 {
			continue
		}
		addr := ""
		if len(parts) > 1 {
			addr = parts[1]
		}
		out = append(out, [2]string{parts[0], addr})
	}
	return out
}

func forgetPid() {
	me := strconv.Itoa(os.Getpid())
	var keep []string
	for _, p := range readPids() {
		if p[0] != me {
			keep = append(keep, p[0]+" "+p[1])
		}
	}
	if len(keep) == 0 {
		_ = os.Remove(pidFile())
		return
	}
	_ = os.WriteFile(pidFile(), []byte(strings.Join(keep, "\n")+"\n"), 0o644)
}

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

func stopCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "stop",
		Short: "Stop the gray pools started on this machine",
		RunE: func(cmd *cobra.Command, _ []string) error {
			n := 0
			for _, p := range readPids() {
				pid, err := strconv.Atoi(p[0])
				if err != nil || !alive(pid) {
					continue
				}
				_ = syscall.Kill(pid, syscall.SIGTERM)
				deadline := time.Now().Add(10 * time.Second)
				for alive(pid) && time.Now().Before(deadline) {
					time.Sleep(100 * time.Millisecond)
				}
				if alive(pid) {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
				n++
			}
			_ = os.Remove(pidFile())
			fmt.Fprintf(cmd.OutOrStdout(), "Stopped %d gray process(es).\n", n)
			return nil
		},
	}
}

func statusCmd() *cobra.Command {
	var addr string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show nodes, resources and sessions of a running pool",
		RunE: func(cmd *cobra.Command, _ []string) error {
			var st head.Status
			if err := getJSON(statusAddr(addr), "/api/gray/status", &st); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return writeJSON(out, st)
			}
			fmt.Fprintf(out, "Ray Client address: ray://%s\n", st.ClientAddress)
			if st.NodeAddress != "" {
				fmt.Fprintf(out, "Provider address:   %s (QUIC)\n", st.NodeAddress)
			}
			fmt.Fprintf(out, "Nodes: %d\n", len(st.Nodes))
			for _, n := range st.Nodes {
				role := "provider"
				if n.Head {
					role = "head"
				}
				fmt.Fprintf(out, "  %s  %-8s %-8s %s", n.NodeID[:12], role, n.State, n.Address)
				if n.Region != "" {
					fmt.Fprintf(out, "  region=%s", n.Region)
				}
				if n.GPUs != "" {
					fmt.Fprintf(out, "  gpus=%s", n.GPUs)
				}
				if n.RTTms > 0 {
					fmt.Fprintf(out, "  rtt=%.1fms", n.RTTms)
				}
				fmt.Fprintln(out)
				keys := make([]string, 0, len(n.Total))
				for k := range n.Total {
					keys = append(keys, k)
				}
				sort.Strings(keys)
				for _, k := range keys {
					fmt.Fprintf(out, "    %-22s %s\n", k, usageLine(k, n.Total[k]-n.Available[k], n.Total[k]))
				}
				for _, g := range n.GPUDevices {
					fmt.Fprintln(out, "    "+gpuLine(g))
				}
			}
			fmt.Fprintf(out, "Sessions: %d\n", len(st.Sessions))
			for _, s := range st.Sessions {
				fmt.Fprintf(out, "  job %s  namespace %s\n", s.JobID, s.Namespace)
			}
			idle := 0
			for _, w := range st.Workers {
				if w.Idle {
					idle++
				}
			}
			fmt.Fprintf(out, "Workers: %d (%d idle)\n", len(st.Workers), idle)
			fmt.Fprintf(out, "Objects: %d (%s in memory", st.Objects, bytesHuman(float64(st.ObjectBytes)))
			if st.Spilled > 0 {
				fmt.Fprintf(out, ", %d spilled: %s", st.Spilled, bytesHuman(float64(st.SpilledBytes)))
			}
			fmt.Fprintln(out, ")")
			fmt.Fprintln(out, "Pending demands:")
			for _, l := range demandLines(st.Demands) {
				fmt.Fprintln(out, l)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&addr, "address", "", "status address of the pool (host:port)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// newLogger is the commands' logger: text on stderr, debug with --verbose.
func newLogger(verbose bool) *slog.Logger {
	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// writeJSON prints v indented, for the commands' --json.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

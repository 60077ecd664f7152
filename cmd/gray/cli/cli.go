// Package cli holds gray's cobra commands: start, stop, status.
package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
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
	root.AddCommand(startCmd(), stopCmd(), statusCmd(), benchCmd())
	return root
}

func startCmd() *cobra.Command {
	var (
		isHead          bool
		port            int
		host            string
		statusPort      int
		numCPUs, numGPU float64
		objStore        int64
		python          string
		block           bool
		prestart        int
		verbose         bool
		resources       string
		gpuMock         string
		idleTimeout     time.Duration
	)
	cmd := &cobra.Command{
		Use:   "start",
		Short: "Start a pool head with a local provider (--head)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !isHead {
				return fmt.Errorf("only `gray start --head` is available in this build (joining providers comes with the multi-node pool)")
			}
			level := slog.LevelInfo
			if verbose {
				level = slog.LevelDebug
			}
			logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			if python == "" {
				python = os.Getenv("GRAY_PYTHON")
			}
			res := map[string]float64{}
			if resources != "" {
				if err := json.Unmarshal([]byte(resources), &res); err != nil {
					return fmt.Errorf("--resources must be a JSON object of numbers: %w", err)
				}
			}
			statusAddr := ""
			if statusPort > 0 {
				statusAddr = fmt.Sprintf("%s:%d", host, statusPort)
			}
			h, err := head.New(head.Config{
				ClientAddr: fmt.Sprintf("%s:%d", host, port), StatusAddr: statusAddr, Python: python,
				NumCPUs: numCPUs, NumGPUs: numGPU, GPUMock: gpuMock, ObjectStoreMemory: objStore, Resources: res,
				PrestartWorkers: prestart, IdleWorkerTimeout: idleTimeout, Logger: logger,
			})
			if err != nil {
				return err
			}
			ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer cancel()
			if err := h.Start(ctx); err != nil {
				return err
			}
			defer h.Close()
			recordPid(statusAddr)
			defer forgetPid()
			fmt.Fprintf(cmd.OutOrStdout(), "gray pool is up.\n  Connect with: ray.init(\"ray://%s\")\n", h.ClientAddr())
			if statusAddr != "" {
				fmt.Fprintf(cmd.OutOrStdout(), "  Status:       gray status --address %s\n", statusAddr)
			}
			if !block {
				fmt.Fprintln(cmd.OutOrStdout(), "  Running in the foreground; stop with Ctrl-C or `gray stop`.")
			}
			<-ctx.Done()
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&isHead, "head", false, "start a head with a local provider")
	f.IntVar(&port, "port", 10001, "Ray Client port")
	f.StringVar(&host, "host", "127.0.0.1", "address to listen on")
	f.IntVar(&statusPort, "status-port", 8265, "HTTP status port (0 disables)")
	f.Float64Var(&numCPUs, "num-cpus", 0, "CPUs to offer (default: all cores)")
	f.Float64Var(&numGPU, "num-gpus", -1, "GPUs to offer (default: what NVML finds)")
	f.StringVar(&gpuMock, "gpu-mock", "", "offer a go-nvml mock machine's GPUs (dgxa100, dgxh100, dgxh200, dgxb200), for tests")
	f.Int64Var(&objStore, "object-store-memory", 0, "object store bytes (default 30% of RAM)")
	f.StringVar(&python, "python", "", "worker Python with ray==2.60.0 installed (default $GRAY_PYTHON or python3)")
	f.BoolVar(&block, "block", false, "block in the foreground (always true; accepted for Ray compatibility)")
	f.IntVar(&prestart, "prestart-workers", 2, "Python workers kept warm")
	f.DurationVar(&idleTimeout, "idle-worker-timeout", 2*time.Minute, "how long surplus idle workers live")
	f.BoolVar(&verbose, "verbose", false, "debug logging")
	f.StringVar(&resources, "resources", "", `custom resources as JSON, e.g. '{"custom": 2}'`)
	return cmd
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
			if addr == "" {
				for _, p := range readPids() {
					if p[1] != "" {
						addr = p[1]
					}
				}
			}
			if addr == "" {
				addr = "127.0.0.1:8265"
			}
			client := &http.Client{Timeout: 5 * time.Second}
			resp, err := client.Get("http://" + addr + "/api/gray/status")
			if err != nil {
				return fmt.Errorf("no gray pool answers at %s: %w", addr, err)
			}
			defer resp.Body.Close()
			var st head.Status
			if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
				return fmt.Errorf("bad status reply: %w", err)
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			fmt.Fprintf(out, "Ray Client address: ray://%s\n", st.ClientAddress)
			fmt.Fprintf(out, "Nodes: %d\n", len(st.Nodes))
			for _, n := range st.Nodes {
				fmt.Fprintf(out, "  %s  %s  alive=%v\n", n.NodeID[:12], n.Address, n.Alive)
				keys := make([]string, 0, len(n.Total))
				for k := range n.Total {
					keys = append(keys, k)
				}
				sort.Strings(keys)
				for _, k := range keys {
					fmt.Fprintf(out, "    %-22s %g / %g\n", k, n.Total[k]-n.Available[k], n.Total[k])
				}
			}
			for _, g := range st.GPUs {
				fmt.Fprintf(out, "  GPU %d  %s  %s  %.0f GiB  util %d%%\n", g.Index, g.Name, g.UUID, float64(g.MemoryBytes)/(1<<30), g.UtilizationPct)
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
			fmt.Fprintf(out, "Objects: %d (%d bytes)\n", st.Objects, st.ObjectBytes)
			return nil
		},
	}
	cmd.Flags().StringVar(&addr, "address", "", "status address of the pool (host:port)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

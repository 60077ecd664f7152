package cli

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/gray-cluster/gray/bench"
)

func benchCmd() *cobra.Command {
	var python, filter, out string
	var repeats, cpus int
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Benchmark a gray pool against a stock Ray head on this machine",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if python == "" {
				python = os.Getenv("GRAY_PYTHON")
			}
			if python == "" {
				python = "python3"
			}
			self, err := os.Executable()
			if err != nil {
				return err
			}
			dir, err := os.MkdirTemp("", "gray-bench-scripts-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(dir)
			harness, err := bench.WriteScripts(dir)
			if err != nil {
				return err
			}
			if out == "" {
				out = filepath.Join("bench", "results")
			}
			reproduce := "gray bench --repeats " + strconv.Itoa(repeats)
			if cpus > 0 {
				reproduce += " --cpus " + strconv.Itoa(cpus)
			}
			if filter != "" {
				reproduce += " --filter '" + filter + "'"
			}
			args := []string{harness, "--gray-bin", self, "--repeats", strconv.Itoa(repeats), "--out", out, "--reproduce", reproduce}
			if cpus > 0 {
				args = append(args, "--cpus", strconv.Itoa(cpus))
			}
			if filter != "" {
				args = append(args, "--filter", filter)
			}
			c := exec.Command(python, args...)
			c.Stdout, c.Stderr = cmd.OutOrStdout(), cmd.ErrOrStderr()
			if err := c.Run(); err != nil {
				return fmt.Errorf("benchmark failed: %w", err)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&python, "python", "", "Python with ray[client]==2.60.0 (default $GRAY_PYTHON or python3)")
	f.StringVar(&filter, "filter", "", "only metrics whose name contains this")
	f.StringVar(&out, "out", "", "results directory (default bench/results)")
	f.IntVar(&repeats, "repeats", 2, "alternating runs per system")
	f.IntVar(&cpus, "cpus", 0, "CPUs each system offers (default: all)")
	return cmd
}

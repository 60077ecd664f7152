package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/gray-cluster/gray/native/node"
)

// newNativeNodeCmd is `gray native-node`: a native worker node (raylet and
// plasma store) joining a native GCS directly over TCP, as `ray start
// --address` does on a trusted network. Hidden: pools join providers over
// QUIC (`gray start --address`); this one is for tests and LANs.
func newNativeNodeCmd() *cobra.Command {
	var gcsAddr, nodeIP, python, resources string
	var cpus float64
	var verbose bool
	cmd := &cobra.Command{
		Use:    "native-node",
		Short:  "Join a native GCS with a raylet and a plasma store (no QUIC; trusted networks)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger := newLogger(verbose)
			res := map[string]float64{"CPU": cpus}
			if resources != "" {
				extra := map[string]float64{}
				if err := json.Unmarshal([]byte(resources), &extra); err != nil {
					return fmt.Errorf("--resources: %w", err)
				}
				for k, v := range extra {
					res[k] = v
				}
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			w, err := node.StartWorker(ctx, node.WorkerConfig{
				GCSAddress: gcsAddr, NodeIP: nodeIP, Python: python, Resources: res, Logger: logger,
				TempDir: os.Getenv("RAY_TMPDIR"),
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "NODE_ID=%x\n", w.NodeID())
			<-ctx.Done()
			return w.Close()
		},
	}
	cmd.Flags().StringVar(&gcsAddr, "gcs-address", "", "the GCS to join (host:port)")
	cmd.Flags().StringVar(&nodeIP, "node-ip", "127.0.0.1", "this node's address in Ray's tables")
	cmd.Flags().StringVar(&python, "python", "python3", "python with ray==2.60.0")
	cmd.Flags().StringVar(&resources, "resources", "", `extra resources as JSON, e.g. {"side": 1}`)
	cmd.Flags().Float64Var(&cpus, "num-cpus", 1, "CPUs to offer")
	cmd.Flags().BoolVar(&verbose, "verbose", false, "debug logging")
	return cmd
}

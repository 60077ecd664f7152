package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/gray-cluster/gray/gcs"
	"github.com/gray-cluster/gray/native/gcsserver"
)

// newNativeGCSCmd is `gray native-gcs`: the native GCS alone, on an
// in-memory KV, for protocol tests with the stock Ray client. Hidden: it is
// a test tool. It prints "GCS_ADDRESS=HOST:PORT CLUSTER_ID=HEX" once
// serving and runs until SIGINT or SIGTERM.
func newNativeGCSCmd() *cobra.Command {
	var listen, clusterHex string
	var verbose bool
	var deadAfter time.Duration
	cmd := &cobra.Command{
		Use:    "native-gcs",
		Short:  "Serve Ray's GCS gRPC services (native mode) on --listen",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger := newLogger(verbose)
			cid := make([]byte, gcsserver.ClusterIDSize)
			if clusterHex != "" {
				b, err := hex.DecodeString(clusterHex)
				if err != nil || len(b) != gcsserver.ClusterIDSize {
					return fmt.Errorf("--cluster-id must be %d hex bytes", gcsserver.ClusterIDSize)
				}
				cid = b
			} else if _, err := rand.Read(cid); err != nil {
				return err
			}
			srv, err := gcsserver.New(gcsserver.Config{KV: gcs.NewMemKV(), ClusterID: cid, Logger: logger, NodeDeadAfter: deadAfter})
			if err != nil {
				return err
			}
			lis, err := net.Listen("tcp", listen)
			if err != nil {
				return err
			}
			g := srv.NewGRPCServer()
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if err := srv.Start(ctx); err != nil {
				return err
			}
			served := make(chan error, 1)
			go func() { served <- g.Serve(lis) }()
			fmt.Fprintf(cmd.OutOrStdout(), "GCS_ADDRESS=%s CLUSTER_ID=%s\n", lis.Addr(), hex.EncodeToString(cid))
			select {
			case <-ctx.Done():
			case err = <-served:
			}
			srv.Close()
			g.Stop()
			return err
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:0", "address to serve the GCS on")
	cmd.Flags().StringVar(&clusterHex, "cluster-id", "", "cluster id (56 hex characters; default random)")
	cmd.Flags().BoolVar(&verbose, "verbose", false, "debug logging")
	cmd.Flags().DurationVar(&deadAfter, "node-dead-after", 0, "mark a raylet DEAD after it has not answered this long (0: the server default)")
	return cmd
}

package cli

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/gray-cluster/gray/gpu/verify"
)

func gpuCheckCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "gpu-check",
		Short: "Run the CUDA verification kernels on this machine's GPUs and print a JSON report",
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if ctx == nil {
				ctx = context.Background()
			}
			return verify.RunCheck(ctx, cmd.OutOrStdout())
		},
	}
}

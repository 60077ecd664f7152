// Command gray starts, stops and inspects gray pools.
package main

import (
	"os"

	"github.com/gray-cluster/gray/cmd/gray/cli"
	"github.com/gray-cluster/gray/jobs"
	"github.com/gray-cluster/gray/provider"
)

func main() {
	// The Jobs API's entrypoint wrapper (started by the head, never by
	// hand) goes before cobra: its arguments are not flags.
	if len(os.Args) > 1 && os.Args[1] == jobs.WrapperCommand {
		os.Exit(jobs.RunWrapper(os.Args[2:]))
	}
	if provider.IsRayletMarker() {
		os.Exit(provider.RunRayletMarker())
	}
	if err := cli.Root().Execute(); err != nil {
		os.Exit(1)
	}
}

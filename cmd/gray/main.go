// Command gray starts, stops and inspects gray pools.
package main

import (
	"os"

	"github.com/gray-cluster/gray/cmd/gray/cli"
	"github.com/gray-cluster/gray/jobs"
)

func main() {
	// The Jobs API's entrypoint wrapper (started by the head, never by
	// hand) goes before cobra: its arguments are not flags.
	if len(os.Args) > 1 && os.Args[1] == jobs.WrapperCommand {
		os.Exit(jobs.RunWrapper(os.Args[2:]))
	}
	if err := cli.Root().Execute(); err != nil {
		os.Exit(1)
	}
}

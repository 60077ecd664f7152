// Command gray starts, stops and inspects gray pools.
package main

import (
	"os"

	"github.com/gray-cluster/gray/cmd/gray/cli"
)

func main() {
	if err := cli.Root().Execute(); err != nil {
		os.Exit(1)
	}
}

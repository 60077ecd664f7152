// Command graywan runs emulated WAN links (delay, jitter, loss, bandwidth,
// partitions) between a gray head and its providers on one machine, with a
// localhost HTTP control API. See package wanharness.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/gray-cluster/gray/internal/wanharness"
)

func main() {
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := wanharness.Main(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	cancel()
	os.Exit(code)
}

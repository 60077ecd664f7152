// Command graysim runs many simulated provider raylets (package
// bench/simraylet) against one gray head, for control-plane scale
// benchmarks:
//
//	go build -o bin/graysim ./cmd/graysim
//	bin/graysim --address=HOST:PORT --token=TOKEN --n 1000
//
// It prints "registered N" once all N nodes have registered, then a stats
// line every 5 s until SIGINT or SIGTERM.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/gray-cluster/gray/bench/simraylet"
)

func main() {
	var (
		cfg     simraylet.Config
		regions string
		every   time.Duration
		verbose bool
	)
	flag.StringVar(&cfg.HeadAddr, "address", "", "head node (QUIC) address HOST:PORT")
	flag.StringVar(&cfg.Token, "token", "", "join token printed by the head")
	flag.IntVar(&cfg.N, "n", 100, "simulated nodes")
	flag.Float64Var(&cfg.CPUsPerNode, "cpus", 1, "CPUs each node offers")
	flag.DurationVar(&cfg.Heartbeat, "heartbeat", time.Second, "heartbeat interval")
	flag.IntVar(&cfg.JoinConcurrency, "join-concurrency", 32, "nodes joining at once")
	flag.StringVar(&regions, "regions", "sim", "comma-separated regions, assigned round robin")
	flag.DurationVar(&every, "stats-every", 5*time.Second, "stats line interval")
	flag.BoolVar(&verbose, "verbose", false, "debug logging (every node error)")
	flag.Parse()

	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	cfg.Regions = strings.Split(regions, ",")
	fleet, err := simraylet.New(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "graysim:", err)
		os.Exit(2)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- fleet.Run(ctx) }()

	start := time.Now()
	tick := time.NewTicker(every)
	defer tick.Stop()
	registered := fleet.Registered()
	for {
		select {
		case <-registered:
			registered = nil
			fmt.Printf("registered %d in %.1fs\n", cfg.N, time.Since(start).Seconds())
		case <-tick.C:
			fmt.Printf("stats %s\n", fleet.Stats())
		case <-done:
			fmt.Printf("stopped %s\n", fleet.Stats())
			return
		}
	}
}

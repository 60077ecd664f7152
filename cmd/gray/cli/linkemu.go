package cli

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/gray-cluster/gray/internal/linkemu"
)

// newLinkemuCmd is `gray linkemu`: a userspace WAN link emulator (delay,
// jitter, loss, bandwidth) in front of a UDP or TCP address, for the WAN test
// harness and benchmarks on machines without netem. Hidden: it is a test tool.
func newLinkemuCmd() *cobra.Command {
	var (
		listen, target, proto, bandwidth string
		delay, jitter, idle, statsEvery  time.Duration
		loss                             float64
		queue                            int
		seed                             int64
		inOrder, verbose                 bool
	)
	cmd := &cobra.Command{
		Use:   "linkemu",
		Short: "Emulate a WAN link (delay, jitter, loss, bandwidth) in front of a UDP or TCP address",
		Long: `Listen on --listen and forward to --target, shaping each direction with the
same link: --delay (one way), --jitter (uniform ±), --loss (UDP only) and
--bandwidth (e.g. 100mbit, 1gbit, 10MB/s). Runs until SIGINT or SIGTERM.`,
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger := newLogger(verbose)
			bps, err := linkemu.ParseBandwidth(bandwidth)
			if err != nil {
				return err
			}
			link := linkemu.Link{Delay: delay, Jitter: jitter, Loss: loss, Bandwidth: bps, QueueBytes: queue, InOrder: inOrder}
			cfg := linkemu.Config{Up: link, Down: link, Seed: seed, Logger: logger, IdleTimeout: idle}

			var p interface {
				Addr() net.Addr
				Start(context.Context) error
				Close() error
				Stats() linkemu.Stats
			}
			switch proto {
			case "udp":
				p, err = linkemu.NewUDPProxy(listen, target, cfg)
			case "tcp":
				p, err = linkemu.NewTCPProxy(listen, target, cfg)
			default:
				return fmt.Errorf("--proto must be udp or tcp, not %q", proto)
			}
			if err != nil {
				return err
			}
			defer p.Close()

			ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer cancel()
			if err := p.Start(ctx); err != nil {
				return err
			}
			logger.Info("linkemu running", "proto", proto, "listen", p.Addr().String(), "target", target, "link", link.String())
			var tick <-chan time.Time
			if statsEvery > 0 {
				t := time.NewTicker(statsEvery)
				defer t.Stop()
				tick = t.C
			}
			for {
				select {
				case <-ctx.Done():
					_ = p.Close()
					logStats(logger, p.Stats())
					return nil
				case <-tick:
					logStats(logger, p.Stats())
				}
			}
		},
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", "127.0.0.1:0", "address to listen on (host:port)")
	f.StringVar(&target, "target", "", "address to forward to (host:port)")
	f.StringVar(&proto, "proto", "udp", "udp or tcp")
	f.DurationVar(&delay, "delay", 0, "one-way propagation delay, each direction")
	f.DurationVar(&jitter, "jitter", 0, "uniform ± jitter added to --delay")
	f.Float64Var(&loss, "loss", 0, "packet loss probability 0..1, each direction (UDP only)")
	f.StringVar(&bandwidth, "bandwidth", "", "link rate each direction, e.g. 100mbit, 1gbit, 10MB/s (default unlimited)")
	f.IntVar(&queue, "queue-bytes", 0, "bottleneck queue size in bytes (default: bandwidth-delay product)")
	f.BoolVar(&inOrder, "in-order", false, "never let jitter reorder UDP packets")
	f.Int64Var(&seed, "seed", 0, "seed for loss and jitter draws")
	f.DurationVar(&idle, "idle-timeout", 2*time.Minute, "expire UDP client sessions idle this long")
	f.DurationVar(&statsEvery, "stats-interval", 0, "log traffic counters this often (0: only at exit)")
	f.BoolVar(&verbose, "verbose", false, "debug logging")
	_ = cmd.MarkFlagRequired("target")
	return cmd
}

func logStats(logger *slog.Logger, s linkemu.Stats) {
	logger.Info("linkemu stats", "sessions", s.Sessions,
		"up_forwarded", s.Up.Forwarded, "up_bytes", s.Up.ForwardedBytes, "up_dropped", s.Up.Dropped,
		"down_forwarded", s.Down.Forwarded, "down_bytes", s.Down.ForwardedBytes, "down_dropped", s.Down.Dropped)
}

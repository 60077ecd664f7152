package wanharness

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

const usage = `graywan: emulated WAN links between a gray head and its providers.

  graywan --control 127.0.0.1:PORT \
    --link name=r1,udp_target=127.0.0.1:NODEPORT,tcp_target=127.0.0.1:CLIENTPORT,rtt=20ms,jitter=1ms,loss=0.01,bandwidth=100mbit \
    [--link ...] [--links-json FILE]

For each link it opens a UDP proxy (in front of the head's QUIC node port; a
provider joins with --address=UDP) and a TCP proxy (in front of the head's
Ray Client port; the provider gets --head-client-address=TCP), each direction
delayed by rtt/2 (± jitter), losing UDP datagrams with probability loss and
capped at bandwidth. It prints one JSON line per link
({"name":"r1","udp":"127.0.0.1:x","tcp":"127.0.0.1:y"}), then
{"control":"127.0.0.1:PORT"} and READY, and serves

  POST /partition?link=NAME[&proto=udp|tcp]
  POST /heal?link=NAME[&proto=udp|tcp]
  GET  /stats[?link=NAME]
  GET  /links

until SIGINT, SIGTERM or (unless --watch-stdin=false) its stdin closes.
Link keys: name, udp_target, tcp_target, listen, udp_listen, tcp_listen, rtt,
jitter, loss (0..1 or N%), bandwidth, queue (bytes), reorder, seed.

Flags:
`

// linkFlags collects repeated --link flags.
type linkFlags []LinkSpec

func (f *linkFlags) String() string {
	parts := make([]string, len(*f))
	for i, s := range *f {
		parts[i] = s.String()
	}
	return strings.Join(parts, " ")
}

func (f *linkFlags) Set(v string) error {
	s, err := ParseLinkSpec(v)
	if err != nil {
		return err
	}
	*f = append(*f, s)
	return nil
}

// Main is graywan: it parses args, runs the links until ctx is done or
// stdin closes, and returns the exit status. ctx should be cancelled on
// SIGINT and SIGTERM.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("graywan", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	var (
		links      linkFlags
		linksJSON  string
		control    string
		watchStdin bool
		verbose    bool
	)
	fs.Var(&links, "link", "a link as key=value pairs (repeatable)")
	fs.StringVar(&linksJSON, "links-json", "", "a file with a JSON array of links (keys as for --link), - for stdin")
	fs.StringVar(&control, "control", "127.0.0.1:0", "control API address (keep it on localhost)")
	fs.BoolVar(&watchStdin, "watch-stdin", true, "exit when stdin closes")
	fs.BoolVar(&verbose, "verbose", false, "debug logging (every session and connection)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "graywan: unexpected arguments %q\n", fs.Args())
		return 2
	}
	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	if linksJSON != "" {
		if linksJSON == "-" && watchStdin {
			fmt.Fprintln(stderr, "graywan: --links-json - reads stdin; give --watch-stdin=false too")
			return 2
		}
		var data []byte
		var err error
		if linksJSON == "-" {
			data, err = io.ReadAll(stdin)
		} else {
			data, err = os.ReadFile(linksJSON)
		}
		if err == nil {
			var more []LinkSpec
			if more, err = ParseLinksJSON(data); err == nil {
				links = append(links, more...)
			}
		}
		if err != nil {
			fmt.Fprintf(stderr, "graywan: %v\n", err)
			return 2
		}
	}
	if len(links) == 0 {
		fmt.Fprintln(stderr, "graywan: give at least one --link (or --links-json)")
		return 2
	}
	if err := run(ctx, links, control, watchStdin, stdin, stdout, logger); err != nil {
		logger.Error("graywan failed", "err", err)
		return 1
	}
	return 0
}

func run(ctx context.Context, links []LinkSpec, control string, watchStdin bool, stdin io.Reader, stdout io.Writer, logger *slog.Logger) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	h, err := New(links, logger)
	if err != nil {
		return err
	}
	defer h.Close()
	ln, err := net.Listen("tcp", control)
	if err != nil {
		return fmt.Errorf("control: %w", err)
	}
	srv := &http.Server{Handler: h.Handler(), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	defer func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := h.Start(ctx); err != nil {
		return err
	}

	enc := json.NewEncoder(stdout)
	for _, l := range h.Links() {
		info := l.Info()
		info.Spec = ""
		if err := enc.Encode(info); err != nil {
			return err
		}
	}
	if err := enc.Encode(map[string]string{"control": ln.Addr().String()}); err != nil {
		return err
	}
	if _, err := fmt.Fprintln(stdout, "READY"); err != nil {
		return err
	}
	logger.Info("graywan ready", "control", ln.Addr().String(), "links", len(links))

	if watchStdin {
		go func() {
			_, _ = io.Copy(io.Discard, stdin)
			logger.Info("stdin closed; stopping")
			cancel()
		}()
	}
	select {
	case <-ctx.Done():
	case err := <-served:
		return fmt.Errorf("control server: %w", err)
	}
	for _, l := range h.Links() {
		st, _ := json.Marshal(l.Stats())
		logger.Info("final stats", "link", l.Spec.Name, "stats", string(st))
	}
	return nil
}

package cli

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/gray-cluster/gray/auth"
	"github.com/gray-cluster/gray/billing/metering"
	"github.com/gray-cluster/gray/gpu/watch"
	"github.com/gray-cluster/gray/head"
	"github.com/gray-cluster/gray/internal/noderes"
	"github.com/gray-cluster/gray/provider"
)

type startFlags struct {
	isHead          bool
	peerPort        int
	noPeer          bool
	peerAdvertise   string
	port            int
	host            string
	nodeIP          string
	statusPort      int
	numCPUs, numGPU float64
	objStore        int64
	python          string
	block           bool
	prestart        int
	transferConns   int
	verbose         bool
	resources       string
	labels          string
	region          string
	gpuMock         string
	idleTimeout     time.Duration
	// head ↔ providers
	nodePort        int
	gossipPort      int
	gossipAdvertise string
	joinToken       string
	native          bool
	nativePorts     string
	stateDir        string
	gcsStorage      string
	gcsLeaseTTL     time.Duration
	suspectAfter    time.Duration
	deadAfter       time.Duration
	address         string
	token           string
	clientAddress   string
	// billing
	noGPUVerify    bool
	gpuVerifyEvery time.Duration
	gpuSampleEvery time.Duration
	spillDir       string
	noSpill        bool
	ledgerPath     string
	feeBps         int
	sessionBudget  float64
	solanaRPC      string
	payerKey       string
	usdcMint       string
	payoutInterval time.Duration
	minPayout      float64
	prices         string
	payoutAddress  string
	// native Ray (GCS gRPC, raylet, plasma) on the head
	gcsPort        int
	clientSessions string
	tempDir        string
	nodeIDHex      string
	// trust (head)
	authMode    string
	tls         string
	tlsCert     string
	tlsKey      string
	metricsAddr string
	sandbox     sandboxFlags
}

func startCmd() *cobra.Command {
	var o startFlags
	cmd := &cobra.Command{
		Use:   "start",
		Short: "Start a pool head (--head) or a provider that joins one (--address, --token)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger := newLogger(o.verbose)
			if o.python == "" {
				o.python = os.Getenv("GRAY_PYTHON")
			}
			if o.python == "" {
				o.python = "python3"
			}
			res := map[string]float64{}
			if o.resources != "" {
				if err := json.Unmarshal([]byte(o.resources), &res); err != nil {
					return fmt.Errorf("--resources must be a JSON object of numbers: %w", err)
				}
			}
			labels := map[string]string{}
			if o.labels != "" {
				if err := json.Unmarshal([]byte(o.labels), &labels); err != nil {
					return fmt.Errorf("--labels must be a JSON object of strings: %w", err)
				}
			}
			if o.region != "" {
				labels[head.RegionLabel] = o.region
			}
			ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer cancel()
			if stop, err := startCPUProfile(); err != nil {
				return err
			} else {
				defer stop()
			}
			switch {
			case o.isHead:
				return runHead(ctx, cmd, o, res, labels, logger)
			case o.address != "":
				return runProvider(ctx, cmd, o, res, labels, logger)
			default:
				return fmt.Errorf("give --head to start a pool, or --address=HEAD:PORT --token=TOKEN to join one")
			}
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.isHead, "head", false, "start a head with a local provider")
	f.IntVar(&o.port, "port", 10001, "Ray Client port (head)")
	f.StringVar(&o.host, "host", "127.0.0.1", "address to listen on (head)")
	f.StringVar(&o.nodeIP, "node-ip-address", "127.0.0.1", "this node's IP as others reach it")
	f.IntVar(&o.statusPort, "status-port", 8265, "HTTP status and Ray Jobs API port (head; 0 disables)")
	f.IntVar(&o.statusPort, "dashboard-port", 8265, "Ray's name for --status-port")
	f.Float64Var(&o.numCPUs, "num-cpus", -1, "CPUs to offer (default: all cores; 0 offers none)")
	f.Float64Var(&o.numGPU, "num-gpus", -1, "GPUs to offer (default: what NVML finds)")
	f.StringVar(&o.gpuMock, "gpu-mock", "", "offer a go-nvml mock machine's GPUs (dgxa100, dgxh100, dgxh200, dgxb200), for tests")
	f.Int64Var(&o.objStore, "object-store-memory", 0, "object store bytes (default 30% of RAM)")
	f.StringVar(&o.python, "python", "", "worker Python with ray==2.60.0 installed (default $GRAY_PYTHON or python3)")
	f.BoolVar(&o.block, "block", false, "block in the foreground (always true; accepted for Ray compatibility)")
	f.IntVar(&o.prestart, "prestart-workers", 2, "Python workers kept warm")
	f.IntVar(&o.transferConns, "transfer-conns", 0, "QUIC connections a provider stripes object transfers over, control included (default 49; more help on long lossy links)")
	f.DurationVar(&o.idleTimeout, "idle-worker-timeout", 2*time.Minute, "how long surplus idle workers live")
	f.BoolVar(&o.verbose, "verbose", false, "debug logging")
	f.StringVar(&o.resources, "resources", "", `custom resources as JSON, e.g. '{"custom": 2}'`)
	f.StringVar(&o.labels, "labels", "", `node labels as JSON, e.g. '{"zone": "a"}'`)
	f.StringVar(&o.region, "region", "", "this node's region (label ray.io/availability-region)")
	f.IntVar(&o.nodePort, "node-port", 6379, "UDP (QUIC) port providers join at (head; -1 disables, 0 picks one)")
	f.IntVar(&o.gossipPort, "gossip-port", 0, "UDP+TCP port for gossip among nodes (0 picks one, -1 disables; providers learn the head's from it)")
	f.StringVar(&o.gossipAdvertise, "gossip-advertise", "", "HOST:PORT others reach this provider's gossip at (a port forward; default node IP and the bound port)")
	f.StringVar(&o.joinToken, "join-secret", "", "secret part of the join token (head; default: generated and kept in --state-dir)")
	f.StringVar(&o.stateDir, "state-dir", "", "where the pool CA (head) or node certificate (provider) is kept")
	f.StringVar(&o.gcsStorage, "gcs-storage", "", "where the head keeps the GCS tables (KV, job counter): bolt (gcs.db under --state-dir), memory, or redis://host:port/N[?namespace=NAME] (default: bolt, or memory when the state dir cannot be written)")
	f.DurationVar(&o.suspectAfter, "suspect-after", 5*time.Second, "silence after which a provider gets no new work (head)")
	f.DurationVar(&o.gcsLeaseTTL, "gcs-lease-ttl", 0, "with --gcs-storage redis://: the active head's lease time to live; a standby head on the same Redis takes over this long after the active one dies (default 3s)")
	f.DurationVar(&o.deadAfter, "dead-after", 30*time.Second, "silence after which a provider is dead and its work recovered (head)")
	f.StringVar(&o.address, "address", "", "head node address HOST:PORT to join as a provider")
	f.StringVar(&o.token, "token", "", "join token printed by the head (provider)")
	f.IntVar(&o.peerPort, "peer-port", 0, "UDP (QUIC) port other providers pull this provider's objects from, on all interfaces (provider; 0 picks one)")
	f.BoolVar(&o.native, "native", false, "host stock Ray core workers for the head's native Ray (provider)")
	f.StringVar(&o.nativePorts, "native-ports", "41000-41063", "TCP ports of the native raylet (first) and core workers (provider, with --native)")
	f.BoolVar(&o.noPeer, "no-peer", false, "serve no objects to other providers directly; they get them through the head (provider)")
	f.StringVar(&o.peerAdvertise, "peer-advertise", "", "HOST:PORT other providers reach the peer port at, e.g. behind NAT (provider; default: the node IP, or the address the head sees)")
	f.StringVar(&o.clientAddress, "head-client-address", "", "Ray Client address of the head for this provider's workers to dial directly (default: through the provider's QUIC link to the head)")
	f.BoolVar(&o.noGPUVerify, "no-gpu-verify", false, "offer GPUs without running the CUDA verification kernels")
	f.DurationVar(&o.gpuVerifyEvery, "gpu-verify-interval", watch.DefaultVerifyEvery, "how often GPUs are verified again; one that fails is withdrawn until it passes (0: only at start)")
	f.DurationVar(&o.gpuSampleEvery, "gpu-sample-interval", watch.DefaultSampleEvery, "how often GPU utilisation and memory are read for status and metrics (0: never)")
	f.StringVar(&o.spillDir, "spill-dir", "", "where objects spill when the store is full (head; default: under the session dir)")
	f.BoolVar(&o.noSpill, "no-spill", false, "turn object spilling off: a full store refuses puts (head)")
	f.StringVar(&o.ledgerPath, "ledger", "", "bbolt ledger file or redis:// URL: turns on metering and billing (head)")
	f.IntVar(&o.feeBps, "fee-bps", 200, "protocol fee in basis points of each charge (head)")
	f.Float64Var(&o.sessionBudget, "session-budget", 0, "most USD one session's escrow takes from its account (head; 0: the whole balance)")
	f.StringVar(&o.solanaRPC, "solana-rpc", "", "Solana JSON-RPC endpoint for USDC payouts to providers (head)")
	f.StringVar(&o.payerKey, "payer-key", "", "solana-keygen JSON file of the payout wallet (head)")
	f.StringVar(&o.usdcMint, "usdc-mint", "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v", "USDC mint address (head)")
	f.DurationVar(&o.payoutInterval, "payout-interval", time.Hour, "how often provider balances are paid out (head)")
	f.Float64Var(&o.minPayout, "min-payout", 1, "least balance in USD paid out (head)")
	f.StringVar(&o.prices, "price", "", `prices in USD per resource-hour, e.g. "GPU=2.10,CPU=0.04" (provider)`)
	f.StringVar(&o.clientSessions, "ray-client-sessions", "gray", "who runs ray:// sessions (head): gray (gray's own front end and workers) or native (one stock Ray Client server per session on the native GCS, as stock Ray's proxier)")
	f.IntVar(&o.gcsPort, "gcs-port", 6379, "TCP port of the native GCS that ray.init(address=HOST:PORT) drivers use (head; -1 disables native Ray, 0 picks one)")
	f.StringVar(&o.tempDir, "temp-dir", "", "Ray temp dir for the native session directory and ray_current_cluster (head; default as Ray: $RAY_TMPDIR/ray, $TMPDIR/ray or /tmp/ray)")
	f.StringVar(&o.nodeIDHex, "node_id", "", "native raylet node id (set by gray itself when it re-executes as gray-raylet)")
	_ = f.MarkHidden("node_id")
	o.sandbox.register(f)
	f.StringVar(&o.payoutAddress, "payout-address", "", "Solana wallet (base58) this provider is paid to (provider)")
	addTrustFlags(f, &o)
	return cmd
}

// parsePrices reads "GPU=2.10,CPU=0.04" (USD per resource-hour).
func parsePrices(s string) (metering.PriceList, error) {
	var out metering.PriceList
	if strings.TrimSpace(s) == "" {
		return out, nil
	}
	for _, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		usd, err := strconv.ParseFloat(v, 64)
		if !ok || err != nil || math.IsNaN(usd) || math.IsInf(usd, 0) {
			return nil, fmt.Errorf("--price %q: want RESOURCE=USD_PER_HOUR", part)
		}
		out = append(out, metering.Price{Resource: k, MicroUSDPerHour: int64(math.Round(usd * 1e6))})
	}
	return out, out.Validate()
}

func defaultStateDir(kind, key string) string {
	sum := sha256.Sum256([]byte(key))
	return filepath.Join(os.TempDir(), "gray", kind+"-"+hex.EncodeToString(sum[:4]))
}

func runHead(ctx context.Context, cmd *cobra.Command, o startFlags, res map[string]float64, labels map[string]string, logger *slog.Logger) error {
	statusAddr := ""
	if o.statusPort > 0 {
		statusAddr = fmt.Sprintf("%s:%d", o.host, o.statusPort)
	}
	nodeAddr := ""
	if o.nodePort >= 0 {
		nodeAddr = fmt.Sprintf("%s:%d", o.host, o.nodePort)
	}
	gossipAddr := ""
	if o.gossipPort >= 0 && nodeAddr != "" {
		gossipAddr = fmt.Sprintf("%s:%d", o.host, o.gossipPort)
	}
	stateDir := o.stateDir
	if stateDir == "" {
		stateDir = defaultStateDir("head", fmt.Sprintf("%s:%d", o.host, o.port))
	}
	trust, err := trustConfig(o)
	if err != nil {
		return err
	}
	native := head.NativeConfig{Enabled: o.gcsPort >= 0, GCSPort: o.gcsPort, TempDir: o.tempDir,
		Required: cmd.Flags().Changed("gcs-port")}
	switch o.clientSessions {
	case "gray":
	case "native":
		if trust.Mode == auth.Token {
			return fmt.Errorf("--ray-client-sessions=native does not support token auth: the stock Ray Client servers check no gray tokens")
		}
		if !native.Enabled {
			return fmt.Errorf("--ray-client-sessions=native needs native Ray (do not pass --gcs-port -1)")
		}
		native.Required = true
	default:
		return fmt.Errorf("--ray-client-sessions: want gray or native, got %q", o.clientSessions)
	}
	// The native GCS checks no tokens: every process on this machine
	// (ray:// workers of any account included) could use it. With token
	// auth it is off unless asked for by --gcs-port.
	if trust.Mode == auth.Token && native.Enabled {
		if !native.Required {
			native.Enabled = false
			fmt.Fprintln(cmd.OutOrStdout(), "Native Ray:   off (token auth: the native GCS has no token check; --gcs-port PORT turns it on for a trusted machine)")
		} else {
			fmt.Fprintln(cmd.OutOrStdout(), "WARNING: native Ray is on with token auth: its GCS checks no tokens, so any process on this machine, ray:// workers of every account included, can use it")
		}
	}
	if native.Enabled {
		id, err := nativeNodeID(o)
		if err != nil {
			return err
		}
		native.NodeID = id
	}
	sb, err := o.sandbox.config(cmd.OutOrStdout(), logger)
	if err != nil {
		return err
	}
	h, err := head.New(head.Config{
		Native: native, Auth: trust, Sandbox: sb, NativeClientSessions: o.clientSessions == "native",
		ClientAddr: fmt.Sprintf("%s:%d", o.host, o.port), StatusAddr: statusAddr, Python: o.python, NodeIP: o.nodeIP,
		NumCPUs: o.numCPUs, NumGPUs: o.numGPU, GPUMock: o.gpuMock, ObjectStoreMemory: o.objStore, Resources: res,
		PrestartWorkers: o.prestart, IdleWorkerTimeout: o.idleTimeout, Logger: logger, Labels: labels,
		NodeAddr: nodeAddr, GossipAddr: gossipAddr, StateDir: stateDir, SpillDir: o.spillDir, NoSpill: o.noSpill,
		GCSStorage: o.gcsStorage, GCSLeaseTTL: o.gcsLeaseTTL,
		VerifyGPUs: !o.noGPUVerify, JoinSecret: o.joinToken,
		GPUVerifyInterval: o.gpuVerifyEvery, GPUSampleInterval: o.gpuSampleEvery,
		SuspectAfter: o.suspectAfter, DeadAfter: o.deadAfter,
		Billing: head.BillingConfig{
			LedgerPath: o.ledgerPath, FeeBps: o.feeBps, SessionBudget: int64(o.sessionBudget * 1e6),
			SolanaRPC: o.solanaRPC, PayerKeyPath: o.payerKey, USDCMint: o.usdcMint,
			PayoutInterval: o.payoutInterval, MinPayout: int64(o.minPayout * 1e6),
		},
	})
	if err != nil {
		return err
	}
	if err := h.Start(ctx); err != nil {
		return err
	}
	defer h.Close()
	scheme := "http"
	if trust.TLSAuto || trust.TLSCert != "" {
		scheme = "https"
	}
	recordPid(statusAddr)
	defer forgetPid()
	forget := recordLocalPool(statusAddr, stateDir, scheme)
	defer forget()
	out := cmd.OutOrStdout()
	fmt.Fprintf(out, "gray pool is up.\n  Connect with: ray.init(\"ray://%s\")\n", h.ClientAddr())
	printTrust(out, h, trust, stateDir)
	if statusAddr != "" {
		fmt.Fprintf(out, "  Status:       gray status --address %s\n", statusAddr)
		fmt.Fprintf(out, "  Jobs:         RAY_API_SERVER_ADDRESS=http://%s ray job submit -- CMD\n", h.DashboardAddr())
	}
	if a := h.GCSAddress(); a != "" {
		fmt.Fprintf(out, "  Native Ray:   ray.init(address=\"%s\")\n", a)
	}
	if h.NodeAddr() != "" {
		fmt.Fprintf(out, "  Providers:    gray start --address=%s --token=%s\n", h.NodeAddr(), h.JoinToken())
	}
	fmt.Fprintf(out, "  GCS tables:   %s\n", h.GCSStorage())
	fmt.Fprintln(out, "  Running in the foreground; stop with Ctrl-C or `gray stop`.")
	<-ctx.Done()
	return nil
}

func runProvider(ctx context.Context, cmd *cobra.Command, o startFlags, res map[string]float64, labels map[string]string, logger *slog.Logger) error {
	custom := res
	res, rep, err := noderes.DetectVerified(ctx, noderes.Options{
		NumCPUs: o.numCPUs, NumGPUs: o.numGPU, GPUMock: o.gpuMock, ObjectStoreMemory: o.objStore, Custom: custom,
		Verify: !o.noGPUVerify, VerifyEvery: o.gpuVerifyEvery, SampleEvery: o.gpuSampleEvery,
	}, logger)
	if err != nil {
		return err
	}
	devs := rep.GPUs
	for k, v := range rep.Labels {
		labels[k] = v
	}
	stateDir := o.stateDir
	if stateDir == "" {
		stateDir = defaultStateDir("provider", o.address)
	}
	prices, err := parsePrices(o.prices)
	if err != nil {
		return err
	}
	session := filepath.Join(os.TempDir(), "gray", fmt.Sprintf("provider_%s_%d", time.Now().Format("20060102_150405"), os.Getpid()))
	sb, err := o.sandbox.config(cmd.OutOrStdout(), logger)
	if err != nil {
		return err
	}
	native, err := o.nativeProvider()
	if err != nil {
		return err
	}
	p, err := provider.New(provider.Config{
		Sandbox:  sb,
		HeadAddr: o.address, Token: o.token, StateDir: stateDir, NodeIP: o.nodeIP, Python: o.python,
		Resources: res, Labels: labels, GPUs: noderes.Summary(devs), ObjectStoreMemory: o.objStore,
		SessionDir: session, PrestartWorkers: o.prestart, IdleWorkerTimeout: o.idleTimeout,
		ClientAddress: o.clientAddress, Logger: logger, GossipBind: o.host,
		GossipPort: o.gossipPort, GossipAdvertise: o.gossipAdvertise,
		Prices: prices, PayoutAddress: o.payoutAddress, TransferConns: o.transferConns, GPUWatch: rep.Watch,
		PeerPort: o.peerPort, NoPeer: o.noPeer, PeerAdvertise: o.peerAdvertise,
		Native: native,
	})
	if err != nil {
		return err
	}
	if err := p.Start(ctx); err != nil {
		return err
	}
	defer p.Close()
	recordPid("")
	defer forgetPid()
	fmt.Fprintf(cmd.OutOrStdout(), "gray provider %s joined %s.\n", p.NodeID().Hex()[:12], o.address)
	<-ctx.Done()
	return nil
}

// nativeProvider reads --native and --native-ports.
func (o startFlags) nativeProvider() (provider.NativeConfig, error) {
	if !o.native {
		return provider.NativeConfig{}, nil
	}
	lo, hi, ok := strings.Cut(o.nativePorts, "-")
	a, err1 := strconv.Atoi(lo)
	b, err2 := strconv.Atoi(hi)
	if !ok || err1 != nil || err2 != nil || a <= 0 || b <= a || b > 65535 {
		return provider.NativeConfig{}, fmt.Errorf("--native-ports %q: want FIRST-LAST, e.g. 41000-41063", o.nativePorts)
	}
	return provider.NativeConfig{Enabled: true, PortMin: a, PortMax: b, TempDir: os.Getenv("RAY_TMPDIR")}, nil
}

package membership

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"
)

// Sentinel errors; returned errors wrap them (test with errors.Is).
var (
	ErrInvalidConfig    = errors.New("membership: invalid config")
	ErrInvalidMeta      = errors.New("membership: invalid metadata")
	ErrMetaTooLarge     = errors.New("membership: metadata too large")
	ErrNotStarted       = errors.New("membership: not started")
	ErrAlreadyStarted   = errors.New("membership: already started")
	ErrClosed           = errors.New("membership: closed")
	ErrLeft             = errors.New("membership: already left the cluster")
	ErrJoin             = errors.New("membership: join failed")
	ErrBroadcastTimeout = errors.New("membership: timed out waiting for gossip broadcast")
)

// Profile selects memberlist's timing defaults.
type Profile int

const (
	// ProfileWAN (the default) uses memberlist.DefaultWANConfig: 5 s probes,
	// 3 s probe timeout, suspicion multiplier 6. For nodes on the internet.
	ProfileWAN Profile = iota
	// ProfileLAN uses memberlist.DefaultLANConfig.
	ProfileLAN
	// ProfileLocal uses memberlist.DefaultLocalConfig (loopback, tests).
	ProfileLocal
)

func (p Profile) String() string {
	switch p {
	case ProfileWAN:
		return "wan"
	case ProfileLAN:
		return "lan"
	case ProfileLocal:
		return "local"
	}
	return fmt.Sprintf("profile(%d)", int(p))
}

// Clock is the time source for the Dead grace timer and event timestamps.
type Clock interface {
	Now() time.Time
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a timer started by Clock.AfterFunc.
type Timer interface {
	// Stop prevents the timer from firing; it reports whether it was pending.
	Stop() bool
}

type realClock struct{}

func (realClock) Now() time.Time                            { return time.Now() }
func (realClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

// RealClock returns the Clock backed by package time.
func RealClock() Clock { return realClock{} }

// Config configures a Membership. Zero values pick the defaults noted.
type Config struct {
	// Name is the memberlist node name, unique in the cluster (default
	// Meta.NodeID). Meta.NodeID defaults to Name.
	Name string

	BindAddr      string // default "0.0.0.0"
	BindPort      int    // 0 = pick a free port (see Membership.Addr)
	AdvertiseAddr string // default: derived by memberlist from BindAddr
	AdvertisePort int    // default: the bound port

	// Cluster, when set, becomes memberlist's packet label: members with a
	// different Cluster ignore each other even if they share the key.
	Cluster string

	Meta Meta

	// SecretKey encrypts gossip (AES, 16/24/32 bytes). Required.
	SecretKey []byte

	Profile Profile

	// DeadAfter is the grace period between memberlist declaring a node
	// failed (reported Suspect) and this package reporting it Dead. 16× the
	// node's smoothed RTT is added on top. Default: WAN 60 s, LAN 30 s,
	// Local 10 s.
	DeadAfter time.Duration

	// SuspectAfter is the probe-ack silence after which a member is reported
	// Suspect before memberlist's failure verdict. 0 = automatic (3 probe
	// rounds scaled by memberlist's health score, plus 4× the member's RTT);
	// negative disables probe-silence suspicion.
	SuspectAfter time.Duration

	// ReconnectInterval is how often a failed member is pinged (and re-joined
	// when it answers) during its DeadAfter grace. Default: WAN 10 s,
	// LAN 5 s, Local 1 s.
	ReconnectInterval time.Duration

	// BroadcastTimeout bounds how long UpdateMeta waits for its gossip
	// broadcast. Default 10 s.
	BroadcastTimeout time.Duration

	// Logger receives this package's logs; memberlist's own log lines are
	// bridged to it at debug level. Default: discard.
	Logger *slog.Logger

	// OnEvent, when set, receives every Event, in order, from one goroutine.
	// It must not block for long (events queue up behind it) and must not
	// call Close (Close waits for the queued events to be delivered).
	OnEvent func(Event)

	// Clock drives the Dead grace timer and timestamps (default RealClock).
	Clock Clock

	// Tune, when set, may adjust the memberlist configuration after this
	// package has filled it in (e.g. shorter intervals in tests).
	Tune func(*memberlist.Config)
}

// graceRTTMultiple is how many smoothed RTTs are added to DeadAfter.
const graceRTTMultiple = 16

// withDefaults validates cfg and fills in defaults.
func (cfg Config) withDefaults() (Config, error) {
	if cfg.Name == "" {
		cfg.Name = cfg.Meta.NodeID
	}
	if cfg.Name == "" {
		return cfg, fmt.Errorf("%w: Name and Meta.NodeID are both empty", ErrInvalidConfig)
	}
	cfg.Meta = cfg.Meta.Clone()
	if cfg.Meta.NodeID == "" {
		cfg.Meta.NodeID = cfg.Name
	}
	if err := cfg.Meta.validate(); err != nil {
		return cfg, err
	}
	switch len(cfg.SecretKey) {
	case 16, 24, 32:
	case 0:
		return cfg, fmt.Errorf("%w: SecretKey is required (gossip is always encrypted)", ErrInvalidConfig)
	default:
		return cfg, fmt.Errorf("%w: SecretKey must be 16, 24 or 32 bytes, got %d", ErrInvalidConfig, len(cfg.SecretKey))
	}
	if cfg.BindPort < 0 || cfg.BindPort > 65535 || cfg.AdvertisePort < 0 || cfg.AdvertisePort > 65535 {
		return cfg, fmt.Errorf("%w: port out of range", ErrInvalidConfig)
	}
	if cfg.BindAddr == "" {
		cfg.BindAddr = "0.0.0.0"
	}
	var dead, reconnect time.Duration
	switch cfg.Profile {
	case ProfileWAN:
		dead, reconnect = 60*time.Second, 10*time.Second
	case ProfileLAN:
		dead, reconnect = 30*time.Second, 5*time.Second
	case ProfileLocal:
		dead, reconnect = 10*time.Second, time.Second
	default:
		return cfg, fmt.Errorf("%w: unknown profile %d", ErrInvalidConfig, int(cfg.Profile))
	}
	if cfg.DeadAfter == 0 {
		cfg.DeadAfter = dead
	}
	if cfg.DeadAfter < 0 {
		return cfg, fmt.Errorf("%w: negative DeadAfter", ErrInvalidConfig)
	}
	if cfg.ReconnectInterval <= 0 {
		cfg.ReconnectInterval = reconnect
	}
	if cfg.BroadcastTimeout <= 0 {
		cfg.BroadcastTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = realClock{}
	}
	return cfg, nil
}

// memberlistConfig builds the memberlist configuration for cfg, wiring h in
// as every delegate.
func (cfg Config) memberlistConfig(h *hooks, logger *slog.Logger) (*memberlist.Config, error) {
	var mc *memberlist.Config
	switch cfg.Profile {
	case ProfileLAN:
		mc = memberlist.DefaultLANConfig()
	case ProfileLocal:
		mc = memberlist.DefaultLocalConfig()
	default:
		mc = memberlist.DefaultWANConfig()
	}
	mc.Name = cfg.Name
	mc.BindAddr = cfg.BindAddr
	mc.BindPort = cfg.BindPort
	mc.AdvertiseAddr = cfg.AdvertiseAddr
	mc.AdvertisePort = cfg.AdvertisePort
	mc.Label = cfg.Cluster

	kr, err := memberlist.NewKeyring(nil, cfg.SecretKey)
	if err != nil {
		return nil, fmt.Errorf("%w: keyring: %w", ErrInvalidConfig, err)
	}
	mc.Keyring = kr
	mc.SecretKey = nil
	mc.GossipVerifyIncoming = true
	mc.GossipVerifyOutgoing = true

	// A node that died and comes back from a new address (restarted raylet,
	// new DHCP lease) may reclaim its name after a second instead of being
	// rejected as a conflict; the shared key authenticates it.
	mc.DeadNodeReclaimTime = time.Second

	mc.Delegate = h
	mc.Events = h
	mc.Ping = h
	mc.Alive = h
	mc.Conflict = h

	mc.LogOutput = nil
	mc.Logger = log.New(&slogWriter{log: logger}, "", 0)

	if cfg.Tune != nil {
		cfg.Tune(mc)
	}
	return mc, nil
}

// slogWriter adapts memberlist's *log.Logger output ("[LEVEL] memberlist:
// message") to slog at debug level.
type slogWriter struct{ log *slog.Logger }

var _ io.Writer = (*slogWriter)(nil)

func (w *slogWriter) Write(p []byte) (int, error) {
	for line := range bytes.Lines(p) {
		s := strings.TrimSpace(string(line))
		if s == "" {
			continue
		}
		level := ""
		if strings.HasPrefix(s, "[") {
			if i := strings.IndexByte(s, ']'); i > 0 {
				level, s = s[1:i], strings.TrimSpace(s[i+1:])
			}
		}
		s = strings.TrimPrefix(s, "memberlist: ")
		w.log.Debug(s, "source", "memberlist", "ml_level", level)
	}
	return len(p), nil
}

// KeyFromSecret derives a 32-byte gossip key from a pool's join secret, so
// every node that may join can also gossip and nobody else can.
func KeyFromSecret(secret string) []byte {
	sum := sha256.Sum256([]byte("gray gossip key\x00" + secret))
	return sum[:]
}

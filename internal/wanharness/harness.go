// Package wanharness runs emulated WAN links between a gray head and its
// providers on one machine, for the WAN tests and benchmarks.
//
// Each link (LinkSpec) is a pair of userspace link emulators
// (internal/linkemu) shaped alike: a UDP proxy in front of the head's QUIC
// node port, which a provider dials as its --address, and a TCP proxy in
// front of the head's Ray Client port, which the provider's Python workers
// use (--head-client-address). Each direction is delayed by RTT/2 (plus
// jitter), loses UDP datagrams with the given probability and is capped at
// the given bandwidth. A link can be partitioned and healed at run time:
// UDP is then dropped both ways, TCP held (see linkemu.TCPProxy).
//
// The graywan command (cmd/graywan, see Main) serves the links with a small
// HTTP control API on localhost:
//
//	POST /partition?link=NAME[&proto=udp|tcp]   partition (both protocols by default)
//	POST /heal?link=NAME[&proto=udp|tcp]        heal
//	GET  /stats[?link=NAME]                     per-link counters (LinkStats)
//	GET  /links                                 the links and their proxy addresses
//
// # Gossip
//
// A link with a gossip_target also proxies gossip (memberlist, UDP and TCP on
// one port) sent TO its provider: the provider advertises the link's gossip
// address (gray start --gossip-advertise), so the head's and other nodes'
// probes of it cross the link, delayed, lossy and partitioned with the rest.
// Gossip the provider sends goes straight to the addresses the others
// advertise (memberlist answers a probe at the prober's advertised address),
// so a gossip round trip sees half the link's delay; what matters for the
// tests, that a partitioned provider stops answering the head's probes, holds.
//
// # What the emulator does not cover
//
// Only traffic addressed to a proxy crosses the emulated link. In a gray pool
// that is the provider's QUIC connection to the head (control channel,
// object pulls and pushes), its workers' Ray Client connections and, with a
// gossip_target, gossip sent to it. Direct provider-to-provider object
// transfers are not shaped (the harness's providers run without them).
//
// # Network namespaces
//
// This machine has `ip netns` and veth pairs (as root) but no netem qdisc,
// so the delay/loss cannot come from the kernel. Namespaces could still
// isolate providers fully: make a namespace per region with a veth pair to
// the host (e.g. 10.213.N.2 inside, 10.213.N.1 outside), run the provider
// there with `ip netns exec rN gray start --address=10.213.N.1:UDPPORT
// --head-client-address=10.213.N.1:TCPPORT --node-ip-address=10.213.N.2
// --host=10.213.N.2`, and bind this harness's proxies to 10.213.N.1
// (LinkSpec.Listen). A namespace has no route to the host's loopback, so
// then every byte the provider sends to the head must go through a proxy,
// and `ip link set vethN down` partitions everything, gossip included. The
// head's gossip address would have to be reachable from the namespace
// (--host 0.0.0.0 on the head), and gossip itself would still be unshaped.
// The harness implements the userspace path only.
package wanharness

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"

	"github.com/gray-cluster/gray/internal/linkemu"
)

// Harness runs the proxies of a set of links.
type Harness struct {
	log    *slog.Logger
	links  []*Link
	byName map[string]*Link
}

// Link is one running link.
type Link struct {
	Spec LinkSpec
	udp  *linkemu.UDPProxy
	tcp  *linkemu.TCPProxy
	// gossipUDP and gossipTCP carry gossip to the provider, on one port.
	gossipUDP *linkemu.UDPProxy
	gossipTCP *linkemu.TCPProxy

	mu                   sync.Mutex
	udpParted, tcpParted bool
}

// New binds the proxies of every link (nothing is forwarded before Start).
// Link names must be unique.
func New(specs []LinkSpec, logger *slog.Logger) (*Harness, error) {
	if logger == nil {
		logger = slog.Default()
	}
	h := &Harness{log: logger, byName: map[string]*Link{}}
	for _, s := range specs {
		if err := s.validate(); err != nil {
			_ = h.Close()
			return nil, fmt.Errorf("wanharness: link %q: %w", s.Name, err)
		}
		if h.byName[s.Name] != nil {
			_ = h.Close()
			return nil, fmt.Errorf("wanharness: link %q given twice", s.Name)
		}
		l, err := newLink(s, logger)
		if err != nil {
			_ = h.Close()
			return nil, err
		}
		h.links = append(h.links, l)
		h.byName[s.Name] = l
	}
	return h, nil
}

func newLink(s LinkSpec, logger *slog.Logger) (*Link, error) {
	listen := func(specific string) string {
		if specific != "" {
			return specific
		}
		host := s.Listen
		if host == "" {
			host = "127.0.0.1"
		}
		return net.JoinHostPort(host, "0")
	}
	cfg := s.Config()
	cfg.Logger = logger.With("link", s.Name)
	l := &Link{Spec: s}
	var err error
	if s.UDPTarget != "" {
		if l.udp, err = linkemu.NewUDPProxy(listen(s.UDPListen), s.UDPTarget, cfg); err != nil {
			return nil, fmt.Errorf("wanharness: link %q: udp: %w", s.Name, err)
		}
	}
	if s.TCPTarget != "" {
		if l.tcp, err = linkemu.NewTCPProxy(listen(s.TCPListen), s.TCPTarget, cfg); err != nil {
			l.close()
			return nil, fmt.Errorf("wanharness: link %q: tcp: %w", s.Name, err)
		}
	}
	if s.GossipTarget != "" {
		if err := l.bindGossip(listen(""), cfg); err != nil {
			l.close()
			return nil, fmt.Errorf("wanharness: link %q: gossip: %w", s.Name, err)
		}
	}
	return l, nil
}

// bindGossip binds the gossip proxies: UDP on a free port, then TCP on the
// same port (memberlist advertises one port for both), trying again when
// the TCP port is taken.
func (l *Link) bindGossip(listen string, cfg linkemu.Config) error {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return err
	}
	var last error
	for range 20 {
		u, err := linkemu.NewUDPProxy(listen, l.Spec.GossipTarget, cfg)
		if err != nil {
			return err
		}
		_, port, _ := net.SplitHostPort(u.Addr().String())
		t, err := linkemu.NewTCPProxy(net.JoinHostPort(host, port), l.Spec.GossipTarget, cfg)
		if err != nil {
			_ = u.Close()
			last = err
			continue
		}
		l.gossipUDP, l.gossipTCP = u, t
		return nil
	}
	return fmt.Errorf("no port free for both UDP and TCP: %w", last)
}

// Start starts forwarding on every link. The links run until Close, or
// until ctx is done.
func (h *Harness) Start(ctx context.Context) error {
	for _, l := range h.links {
		if l.udp != nil {
			if err := l.udp.Start(ctx); err != nil {
				return fmt.Errorf("wanharness: link %q: udp: %w", l.Spec.Name, err)
			}
		}
		if l.tcp != nil {
			if err := l.tcp.Start(ctx); err != nil {
				return fmt.Errorf("wanharness: link %q: tcp: %w", l.Spec.Name, err)
			}
		}
		if l.gossipUDP != nil {
			if err := l.gossipUDP.Start(ctx); err != nil {
				return fmt.Errorf("wanharness: link %q: gossip udp: %w", l.Spec.Name, err)
			}
			if err := l.gossipTCP.Start(ctx); err != nil {
				return fmt.Errorf("wanharness: link %q: gossip tcp: %w", l.Spec.Name, err)
			}
		}
		h.log.Info("link up", "link", l.Spec.Name, "udp", l.UDPAddr(), "tcp", l.TCPAddr(), "gossip", l.GossipAddr(),
			"each_way", l.Spec.Config().Up.String())
	}
	return nil
}

// Close closes every proxy and waits for their goroutines.
func (h *Harness) Close() error {
	for _, l := range h.links {
		l.close()
	}
	return nil
}

// Links returns the links in the order they were given.
func (h *Harness) Links() []*Link { return h.links }

// Link returns the named link, or nil.
func (h *Harness) Link(name string) *Link { return h.byName[name] }

func (l *Link) close() {
	if l.udp != nil {
		_ = l.udp.Close()
	}
	if l.tcp != nil {
		_ = l.tcp.Close()
	}
	if l.gossipUDP != nil {
		_ = l.gossipUDP.Close()
	}
	if l.gossipTCP != nil {
		_ = l.gossipTCP.Close()
	}
}

// GossipAddr is the address the provider advertises for gossip ("" if the
// link carries no gossip).
func (l *Link) GossipAddr() string {
	if l.gossipUDP == nil {
		return ""
	}
	return l.gossipUDP.Addr().String()
}

// UDPAddr is the address providers dial as the head's node address ("" if
// the link has no UDP proxy).
func (l *Link) UDPAddr() string {
	if l.udp == nil {
		return ""
	}
	return l.udp.Addr().String()
}

// TCPAddr is the head's Ray Client address as seen through the link ("" if
// the link has no TCP proxy).
func (l *Link) TCPAddr() string {
	if l.tcp == nil {
		return ""
	}
	return l.tcp.Addr().String()
}

// Proto selects the proxies a partition applies to.
type Proto string

// The protocols of a link; ProtoBoth is the zero value.
const (
	ProtoBoth Proto = ""
	ProtoUDP  Proto = "udp"
	ProtoTCP  Proto = "tcp"
)

// ParseProto reads "udp", "tcp", or "" / "both".
func ParseProto(s string) (Proto, error) {
	switch s {
	case "", "both":
		return ProtoBoth, nil
	case "udp":
		return ProtoUDP, nil
	case "tcp":
		return ProtoTCP, nil
	}
	return "", fmt.Errorf("proto %q: want udp, tcp or both", s)
}

// ErrNoProxy is returned when a partition names a protocol the link has no
// proxy for.
var ErrNoProxy = errors.New("wanharness: the link has no proxy for that protocol")

// SetPartitioned partitions (on) or heals the link's proxies of proto.
func (l *Link) SetPartitioned(on bool, proto Proto) error {
	doUDP := (proto == ProtoBoth || proto == ProtoUDP) && l.udp != nil
	doTCP := (proto == ProtoBoth || proto == ProtoTCP) && l.tcp != nil
	if !doUDP && !doTCP {
		return ErrNoProxy
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if doUDP {
		l.udp.SetPartitioned(on)
		l.udpParted = on
	}
	if doTCP {
		l.tcp.SetPartitioned(on)
		l.tcpParted = on
	}
	if l.gossipUDP != nil && (proto == ProtoBoth || proto == ProtoUDP) {
		l.gossipUDP.SetPartitioned(on)
	}
	if l.gossipTCP != nil && (proto == ProtoBoth || proto == ProtoTCP) {
		l.gossipTCP.SetPartitioned(on)
	}
	return nil
}

// Partitioned reports whether any of the link's proxies is partitioned.
func (l *Link) Partitioned() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.udpParted || l.tcpParted
}

// LinkStats is what GET /stats reports of a link.
type LinkStats struct {
	Name        string      `json:"name"`
	Spec        string      `json:"spec"`
	Partitioned bool        `json:"partitioned"`
	UDP         *ProxyStats `json:"udp,omitempty"`
	TCP         *ProxyStats `json:"tcp,omitempty"`
	// GossipUDP and GossipTCP count gossip to the provider: Up is the
	// prober→provider direction.
	GossipUDP *ProxyStats `json:"gossip_udp,omitempty"`
	GossipTCP *ProxyStats `json:"gossip_tcp,omitempty"`
}

// ProxyStats counts one proxy of a link. Up is client→target (provider→head),
// Down target→client (head→provider). For TCP a packet is one chunk read from
// a connection.
type ProxyStats struct {
	Addr        string   `json:"addr"`
	Target      string   `json:"target"`
	Partitioned bool     `json:"partitioned"`
	Sessions    int      `json:"sessions"`
	Up          DirStats `json:"up"`
	Down        DirStats `json:"down"`
}

// DirStats counts one direction (see linkemu.DirStats).
type DirStats struct {
	Received         uint64 `json:"received"`
	ReceivedBytes    uint64 `json:"received_bytes"`
	Forwarded        uint64 `json:"forwarded"`
	ForwardedBytes   uint64 `json:"forwarded_bytes"`
	Dropped          uint64 `json:"dropped"`
	DroppedBytes     uint64 `json:"dropped_bytes"`
	DroppedLoss      uint64 `json:"dropped_loss"`
	DroppedQueue     uint64 `json:"dropped_queue"`
	DroppedPartition uint64 `json:"dropped_partition"`
	DroppedError     uint64 `json:"dropped_error"`
}

func dirStats(d linkemu.DirStats) DirStats {
	return DirStats{
		Received: d.Received, ReceivedBytes: d.ReceivedBytes,
		Forwarded: d.Forwarded, ForwardedBytes: d.ForwardedBytes,
		Dropped: d.Dropped, DroppedBytes: d.DroppedBytes,
		DroppedLoss: d.DroppedLoss, DroppedQueue: d.DroppedQueue,
		DroppedPartition: d.DroppedPartition, DroppedError: d.DroppedError,
	}
}

// Stats returns the link's counters.
func (l *Link) Stats() LinkStats {
	l.mu.Lock()
	udpParted, tcpParted := l.udpParted, l.tcpParted
	l.mu.Unlock()
	out := LinkStats{Name: l.Spec.Name, Spec: l.Spec.String(), Partitioned: udpParted || tcpParted}
	if l.udp != nil {
		s := l.udp.Stats()
		out.UDP = &ProxyStats{
			Addr: l.UDPAddr(), Target: l.Spec.UDPTarget, Partitioned: udpParted, Sessions: s.Sessions,
			Up: dirStats(s.Up), Down: dirStats(s.Down),
		}
	}
	if l.tcp != nil {
		s := l.tcp.Stats()
		out.TCP = &ProxyStats{
			Addr: l.TCPAddr(), Target: l.Spec.TCPTarget, Partitioned: tcpParted, Sessions: s.Sessions,
			Up: dirStats(s.Up), Down: dirStats(s.Down),
		}
	}
	if l.gossipUDP != nil {
		s := l.gossipUDP.Stats()
		out.GossipUDP = &ProxyStats{
			Addr: l.GossipAddr(), Target: l.Spec.GossipTarget, Partitioned: udpParted, Sessions: s.Sessions,
			Up: dirStats(s.Up), Down: dirStats(s.Down),
		}
		t := l.gossipTCP.Stats()
		out.GossipTCP = &ProxyStats{
			Addr: l.gossipTCP.Addr().String(), Target: l.Spec.GossipTarget, Partitioned: tcpParted, Sessions: t.Sessions,
			Up: dirStats(t.Up), Down: dirStats(t.Down),
		}
	}
	return out
}

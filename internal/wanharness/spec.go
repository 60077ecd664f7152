package wanharness

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gray-cluster/gray/internal/linkemu"
)

// LinkSpec describes one emulated link: a UDP proxy in front of UDPTarget
// (the head's QUIC node port) and a TCP proxy in front of TCPTarget (the
// head's Ray Client port), both shaped the same way. At least one target is
// required.
type LinkSpec struct {
	Name      string
	UDPTarget string // "" = no UDP proxy
	TCPTarget string // "" = no TCP proxy
	// GossipTarget is the provider's own gossip address (memberlist, UDP
	// and TCP on one port). When set, the link also carries gossip sent to
	// the provider: a UDP and a TCP proxy on one port (GossipAddr), which the
	// provider advertises (gray start --gossip-advertise), shaped and
	// partitioned with the rest of the link.
	GossipTarget string
	// Listen is the host the proxies bind (port chosen by the kernel unless
	// UDPListen/TCPListen give one). Default 127.0.0.1.
	Listen               string
	UDPListen, TCPListen string // full host:port, overriding Listen
	// RTT is the round-trip propagation delay: each direction is delayed by
	// RTT/2.
	RTT time.Duration
	// Jitter is added to each direction's delay, uniform in ±Jitter.
	Jitter time.Duration
	// Loss is the drop probability of each UDP datagram, each direction
	// (TCP is never dropped; see linkemu.Link).
	Loss float64
	// Bandwidth is each direction's rate in bits per second (0: unlimited).
	Bandwidth int64
	// QueueBytes is the bottleneck queue (0: linkemu's default, the BDP).
	QueueBytes int
	// Reorder lets jitter reorder UDP datagrams, as netem does. Off by
	// default: real WAN paths rarely reorder, and QUIC's loss detection
	// takes a datagram overtaken by three others for lost, so reordering
	// jitter would measure an artefact of the emulator.
	Reorder bool
	Seed    int64
}

// Config is the linkemu configuration of both proxies of the link
// (Up: client→target, Down: target→client).
func (s LinkSpec) Config() linkemu.Config {
	l := linkemu.Link{
		Delay: s.RTT / 2, Jitter: s.Jitter, Loss: s.Loss, Bandwidth: s.Bandwidth,
		QueueBytes: s.QueueBytes, InOrder: !s.Reorder,
	}
	return linkemu.Config{Up: l, Down: l, Seed: s.Seed}
}

// String writes the spec the way ParseLinkSpec reads it.
func (s LinkSpec) String() string {
	parts := []string{"name=" + s.Name}
	add := func(k, v string) {
		if v != "" {
			parts = append(parts, k+"="+v)
		}
	}
	add("udp_target", s.UDPTarget)
	add("tcp_target", s.TCPTarget)
	add("gossip_target", s.GossipTarget)
	add("listen", s.Listen)
	add("udp_listen", s.UDPListen)
	add("tcp_listen", s.TCPListen)
	if s.RTT > 0 {
		add("rtt", s.RTT.String())
	}
	if s.Jitter > 0 {
		add("jitter", s.Jitter.String())
	}
	if s.Loss > 0 {
		add("loss", strconv.FormatFloat(s.Loss, 'g', -1, 64))
	}
	if s.Bandwidth > 0 {
		add("bandwidth", linkemu.FormatBandwidth(s.Bandwidth))
	}
	if s.QueueBytes > 0 {
		add("queue", strconv.Itoa(s.QueueBytes))
	}
	if s.Reorder {
		add("reorder", "true")
	}
	if s.Seed != 0 {
		add("seed", strconv.FormatInt(s.Seed, 10))
	}
	return strings.Join(parts, ",")
}

// ParseLinkSpec reads a link from comma-separated key=value pairs:
//
//	name=r1,udp_target=127.0.0.1:6379,tcp_target=127.0.0.1:10001,rtt=20ms,jitter=1ms,loss=0.01,bandwidth=100mbit
//
// Keys: name (required), udp_target, tcp_target (at least one), gossip_target, listen,
// udp_listen, tcp_listen, rtt, jitter (Go durations), loss (0..1, or a
// percentage like 1%), bandwidth (see linkemu.ParseBandwidth), queue
// (bytes), reorder (bool), seed (int).
func ParseLinkSpec(text string) (LinkSpec, error) {
	kv := map[string]string{}
	for _, field := range strings.Split(text, ",") {
		field = strings.TrimSpace(field)
		if field == "" {
			continue
		}
		k, v, ok := strings.Cut(field, "=")
		if !ok {
			return LinkSpec{}, fmt.Errorf("link %q: %q is not key=value", text, field)
		}
		k = strings.ToLower(strings.TrimSpace(k))
		if _, dup := kv[k]; dup {
			return LinkSpec{}, fmt.Errorf("link %q: %s given twice", text, k)
		}
		kv[k] = strings.TrimSpace(v)
	}
	s, err := specFromMap(kv)
	if err != nil {
		return LinkSpec{}, fmt.Errorf("link %q: %w", text, err)
	}
	return s, nil
}

func specFromMap(kv map[string]string) (LinkSpec, error) {
	var s LinkSpec
	var errs []error
	keys := make([]string, 0, len(kv))
	for k := range kv {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := kv[k]
		var err error
		switch k {
		case "name":
			s.Name = v
		case "udp_target":
			s.UDPTarget = v
		case "tcp_target":
			s.TCPTarget = v
		case "gossip_target":
			s.GossipTarget = v
		case "listen":
			s.Listen = v
		case "udp_listen":
			s.UDPListen = v
		case "tcp_listen":
			s.TCPListen = v
		case "rtt":
			s.RTT, err = time.ParseDuration(v)
		case "jitter":
			s.Jitter, err = time.ParseDuration(v)
		case "loss":
			s.Loss, err = parseLoss(v)
		case "bandwidth":
			s.Bandwidth, err = linkemu.ParseBandwidth(v)
		case "queue":
			s.QueueBytes, err = strconv.Atoi(v)
		case "reorder":
			s.Reorder, err = strconv.ParseBool(v)
		case "seed":
			s.Seed, err = strconv.ParseInt(v, 10, 64)
		default:
			err = errors.New("unknown key")
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s=%s: %w", k, v, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return LinkSpec{}, err
	}
	return s, s.validate()
}

func parseLoss(v string) (float64, error) {
	if p, ok := strings.CutSuffix(v, "%"); ok {
		f, err := strconv.ParseFloat(p, 64)
		return f / 100, err
	}
	return strconv.ParseFloat(v, 64)
}

func (s LinkSpec) validate() error {
	switch {
	case s.Name == "":
		return errors.New("name is required")
	case strings.ContainsAny(s.Name, "/?&= \t"):
		return fmt.Errorf("name %q: no '/', '?', '&', '=' or spaces", s.Name)
	case s.UDPTarget == "" && s.TCPTarget == "":
		return errors.New("give udp_target, tcp_target or both")
	case s.RTT < 0 || s.Jitter < 0:
		return errors.New("rtt and jitter must not be negative")
	case !(s.Loss >= 0 && s.Loss <= 1) || math.IsNaN(s.Loss):
		return fmt.Errorf("loss %v outside [0, 1]", s.Loss)
	case s.QueueBytes < 0:
		return errors.New("queue must not be negative")
	}
	return nil
}

// ParseLinksJSON reads a JSON array of links, each an object with the keys
// of ParseLinkSpec; values may be strings, numbers or booleans:
//
//	[{"name": "r1", "udp_target": "127.0.0.1:6379", "rtt": "20ms", "loss": 0.01}]
func ParseLinksJSON(data []byte) ([]LinkSpec, error) {
	var raw []map[string]any
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("links JSON: %w", err)
	}
	out := make([]LinkSpec, 0, len(raw))
	for i, obj := range raw {
		kv := map[string]string{}
		for k, v := range obj {
			switch x := v.(type) {
			case string:
				kv[strings.ToLower(k)] = x
			case float64:
				kv[strings.ToLower(k)] = strconv.FormatFloat(x, 'f', -1, 64)
			case bool:
				kv[strings.ToLower(k)] = strconv.FormatBool(x)
			default:
				return nil, fmt.Errorf("links JSON: link %d: %s: want a string, number or boolean", i, k)
			}
		}
		s, err := specFromMap(kv)
		if err != nil {
			return nil, fmt.Errorf("links JSON: link %d: %w", i, err)
		}
		out = append(out, s)
	}
	return out, nil
}

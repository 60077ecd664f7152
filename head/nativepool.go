package head

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"

	"github.com/gray-cluster/gray/internal/ids"
	pb "github.com/gray-cluster/gray/proto/nodepb"
	"github.com/gray-cluster/gray/tunnel"
)

// Native Ray across the pool: every provider that hosts stock core workers
// gets a pool address, a loopback address unique in the pool
// (127.64.0.0/10), that names it in Ray's tables. On the provider that
// address is local; on the head a forwarder listens on it for each of the
// provider's native ports and carries the connections to the provider
// through its tunnel; providers reach the head and each other through the
// tunnel hub. So a stock driver on the head, the head's own core workers and
// the GCS all dial providers' addresses as plain TCP.

// maxNativePorts bounds the ports one provider may ask the head to forward.
const maxNativePorts = 1024

// nativePool routes native Ray between the head and its providers.
type nativePool struct {
	log *slog.Logger
	hub *tunnel.Hub
	fw  *tunnel.Forwarder

	mu     sync.Mutex
	byIP   map[string]string // pool address -> provider node id (hex)
	byNode map[string]string // provider node id (hex) -> pool address
	ports  map[string][2]int // provider node id -> its native port range
}

// local maps an address the head dials for a tunnel to where it dials it
// (the Ray Client port's tunnel listener for the advertised client port).
//
// headAllows vets what a provider may reach on the head itself (the Ray
// Client port and the native node's services); providers' pool addresses
// are reachable on their native ports only.
//
// peerAddr is where a provider (node id hex) takes direct connections from
// other providers ("" when the head has not reached it there): providers
// then dial each other directly and relay through the hub only when that
// fails.
func newNativePool(log *slog.Logger, local func(addr string) string, headAllows func(addr string) bool, peerAddr func(node string) string) *nativePool {
	np := &nativePool{log: log, byIP: map[string]string{}, byNode: map[string]string{}, ports: map[string][2]int{}}
	dialLocal := func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, local(addr))
	}
	allow := func(_, target string) bool {
		host, p, err := net.SplitHostPort(target)
		port, perr := strconv.Atoi(p)
		if err != nil || perr != nil {
			return false
		}
		np.mu.Lock()
		node, isPool := np.byIP[host]
		r := np.ports[node]
		np.mu.Unlock()
		if isPool {
			return port >= r[0] && port <= r[1]
		}
		return headAllows(target)
	}
	peer := func(host string) (string, string, bool) {
		np.mu.Lock()
		node, ok := np.byIP[host]
		np.mu.Unlock()
		if !ok || peerAddr == nil {
			return "", "", false
		}
		addr := peerAddr(node)
		return node, addr, addr != ""
	}
	np.hub = tunnel.NewHub(tunnel.HubConfig{Resolve: np.resolve, DialLocal: dialLocal, AllowTarget: allow, Peer: peer, Logger: log})
	np.fw = tunnel.NewForwarder(np.hub.Dial, log)
	return np
}

// resolve routes a tunnel target's host: a provider's pool address to that
// provider, anything else to the head itself (it dials it locally).
func (np *nativePool) resolve(host string) (string, bool) {
	np.mu.Lock()
	defer np.mu.Unlock()
	if node, ok := np.byIP[host]; ok {
		return node, true
	}
	if ip := net.ParseIP(host); ip != nil && inPoolRange(ip) {
		return "", false // a pool address nobody holds
	}
	return "", true
}

func inPoolRange(ip net.IP) bool {
	v4 := ip.To4()
	return v4 != nil && v4[0] == 127 && v4[1]&0xc0 == 64
}

// poolIP picks node's pool address: derived from its id, so that it stays
// the same across reconnects and head restarts, probing on a collision.
func poolIP(node string, taken func(string) bool) string {
	sum := sha256.Sum256([]byte(node))
	n := binary.BigEndian.Uint32(sum[:4]) & (1<<22 - 1)
	for {
		ip := net.IPv4(127, byte(64|n>>16), byte(n>>8), byte(n)).String()
		if last := byte(n); last != 0 && last != 255 && !taken(ip) {
			return ip
		}
		n = (n + 1) & (1<<22 - 1)
	}
}

// join gives a provider that offered native Ray its pool address and
// forwards its ports; it returns the address.
// A provider on the head's own machine needs no forwarders: its core
// workers listen on all addresses, its pool address among them (and a
// forwarder there would take the workers' ports).
func (np *nativePool) join(ctx context.Context, node ids.NodeID, reg *pb.Register, local bool) (string, error) {
	lo, hi := int(reg.GetNativePortMin()), int(reg.GetNativePortMax())
	if lo <= 0 || hi < lo || hi > 65535 || hi-lo+1 > maxNativePorts {
		return "", fmt.Errorf("native ports %d..%d: want 1..65535, at most %d", lo, hi, maxNativePorts)
	}
	id := node.Hex()
	np.mu.Lock()
	ip, ok := np.byNode[id]
	if !ok {
		ip = poolIP(id, func(s string) bool { _, t := np.byIP[s]; return t })
		np.byNode[id], np.byIP[ip] = ip, id
	}
	np.ports[id] = [2]int{lo, hi}
	np.mu.Unlock()
	if local {
		np.log.Info("provider on this machine joined native Ray", "node", id, "pool_address", ip)
		return ip, nil
	}
	for port := lo; port <= hi; port++ {
		addr := net.JoinHostPort(ip, strconv.Itoa(port))
		if _, err := np.fw.Forward(ctx, addr, addr); err != nil {
			return "", fmt.Errorf("forward %s: %w", addr, err)
		}
	}
	np.log.Info("provider joined native Ray", "node", id, "pool_address", ip, "ports", fmt.Sprintf("%d-%d", lo, hi))
	return ip, nil
}

func (np *nativePool) close() {
	_ = np.fw.Close()
	_ = np.hub.Close()
}

// sameMachine reports whether addr (a provider's QUIC source address) is
// one of this machine's own addresses.
func sameMachine(addr net.Addr) bool {
	if addr == nil {
		return false
	}
	host, _, err := net.SplitHostPort(addr.String())
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return false
	}
	if ip.IsLoopback() {
		return true
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
			return true
		}
	}
	return false
}

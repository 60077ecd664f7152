package provider

import (
	"context"
	"net"
	"strconv"
	"sync"

	"github.com/gray-cluster/gray/native/node"
	"github.com/gray-cluster/gray/tunnel"
)

// NativeConfig lets a provider host stock Ray core workers for the head's
// native Ray (drivers started with `ray.init(address="HEAD:6379")`): a raylet
// and a plasma store of its own, joined to the head's GCS. Every TCP
// connection Ray makes between nodes goes over the provider's QUIC link to
// the head: the head gives the provider a pool address (a loopback address
// unique in the pool), its core workers send their gRPC through a local
// HTTP CONNECT proxy into the tunnel, and the head forwards connections for
// that address back to the provider.
type NativeConfig struct {
	Enabled bool
	// PortMin..PortMax are the provider's native TCP ports: the raylet on
	// PortMin, core workers on the rest (they listen on all addresses).
	PortMin, PortMax int
	// TempDir is Ray's temp dir on this machine ("" = /tmp/ray).
	TempDir string
}

// nativeSide is the provider's native node and its tunnel ends.
type nativeSide struct {
	mu     sync.Mutex
	ip     string
	agent  *tunnel.Agent
	proxy  *tunnel.Proxy
	worker *node.Worker
	cancel context.CancelFunc
}

// startNative brings the native node up once, after the head named the
// provider's pool address and its GCS (a reconnect keeps what runs).
func (p *Provider) startNative(gcsAddr, ip string) {
	if !p.cfg.Native.Enabled || gcsAddr == "" || ip == "" {
		return
	}
	ns := &p.native
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if ns.ip != "" {
		if ns.ip != ip {
			p.log.Warn("the head named another pool address for this provider; native Ray keeps the first until restart", "kept", ns.ip, "new", ip)
		}
		return
	}
	ns.ip = ip
	ctx, cancel := context.WithCancel(p.ctx)
	ns.cancel = cancel
	local := func(host string) bool { return host == ip || host == "127.0.0.1" || host == "localhost" }
	// The pool address is a loopback address of this machine: the raylet
	// listens on it, core workers on all addresses.
	dialLocal := func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
	acfg := tunnel.AgentConfig{Hosts: []string{ip}, DialLocal: dialLocal, Logger: p.log}
	if p.peers != nil {
		// Other providers' native ports are dialled directly where the
		// head reached their peer listener (relayed through the head
		// otherwise), and this one's take their direct connections.
		acfg.DirectTransport = p.peers.tr
		acfg.DirectAllow = func(_, target string) bool {
			_, ps, err := net.SplitHostPort(target)
			port, perr := strconv.Atoi(ps)
			return err == nil && perr == nil && port >= p.cfg.Native.PortMin && port <= p.cfg.Native.PortMax
		}
	}
	ns.agent = tunnel.NewAgent(p.tr, p.currentHead(), acfg)
	if err := ns.agent.Start(ctx); err != nil {
		p.log.Error("native Ray: tunnel agent", "err", err)
		return
	}
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		host, _, err := net.SplitHostPort(addr)
		if err == nil && local(host) {
			return dialLocal(ctx, "tcp", addr)
		}
		return ns.agent.Dial(ctx, addr)
	}
	proxy, err := tunnel.NewProxy(dial, local)
	if err != nil {
		p.log.Error("native Ray: proxy", "err", err)
		return
	}
	ns.proxy = proxy
	go func() { _ = proxy.Serve(ctx) }()
	go func() {
		res := p.raylet.Total()
		w, err := node.StartWorker(ctx, node.WorkerConfig{
			GCSAddress: gcsAddr, Dial: dial, NodeIP: ip,
			NodeManagerPort: p.cfg.Native.PortMin, MinWorkerPort: p.cfg.Native.PortMin + 1, MaxWorkerPort: p.cfg.Native.PortMax,
			WorkerEnv: tunnel.Env(proxy.Addr(), []string{noProxyNone}), TempDir: p.cfg.Native.TempDir, NodeID: p.nativeNodeID(),
			Python: p.cfg.Python, Resources: res, Labels: p.labels(), GPUIDs: gpuIDs(res["GPU"]), Ledger: p.ledger,
			ObjectStoreMemory: p.cfg.ObjectStoreMemory, PrestartWorkers: p.cfg.PrestartWorkers,
			IdleWorkerTimeout: p.cfg.IdleWorkerTimeout, Logger: p.log,
		})
		if err != nil {
			p.log.Error("native Ray: worker node did not start", "err", err)
			return
		}
		ns.mu.Lock()
		ns.worker = w
		ns.mu.Unlock()
		// Drivers started on this machine find the raylet through it.
		if stop, err := startRayletMarker(p.nativeNodeID(), ip); err != nil {
			p.log.Warn("native Ray: local drivers cannot find this raylet", "err", err)
		} else {
			context.AfterFunc(ctx, stop)
		}
		p.log.Info("native Ray node joined the head", "pool_address", ip, "gcs", gcsAddr)
	}()
}

// handleDirect serves another provider's direct tunnel stream (from the
// peer listener) once the native side is up; before, it is refused.
func (p *Provider) handleDirect(c net.Conn) {
	p.native.mu.Lock()
	a := p.native.agent
	p.native.mu.Unlock()
	if a == nil {
		_ = c.Close()
		return
	}
	a.HandleDirect(c)
}

// noProxyNone is the one host the workers' gRPC may skip the proxy for: a
// name that resolves nowhere, so that a no_proxy inherited from the
// provider's environment (gRPC falls back to it) exempts nothing.
const noProxyNone = "gray.invalid"

// nativeNodeID is the native node's id: the provider's node id, padded to
// Ray's 28 bytes, so both worlds name the provider alike.
func (p *Provider) nativeNodeID() []byte {
	id := make([]byte, 28)
	copy(id, p.nodeID.Bytes())
	return id
}

func gpuIDs(n float64) []int {
	out := make([]int, 0, int(n))
	for i := 0; i < int(n); i++ {
		out = append(out, i)
	}
	return out
}

// nativePorts is what Register offers.
func (p *Provider) nativePorts() (bool, int32, int32) {
	c := p.cfg.Native
	if !c.Enabled {
		return false, 0, 0
	}
	return true, int32(c.PortMin), int32(c.PortMax)
}

// NativeNodeUp reports whether the provider's native node has joined.
func (p *Provider) NativeNodeUp() bool {
	p.native.mu.Lock()
	defer p.native.mu.Unlock()
	return p.native.worker != nil
}

func (p *Provider) closeNative() {
	ns := &p.native
	ns.mu.Lock()
	w, a, px, cancel := ns.worker, ns.agent, ns.proxy, ns.cancel
	ns.mu.Unlock()
	if w != nil {
		_ = w.Close()
	}
	if px != nil {
		_ = px.Close()
	}
	if a != nil {
		_ = a.Close()
	}
	if cancel != nil {
		cancel()
	}
}

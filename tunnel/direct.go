package tunnel

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/gray-cluster/gray/transport"
)

// Direct paths between providers. A provider that serves direct streams
// (on its peer listener, behind Mux) takes dial streams from other
// providers for its own targets; an agent with a direct transport asks the
// head once per host where its owner takes them (resolve), dials the owner
// directly, checks that the peer's certificate names the node the head
// named, and falls back to the head's relay when the owner takes none or
// cannot be reached (a provider behind NAT: no inbound).

// Bounds of the direct path.
const (
	// DirectDialTimeout bounds a direct dial before falling back.
	DirectDialTimeout = 2 * time.Second
	// directBackoff is how long an owner that failed is not dialled
	// directly again.
	directBackoff = 30 * time.Second
	// resolveTTL is how long the head's answer is kept.
	resolveTTL = 5 * time.Minute
)

// serveResolve answers where target's owner takes direct streams, for
// targets from may reach.
func (h *Hub) serveResolve(c net.Conn, from, target string) {
	if h.cfg.AllowTarget != nil && !h.cfg.AllowTarget(from, target) {
		_ = h.reply(c, fmt.Errorf("%w: %s may not reach %s", ErrRefused, from, target))
		return
	}
	msg := ""
	if h.cfg.Peer != nil {
		host, _, _ := splitTarget(target) // validated by readFrame
		if node, addr, ok := h.cfg.Peer(host); ok && node != "" && addr != "" && node != from {
			msg = node + " " + addr
		}
	}
	_ = c.SetWriteDeadline(time.Now().Add(h.cfg.HeaderTimeout))
	defer c.SetWriteDeadline(time.Time{})
	_ = writeStatus(c, stOK, msg)
}

// route is what an agent knows of a host's direct path.
type route struct {
	node, addr  string    // "" addr: none (use the head)
	expires     time.Time // of the head's answer
	failedUntil time.Time // direct dials skipped until then
}

// directRoutes caches resolve answers by host.
type directRoutes struct {
	mu     sync.Mutex
	routes map[string]*route
}

func (d *directRoutes) get(host string, now time.Time) (route, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	r, ok := d.routes[host]
	if !ok || now.After(r.expires) {
		return route{}, false
	}
	return *r, true
}

func (d *directRoutes) put(host string, r route) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.routes == nil {
		d.routes = map[string]*route{}
	}
	d.routes[host] = &r
}

func (d *directRoutes) failed(host string, until time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if r, ok := d.routes[host]; ok {
		r.failedUntil = until
	}
}

// resolve asks the head (or the cache) for host's direct path.
func (a *Agent) resolve(ctx context.Context, target string) (route, error) {
	host, _, _ := splitTarget(target)
	now := time.Now()
	if r, ok := a.direct.get(host, now); ok {
		return r, nil
	}
	msg, err := a.askResolve(ctx, target)
	if err != nil {
		// Not known (a head that does not resolve, or one unreachable
		// now): relay for a while before asking again.
		a.direct.put(host, route{expires: now.Add(directBackoff)})
		return route{}, err
	}
	r := route{expires: now.Add(resolveTTL)}
	if node, addr, ok := strings.Cut(msg, " "); ok {
		r.node, r.addr = node, addr
	}
	a.direct.put(host, r)
	return r, nil
}

func (a *Agent) askResolve(ctx context.Context, target string) (string, error) {
	c, err := a.tr.Dial(ctx, a.headAddr)
	if err != nil {
		return "", fmt.Errorf("%w: head %s: %w", ErrNoRoute, a.headAddr, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(a.cfg.HeaderTimeout))
	if _, err := c.Write(header{op: opResolve, target: target}.streamHeader()); err != nil {
		return "", err
	}
	return readStatusMsg(c)
}

// dialDirect tries target's owner directly; ok false means use the head
// (no direct path, or it failed: then it is skipped for a while).
func (a *Agent) dialDirect(ctx context.Context, target string) (net.Conn, bool) {
	if a.cfg.DirectTransport == nil {
		return nil, false
	}
	r, err := a.resolve(ctx, target)
	if err != nil || r.addr == "" || time.Now().Before(r.failedUntil) {
		return nil, false
	}
	host, _, _ := splitTarget(target)
	dctx, cancel := context.WithTimeout(ctx, DirectDialTimeout)
	defer cancel()
	c, err := a.openDirect(dctx, r, target)
	if err != nil {
		a.log.Info("tunnel: direct path failed; relaying through the head", "target", target, "peer", r.addr, "err", err)
		a.direct.failed(host, time.Now().Add(directBackoff))
		return nil, false
	}
	return c, true
}

func (a *Agent) openDirect(ctx context.Context, r route, target string) (net.Conn, error) {
	c, err := a.cfg.DirectTransport.Dial(ctx, r.addr)
	if err != nil {
		return nil, err
	}
	if peer, _ := transport.PeerOf(c); peer.NodeID != r.node {
		_ = c.Close()
		return nil, fmt.Errorf("%w: %s is %q, not %q", ErrRefused, r.addr, peer.NodeID, r.node)
	}
	if d, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	_, err = c.Write(header{op: opDial, target: target}.streamHeader())
	if err == nil {
		err = readStatus(c)
	}
	if !stop() && err == nil {
		err = ctx.Err()
	}
	if err != nil {
		_ = c.Close()
		return nil, err
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// HandleDirect serves one direct stream from another provider (c from the
// peer listener, behind Mux): a dial of one of this provider's own targets
// (its AgentConfig.Hosts, never loopback) that AgentConfig.DirectAllow
// lets the peer reach. It closes c.
func (a *Agent) HandleDirect(c net.Conn) {
	if !a.conns.add(c) {
		return
	}
	defer func() {
		_ = c.Close()
		a.conns.remove(c)
	}()
	_ = c.SetDeadline(time.Now().Add(a.cfg.HeaderTimeout))
	hdr, err := readStreamHeader(c)
	if err != nil {
		_ = writeStatus(c, stBadRequest, err.Error())
		return
	}
	peer, _ := transport.PeerOf(c)
	host, _, _ := splitTarget(hdr.target)
	switch {
	case hdr.op != opDial:
		_ = writeErrStatus(c, fmt.Errorf("%w: op %d on a direct stream", ErrBadRequest, hdr.op))
		return
	case peer.NodeID == "" || !a.own[host] || a.cfg.DirectAllow == nil || !a.cfg.DirectAllow(peer.NodeID, hdr.target):
		a.log.Warn("tunnel: direct dial refused", "from", peer.NodeID, "target", hdr.target)
		_ = writeErrStatus(c, fmt.Errorf("%w: %q may not reach %s", ErrRefused, peer.NodeID, hdr.target))
		return
	}
	ctx, cancel := context.WithTimeout(a.ctx, a.cfg.DialTimeout)
	local, err := a.cfg.DialLocal(ctx, "tcp", hdr.target)
	cancel()
	if err != nil {
		_ = writeErrStatus(c, fmt.Errorf("%w: provider: %w", ErrUnreachable, err))
		return
	}
	if !a.conns.add(local) {
		return
	}
	defer a.conns.remove(local)
	if err := writeStatus(c, stOK, ""); err != nil {
		_ = local.Close()
		return
	}
	_ = c.SetDeadline(time.Time{})
	pipe(c, local)
}

package tunnel

import (
	"context"
	"fmt"
	"net"
	"time"
)

// The reverse path: the head reaches a target on a provider by writing an
// open record on the provider's listen stream; the provider dials the target
// and answers with a back stream carrying that id.

// serveListen keeps a provider's listen stream until it ends. A newer listen
// stream from the same node replaces it.
func (h *Hub) serveListen(c net.Conn, node string) {
	s := &session{node: node, conn: c, timeout: h.cfg.HeaderTimeout, done: make(chan struct{})}
	// The OK goes out before the session is known, so no open record can
	// precede it.
	if err := h.reply(c, nil); err != nil {
		return
	}
	h.mu.Lock()
	old := h.sessions[node]
	h.sessions[node] = s
	h.mu.Unlock()
	if old != nil {
		_ = old.conn.Close()
	}
	h.log.Info("tunnel: provider connected", "node", node, "remote", c.RemoteAddr())

	h.wg.Add(1) // under Handle's count, so never racing Close's Wait
	go func() {
		defer h.wg.Done()
		t := time.NewTicker(h.cfg.PingInterval)
		defer t.Stop()
		for {
			select {
			case <-s.done:
				return
			case <-t.C:
				if err := s.send(header{op: opPing}); err != nil {
					_ = c.Close()
					return
				}
			}
		}
	}()

	// Agents send nothing after the header; a read returns when the stream
	// (or the provider's QUIC connection) goes.
	var b [64]byte
	for {
		if _, err := c.Read(b[:]); err != nil {
			break
		}
	}
	close(s.done) // waiters on this session's opens give up
	h.mu.Lock()
	if h.sessions[node] == s {
		delete(h.sessions, node)
	}
	h.mu.Unlock()
	h.log.Info("tunnel: provider disconnected", "node", node)
}

// open asks node to connect to target and waits for its back stream.
func (h *Hub) open(ctx context.Context, node, target string) (net.Conn, error) {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, fmt.Errorf("dial %s: %w", target, ErrClosed)
	}
	s := h.sessions[node]
	if s == nil {
		h.mu.Unlock()
		return nil, fmt.Errorf("%w: node %s (for %s) has no tunnel to the head", ErrNoRoute, node, target)
	}
	h.nextID++
	id := h.nextID
	p := &pendingOpen{node: node, ch: make(chan backResult, 1)}
	h.pending[id] = p
	h.mu.Unlock()

	if err := s.send(header{op: opOpen, id: id, target: target}); err != nil {
		h.claim(id)
		_ = s.conn.Close() // the listen stream is broken
		return nil, fmt.Errorf("%w: node %s: tunnel: %w", ErrNoRoute, node, err)
	}
	timer := time.NewTimer(h.cfg.OpenTimeout)
	defer timer.Stop()
	var why error
	select {
	case r := <-p.ch:
		return r.conn, r.err
	case <-timer.C:
		why = fmt.Errorf("%w: node %s did not answer for %s within %v", ErrTimeout, node, target, h.cfg.OpenTimeout)
	case <-ctx.Done():
		why = fmt.Errorf("dial %s: %w", target, ctx.Err())
	case <-s.done:
		why = fmt.Errorf("%w: node %s's tunnel dropped (dialling %s)", ErrNoRoute, node, target)
	case <-h.ctx.Done():
		why = fmt.Errorf("dial %s: %w", target, ErrClosed)
	}
	if !h.claim(id) {
		// A back stream claimed it first; its result is on the way.
		if r := <-p.ch; r.conn != nil {
			_ = r.conn.Close()
		}
	}
	return nil, why
}

// claim removes the pending open id; false if someone already had.
func (h *Hub) claim(id uint64) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.pending[id] == nil {
		return false
	}
	delete(h.pending, id)
	return true
}

// serveBack pairs a provider's back stream with the open it answers. It
// reports whether c was handed to that open's waiter (which then owns it).
func (h *Hub) serveBack(c net.Conn, node string, id uint64) bool {
	_ = c.SetReadDeadline(time.Now().Add(h.cfg.HeaderTimeout))
	dialErr := readStatus(c) // the provider's dial result
	_ = c.SetReadDeadline(time.Time{})

	h.mu.Lock()
	p := h.pending[id]
	if p == nil || p.node != node {
		h.mu.Unlock()
		h.log.Warn("tunnel: refused back stream nobody asked for", "node", node, "id", id)
		_ = h.reply(c, fmt.Errorf("%w: no open %d was asked of node %s", ErrRefused, id, node))
		return false
	}
	delete(h.pending, id)
	h.mu.Unlock()

	if dialErr != nil {
		if _, ok := dialErr.(remoteError); !ok {
			dialErr = fmt.Errorf("%w: back stream: %w", ErrUnreachable, dialErr)
		}
		p.ch <- backResult{err: fmt.Errorf("node %s: %w", node, dialErr)}
		return false
	}
	if err := h.reply(c, nil); err != nil {
		p.ch <- backResult{err: fmt.Errorf("%w: node %s: back stream: %w", ErrUnreachable, node, err)}
		return false
	}
	h.conns.remove(c) // the waiter tracks it from here
	p.ch <- backResult{conn: c}
	return true
}

package membership

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/memberlist"
)

// peer is this node's record of another member. Guarded by Membership.mu.
type peer struct {
	name    string
	meta    Meta
	addr    string
	state   State
	reason  Reason // why Suspect (ReasonProbeSilence or ReasonFailed)
	since   time.Time
	leaving bool // saw the leaving flag: the next NotifyLeave means Left

	srtt        time.Duration
	lastContact time.Time // real monotonic time of the last ack (or join/update)

	gen          uint64 // bumped on every state change; stale timers check it
	deadTimer    Timer
	deadline     time.Time
	lastPing     time.Time // real time of the last reconnect attempt
	reconnecting bool
}

func (p *peer) snapshot() Member {
	return Member{
		Name: p.name, Meta: p.meta.Clone(), Addr: p.addr, State: p.state,
		RTT: p.srtt, Since: p.since,
	}
}

func (p *peer) stopTimer() {
	if p.deadTimer != nil {
		p.deadTimer.Stop()
		p.deadTimer = nil
	}
}

// failed reports whether memberlist declared p failed and the Dead timer runs.
func (p *peer) failed() bool { return p.state == StateSuspect && p.reason == ReasonFailed }

// emitLocked queues an event for p. Callers hold m.mu, which keeps the queue
// in the order the state changes happened.
func (m *Membership) emitLocked(t EventType, p *peer, r Reason) {
	ev := Event{Type: t, Member: p.snapshot(), Reason: r, At: m.clock.Now()}
	if t == EventSuspect && r == ReasonFailed {
		ev.Deadline = p.deadline
	}
	m.log.Debug("member event", "event", t.String(), "member", p.name, "reason", string(r), "addr", p.addr)
	m.q.push(queued{ev: ev})
}

// setStateLocked moves p to state s, invalidating any pending timer.
func (m *Membership) setStateLocked(p *peer, s State, r Reason) {
	p.stopTimer()
	p.state, p.reason, p.since = s, r, m.clock.Now()
	p.gen++
}

// hooks implements memberlist's delegates; it is a separate type so that the
// delegate methods do not join Membership's public API. memberlist calls them
// from its own goroutines, often holding its node lock: they must never call
// back into memberlist.
type hooks struct{ m *Membership }

var (
	_ memberlist.Delegate         = (*hooks)(nil)
	_ memberlist.EventDelegate    = (*hooks)(nil)
	_ memberlist.PingDelegate     = (*hooks)(nil)
	_ memberlist.AliveDelegate    = (*hooks)(nil)
	_ memberlist.ConflictDelegate = (*hooks)(nil)
)

// NodeMeta serves the local encoded metadata (size-checked in advance).
func (h *hooks) NodeMeta(limit int) []byte {
	m := h.m
	m.metaMu.Lock()
	defer m.metaMu.Unlock()
	if len(m.metaWire) > limit { // unreachable: validate() checks MetaMaxSize
		m.log.Error("metadata over memberlist limit; advertising none", "size", len(m.metaWire), "limit", limit)
		return nil
	}
	return m.metaWire
}

func (h *hooks) NotifyMsg([]byte)                           {}
func (h *hooks) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (h *hooks) LocalState(join bool) []byte                { return nil }
func (h *hooks) MergeRemoteState(buf []byte, join bool)     {}

// NotifyAlive rejects nodes whose metadata is not ours (a foreign memberlist
// cluster sharing the key, or a corrupted update).
func (h *hooks) NotifyAlive(n *memberlist.Node) error {
	if n.Name == h.m.cfg.Name {
		return nil
	}
	if _, _, err := decodeMeta(n.Meta); err != nil {
		return fmt.Errorf("node %s: %w", n.Name, err)
	}
	return nil
}

// NotifyConflict logs two nodes claiming the same name.
func (h *hooks) NotifyConflict(existing, other *memberlist.Node) {
	h.m.log.Warn("node name conflict", "name", existing.Name,
		"existing", existing.Address(), "other", other.Address())
}

// NotifyJoin: a node is new, or came back after memberlist saw it dead/left.
func (h *hooks) NotifyJoin(n *memberlist.Node) {
	m := h.m
	if n.Name == m.cfg.Name {
		return
	}
	meta, leaving, err := decodeMeta(n.Meta)
	if err != nil { // NotifyAlive already filters these
		m.log.Warn("ignoring member with bad metadata", "member", n.Name, "err", err)
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.closed {
		m.joinLocked(n, meta, leaving)
	}
}

func (m *Membership) joinLocked(n *memberlist.Node, meta Meta, leaving bool) {
	p := m.peers[n.Name]
	switch {
	case p == nil:
		p = &peer{name: n.Name, meta: meta, addr: n.Address(), leaving: leaving, lastContact: time.Now()}
		m.peers[n.Name] = p
		m.setStateLocked(p, StateAlive, "")
		m.emitLocked(EventJoined, p, "")
	case p.state == StateSuspect:
		changed := !p.meta.Equal(meta)
		p.meta, p.addr, p.leaving, p.lastContact = meta, n.Address(), leaving, time.Now()
		r := ReasonRejoined
		if !p.failed() {
			r = ReasonAck
		}
		m.setStateLocked(p, StateAlive, "")
		m.emitLocked(EventAlive, p, r)
		if changed {
			m.emitLocked(EventUpdated, p, "")
		}
	default:
		changed := !p.meta.Equal(meta)
		p.meta, p.addr, p.leaving, p.lastContact = meta, n.Address(), leaving, time.Now()
		if changed {
			m.emitLocked(EventUpdated, p, "")
		}
	}
}

// NotifyUpdate: a node's metadata changed (or it set the leaving flag).
func (h *hooks) NotifyUpdate(n *memberlist.Node) {
	m := h.m
	if n.Name == m.cfg.Name {
		return
	}
	meta, leaving, err := decodeMeta(n.Meta)
	if err != nil {
		m.log.Warn("ignoring bad metadata update", "member", n.Name, "err", err)
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	p := m.peers[n.Name]
	if p == nil { // we never saw it join: treat as a join
		m.joinLocked(n, meta, leaving)
		return
	}
	// A new incarnation was generated by the node itself: evidence of life.
	p.lastContact = time.Now()
	p.addr = n.Address()
	p.leaving = leaving
	if !p.meta.Equal(meta) {
		p.meta = meta
		m.emitLocked(EventUpdated, p, "")
	}
}

// NotifyLeave: memberlist marked the node dead or left; it does not say
// which, so the leaving flag decides. A failure is reported Suspect and
// becomes Dead only after the grace period.
func (h *hooks) NotifyLeave(n *memberlist.Node) {
	m := h.m
	if n.Name == m.cfg.Name {
		return
	}
	_, leavingNow, _ := decodeMeta(n.Meta)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	p := m.peers[n.Name]
	if p == nil {
		return
	}
	if p.leaving || leavingNow {
		m.setStateLocked(p, StateLeft, "")
		delete(m.peers, p.name)
		m.emitLocked(EventLeft, p, "")
		return
	}
	if p.failed() {
		return
	}
	grace := m.cfg.DeadAfter + graceRTTMultiple*p.srtt
	m.setStateLocked(p, StateSuspect, ReasonFailed)
	p.deadline = p.since.Add(grace)
	p.lastPing = time.Now()
	gen := p.gen
	p.deadTimer = m.clock.AfterFunc(grace, func() { m.graceExpired(p.name, gen) })
	m.emitLocked(EventSuspect, p, ReasonFailed)
}

// graceExpired reports the member Dead unless it came back meanwhile.
func (m *Membership) graceExpired(name string, gen uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p := m.peers[name]
	if m.closed || p == nil || p.gen != gen || !p.failed() {
		return
	}
	m.setStateLocked(p, StateDead, ReasonGraceExpired)
	delete(m.peers, name)
	m.emitLocked(EventDead, p, ReasonGraceExpired)
}

// AckPayload: nothing extra rides on probe acks.
func (h *hooks) AckPayload() []byte { return nil }

// NotifyPingComplete records a successful probe: RTT and last contact. A
// probe-silence Suspect is healthy again.
func (h *hooks) NotifyPingComplete(n *memberlist.Node, rtt time.Duration, _ []byte) {
	m := h.m
	m.mu.Lock()
	defer m.mu.Unlock()
	p := m.peers[n.Name]
	if m.closed || p == nil {
		return
	}
	p.observeRTT(rtt)
	if m.pingHook != nil {
		m.pingHook(p.name, rtt)
	}
	p.lastContact = time.Now()
	if p.state == StateSuspect && p.reason == ReasonProbeSilence {
		m.setStateLocked(p, StateAlive, "")
		m.emitLocked(EventAlive, p, ReasonAck)
	}
}

// observeRTT updates the smoothed RTT (TCP-style EWMA, gain 1/8).
func (p *peer) observeRTT(rtt time.Duration) {
	if rtt <= 0 {
		return
	}
	if p.srtt == 0 {
		p.srtt = rtt
		return
	}
	p.srtt += (rtt - p.srtt) / 8
}

// monitor runs probe-silence suspicion and reconnect attempts once per
// memberlist probe interval until ctx ends.
func (m *Membership) monitor(ctx context.Context) {
	tick := m.mc.ProbeInterval
	if tick < 20*time.Millisecond {
		tick = 20 * time.Millisecond
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ml, err := m.memberlist()
		if err != nil {
			return
		}
		// Read memberlist state before taking m.mu (lock order: memberlist's
		// node lock, then m.mu, as in the delegates).
		n, health := ml.NumMembers(), ml.GetHealthScore()
		m.checkSilence(n, health)
		m.reconnect(ctx, ml)
	}
}

// silenceThreshold is how long a member may go without a probe ack before it
// is reported Suspect. memberlist probes one peer per (health-scaled)
// ProbeInterval in round-robin over a reshuffled list, so the gap between two
// probes of one peer stays under two rounds; three rounds leave margin.
func (m *Membership) silenceThreshold(members, health int, srtt time.Duration) time.Duration {
	if m.cfg.SuspectAfter < 0 {
		return 0
	}
	if m.cfg.SuspectAfter > 0 {
		return m.cfg.SuspectAfter + 4*srtt
	}
	peers := max(members-1, 1)
	round := time.Duration(peers) * m.mc.ProbeInterval * time.Duration(1+health)
	return 3*round + m.mc.ProbeTimeout + 4*srtt
}

func (m *Membership) checkSilence(members, health int) {
	if m.cfg.SuspectAfter < 0 {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	for _, p := range m.peers {
		if p.state != StateAlive {
			continue
		}
		limit := m.silenceThreshold(members, health, p.srtt)
		if silent := time.Since(p.lastContact); silent > limit {
			m.log.Debug("member silent", "member", p.name, "silent", silent, "limit", limit)
			m.setStateLocked(p, StateSuspect, ReasonProbeSilence)
			m.emitLocked(EventSuspect, p, ReasonProbeSilence)
		}
	}
}

// reconnect pings failed members during their grace period and re-joins the
// ones that answer: after a partition heals, both sides may consider the
// other dead and stop gossiping to it, which memberlist alone does not undo.
func (m *Membership) reconnect(ctx context.Context, ml *memberlist.Memberlist) {
	type target struct{ name, addr string }
	var todo []target
	m.mu.Lock()
	for _, p := range m.peers {
		if p.failed() && !p.reconnecting && time.Since(p.lastPing) >= m.cfg.ReconnectInterval {
			p.reconnecting, p.lastPing = true, time.Now()
			todo = append(todo, target{p.name, p.addr})
		}
	}
	m.mu.Unlock()
	for _, t := range todo {
		go func() {
			defer func() {
				m.mu.Lock()
				if p := m.peers[t.name]; p != nil {
					p.reconnecting = false
				}
				m.mu.Unlock()
			}()
			udp, err := net.ResolveUDPAddr("udp", t.addr)
			if err != nil || ctx.Err() != nil {
				return
			}
			rtt, err := ml.Ping(t.name, udp)
			if err != nil || ctx.Err() != nil {
				m.log.Debug("reconnect: no answer", "member", t.name, "addr", t.addr)
				return
			}
			m.log.Info("reconnect: failed member answers, re-joining", "member", t.name, "rtt", rtt)
			if _, err := ml.Join([]string{t.addr}); err != nil {
				m.log.Debug("reconnect: join failed", "member", t.name, "err", err)
			}
		}()
	}
}

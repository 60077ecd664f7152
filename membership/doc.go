// Package membership is gray's gossip membership layer: the head and the
// provider raylets discover each other, exchange a small piece of metadata
// (role, region, control address, GPU summary, labels) and learn about each
// other's failures, on top of github.com/hashicorp/memberlist (SWIM).
//
// The cluster is spread over the internet (20–150 ms RTT), so the package is
// built around one rule: a node that is slow or briefly unreachable is
// reported Suspect (the caller pauses its work), and Dead only after an
// RTT-aware grace period during which it did not come back.
//
// # Lifecycle
//
//	m, err := membership.New(membership.Config{Name: "r1", Meta: meta, SecretKey: key, OnEvent: fn})
//	err = m.Start(ctx)                 // binds UDP+TCP, starts gossip
//	n, err := m.Join([]string{"head.example:7946"})
//	for _, mem := range m.Members() { ... }
//	err = m.UpdateMeta(newMeta)        // gossiped via memberlist UpdateNode
//	err = m.Leave(5 * time.Second)     // graceful: peers report Left
//	err = m.Close()
//
// Gossip is always encrypted: Config.SecretKey (16, 24 or 32 bytes) becomes
// memberlist's keyring and nodes with another key cannot join.
//
// # Suspect and Dead
//
// memberlist has no public "suspect" notification (its suspect state lives in
// an unexported field) and reports "dead" and "left" through the same
// EventDelegate.NotifyLeave call. This package layers its own per-member state
// machine on the delegates memberlist does expose:
//
//   - Suspect, Reason ReasonProbeSilence: an early warning derived from probe
//     acks. Every successful memberlist probe reaches the PingDelegate
//     (NotifyPingComplete), which records the RTT (smoothed like TCP's SRTT)
//     and the time of last contact. memberlist probes one peer per
//     ProbeInterval in round-robin, so a healthy peer is acked at least once
//     every ~2 rounds; a peer silent for 3 rounds (scaled by memberlist's
//     health score, plus 4×its SRTT, or Config.SuspectAfter when set) is
//     reported Suspect. The next ack reports it Alive again (ReasonAck).
//     This never leads to Dead by itself.
//   - Suspect, Reason ReasonFailed: memberlist declared the node failed
//     (NotifyLeave without the node having announced its departure). The
//     caller gets Suspect at once, never Dead, and a timer on the injected
//     Clock is armed for DeadAfter + 16×SRTT (Event.Deadline). While it runs
//     the node is UDP-pinged every ReconnectInterval and, when it answers,
//     re-joined (memberlist alone does not heal a partition whose sides both
//     think the other is dead). If the node comes back (memberlist
//     NotifyJoin: it refuted its death with a higher incarnation, or was
//     restarted under the same name) the timer is cancelled and the node is
//     reported Alive with ReasonRejoined; it is never reported Dead.
//   - Dead: the timer fired and the node was still gone.
//   - Left: the node called Leave. Because memberlist's NotifyLeave does not
//     say whether the node left or failed, Leave first re-advertises the
//     local metadata with a hidden "leaving" flag (UpdateNode, which waits for
//     the broadcast) and only then calls memberlist's Leave; peers that saw
//     the flag report Left, immediately and without Suspect. A peer that
//     missed the flag falls back to Suspect → Dead after the grace.
//
// Suspect can therefore be reported twice for one outage (ReasonProbeSilence
// then ReasonFailed); callers should treat it idempotently. Members() lists
// Alive and Suspect members (including the local one); Dead and Left members
// are dropped from the table once the event has been emitted.
//
// Events are delivered to Config.OnEvent from a single goroutine, in order,
// outside memberlist's locks (so the callback may call Members()).
//
// The probe-silence measurement uses the real monotonic clock (it measures the
// network, whose probes run in real time); the Dead decision and event
// timestamps use Config.Clock, so tests can step over the grace period.
package membership

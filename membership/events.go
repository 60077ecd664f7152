package membership

import (
	"fmt"
	"sync"
	"time"
)

// State is a member's health as reported by this package.
type State int

const (
	StateAlive   State = iota // reachable
	StateSuspect              // slow or unreachable: pause its work
	StateDead                 // gone for longer than the grace period
	StateLeft                 // left gracefully
)

func (s State) String() string {
	switch s {
	case StateAlive:
		return "alive"
	case StateSuspect:
		return "suspect"
	case StateDead:
		return "dead"
	case StateLeft:
		return "left"
	}
	return fmt.Sprintf("state(%d)", int(s))
}

// Member is a snapshot of one cluster member.
type Member struct {
	Name  string        // memberlist node name
	Meta  Meta          // gossiped metadata
	Addr  string        // gossip address, host:port
	State State         //
	RTT   time.Duration // smoothed probe RTT from this node; 0 until measured
	Since time.Time     // when State last changed (Config.Clock)
	Local bool          // the member is this node
}

// EventType says what happened to a member.
type EventType int

const (
	EventJoined  EventType = iota + 1 // first seen (or back after Dead/Left)
	EventUpdated                      // metadata changed
	EventSuspect                      // slow or unreachable; see Event.Reason
	EventAlive                        // a Suspect member is healthy again
	EventDead                         // still gone after the grace period
	EventLeft                         // left gracefully
)

func (t EventType) String() string {
	switch t {
	case EventJoined:
		return "joined"
	case EventUpdated:
		return "updated"
	case EventSuspect:
		return "suspect"
	case EventAlive:
		return "alive"
	case EventDead:
		return "dead"
	case EventLeft:
		return "left"
	}
	return fmt.Sprintf("event(%d)", int(t))
}

// Reason qualifies Suspect, Alive and Dead events.
type Reason string

const (
	// ReasonProbeSilence: no probe ack for longer than the silence threshold.
	ReasonProbeSilence Reason = "probe-silence"
	// ReasonFailed: memberlist declared the node failed; the Dead timer runs.
	ReasonFailed Reason = "failed"
	// ReasonAck: a probe ack arrived from a probe-silence Suspect.
	ReasonAck Reason = "ack"
	// ReasonRejoined: a failed node came back within the grace period.
	ReasonRejoined Reason = "rejoined"
	// ReasonGraceExpired: the grace period ran out (Dead).
	ReasonGraceExpired Reason = "grace-expired"
)

// Event reports a change to a member.
type Event struct {
	Type   EventType
	Member Member    // snapshot after the change
	Reason Reason    // for Suspect, Alive and Dead
	At     time.Time // Config.Clock time of the change
	// Deadline is when the member will be reported Dead unless it comes
	// back; set on Suspect events with ReasonFailed.
	Deadline time.Time
}

func (e Event) String() string {
	s := fmt.Sprintf("%s %s", e.Type, e.Member.Name)
	if e.Reason != "" {
		s += " (" + string(e.Reason) + ")"
	}
	return s
}

// eventQueue is an unbounded FIFO drained by one goroutine, so that
// memberlist's delegate callbacks (which run under memberlist's locks) never
// block on, or re-enter from, the user's OnEvent.
type eventQueue struct {
	mu     sync.Mutex
	cond   *sync.Cond
	items  []queued
	closed bool
	done   chan struct{}
}

type queued struct {
	ev      Event
	barrier chan struct{} // non-nil: closed when reached (flush)
}

func newEventQueue() *eventQueue {
	q := &eventQueue{done: make(chan struct{})}
	q.cond = sync.NewCond(&q.mu)
	return q
}

func (q *eventQueue) push(it queued) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return false
	}
	q.items = append(q.items, it)
	q.cond.Signal()
	return true
}

// flush returns a channel closed once every event queued before the call has
// been delivered.
func (q *eventQueue) flush() <-chan struct{} {
	ch := make(chan struct{})
	if !q.push(queued{barrier: ch}) {
		close(ch)
	}
	return ch
}

// close stops accepting events; run delivers what is queued and returns.
func (q *eventQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.cond.Broadcast()
	q.mu.Unlock()
}

func (q *eventQueue) run(deliver func(Event)) {
	defer close(q.done)
	for {
		q.mu.Lock()
		for len(q.items) == 0 && !q.closed {
			q.cond.Wait()
		}
		if len(q.items) == 0 {
			q.mu.Unlock()
			return
		}
		it := q.items[0]
		q.items[0] = queued{}
		q.items = q.items[1:]
		q.mu.Unlock()
		if it.barrier != nil {
			close(it.barrier)
			continue
		}
		if deliver != nil {
			deliver(it.ev)
		}
	}
}

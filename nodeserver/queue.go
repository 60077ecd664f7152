package nodeserver

import (
	"context"
	"sync"

	pb "github.com/gray-cluster/gray/proto/nodepb"
)

// sendQueue is an unbounded FIFO of messages for one provider's control
// channel. Pushing never blocks (the head must not stall on a slow
// provider), and an idle queue costs a few words, not a preallocated
// buffer, so thousands of providers stay cheap.
type sendQueue struct {
	mu     sync.Mutex
	items  []*pb.HeadMessage
	notify chan struct{}
}

func newSendQueue() *sendQueue { return &sendQueue{notify: make(chan struct{}, 1)} }

func (q *sendQueue) push(m *pb.HeadMessage) {
	q.mu.Lock()
	q.items = append(q.items, m)
	q.mu.Unlock()
	select {
	case q.notify <- struct{}{}:
	default:
	}
}

// take waits for messages and returns all that are queued, in order.
func (q *sendQueue) take(ctx context.Context) ([]*pb.HeadMessage, error) {
	for {
		q.mu.Lock()
		items := q.items
		q.items = nil
		q.mu.Unlock()
		if len(items) > 0 {
			return items, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-q.notify:
		}
	}
}

package gcsserver

import (
	"bytes"
	"context"
	"crypto/rand"
	"sync"
	"time"

	"github.com/gray-cluster/gray/proto/ray/raypb"
)

// Limits of one subscriber's mailbox and of one poll reply.
const (
	maxMailbox      = 10000
	maxPollMessages = 1000
)

// publisher is Ray's GCS-side long-poll publisher: subscribers register
// interest per channel (all keys or given keys) and collect messages with
// GcsSubscriberPoll. Messages carry a per-publisher sequence id; a poll
// acknowledges everything up to max_processed_sequence_id.
type publisher struct {
	name string
	id   []byte // random per server start
	now  func() time.Time
	hold time.Duration

	mu     sync.Mutex
	seq    int64
	subs   map[string]*subscriber
	done   chan struct{}
	closed bool
}

type subscriber struct {
	id       []byte
	all      map[raypb.ChannelType]bool
	keys     map[raypb.ChannelType]map[string]bool
	mailbox  []*raypb.PubMessage
	wake     chan struct{} // closed when the mailbox grows or the poll is replaced
	pollGen  uint64
	polling  int
	lastSeen time.Time
}

func newPublisher(name string, now func() time.Time, hold time.Duration) *publisher {
	id := make([]byte, 28)
	_, _ = rand.Read(id)
	return &publisher{name: name, id: id, now: now, hold: hold, subs: map[string]*subscriber{}, done: make(chan struct{})}
}

func (p *publisher) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.closed {
		p.closed = true
		close(p.done)
	}
}

// sub returns (creating) a subscriber; p.mu is held.
func (p *publisher) sub(id []byte) *subscriber {
	s := p.subs[string(id)]
	if s == nil {
		s = &subscriber{
			id:   append([]byte(nil), id...),
			all:  map[raypb.ChannelType]bool{},
			keys: map[raypb.ChannelType]map[string]bool{},
			wake: make(chan struct{}),
		}
		p.subs[string(id)] = s
	}
	s.lastSeen = p.now()
	return s
}

func (s *subscriber) signal() {
	close(s.wake)
	s.wake = make(chan struct{})
}

func (s *subscriber) wants(ch raypb.ChannelType, key []byte) bool {
	if s.all[ch] {
		return true
	}
	return s.keys[ch][string(key)]
}

// commands applies a GcsSubscriberCommandBatch.
func (p *publisher) commands(req *raypb.GcsSubscriberCommandBatchRequest) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.sub(req.GetSubscriberId())
	for _, c := range req.GetCommands() {
		ch, key := c.GetChannelType(), c.GetKeyId()
		if c.GetUnsubscribeMessage() != nil {
			if len(key) == 0 {
				delete(s.all, ch)
				delete(s.keys, ch)
			} else if m := s.keys[ch]; m != nil {
				delete(m, string(key))
			}
			continue
		}
		if len(key) == 0 {
			s.all[ch] = true
			continue
		}
		m := s.keys[ch]
		if m == nil {
			m = map[string]bool{}
			s.keys[ch] = m
		}
		m[string(key)] = true
	}
}

// publish delivers msg to every subscriber that wants its channel and key.
// msg must not be modified afterwards.
func (p *publisher) publish(msg *raypb.PubMessage) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.seq++
	msg.SequenceId = p.seq
	for _, s := range p.subs {
		if !s.wants(msg.GetChannelType(), msg.GetKeyId()) {
			continue
		}
		if len(s.mailbox) >= maxMailbox {
			s.mailbox = s.mailbox[1:]
		}
		s.mailbox = append(s.mailbox, msg)
		s.signal()
	}
}

// poll answers a GcsSubscriberPoll: it returns at once when unacknowledged
// messages exist, otherwise holds until some arrive, the hold time passes,
// a newer poll from the same subscriber replaces it, or ctx ends.
func (p *publisher) poll(ctx context.Context, req *raypb.GcsSubscriberPollRequest) *raypb.GcsSubscriberPollReply {
	hold := p.hold
	if dl, ok := ctx.Deadline(); ok {
		if left := time.Until(dl) - time.Second; left < hold {
			hold = max(left, 0)
		}
	}
	timer := time.NewTimer(hold)
	defer timer.Stop()

	p.mu.Lock()
	s := p.sub(req.GetSubscriberId())
	processed := req.GetMaxProcessedSequenceId()
	if !bytes.Equal(req.GetPublisherId(), p.id) {
		processed = 0 // a new subscriber or one that knew another publisher
	}
	s.ack(processed)
	s.pollGen++
	gen := s.pollGen
	s.signal() // an older poll of this subscriber returns empty
	s.polling++
	defer func() {
		p.mu.Lock()
		s.polling--
		s.lastSeen = p.now()
		p.mu.Unlock()
	}()
	for {
		if s.pollGen != gen || p.closed {
			p.mu.Unlock()
			return &raypb.GcsSubscriberPollReply{PublisherId: p.id, Status: okStatus()}
		}
		if msgs := s.pending(processed); len(msgs) > 0 {
			p.mu.Unlock()
			return &raypb.GcsSubscriberPollReply{PubMessages: msgs, PublisherId: p.id, Status: okStatus()}
		}
		wake := s.wake
		p.mu.Unlock()
		select {
		case <-wake:
		case <-timer.C:
			return &raypb.GcsSubscriberPollReply{PublisherId: p.id, Status: okStatus()}
		case <-ctx.Done():
			return &raypb.GcsSubscriberPollReply{PublisherId: p.id, Status: okStatus()}
		case <-p.done:
			return &raypb.GcsSubscriberPollReply{PublisherId: p.id, Status: okStatus()}
		}
		p.mu.Lock()
	}
}

// ack drops acknowledged messages.
func (s *subscriber) ack(upTo int64) {
	i := 0
	for i < len(s.mailbox) && s.mailbox[i].GetSequenceId() <= upTo {
		i++
	}
	if i > 0 {
		s.mailbox = append([]*raypb.PubMessage(nil), s.mailbox[i:]...)
	}
}

func (s *subscriber) pending(after int64) []*raypb.PubMessage {
	var out []*raypb.PubMessage
	for _, m := range s.mailbox {
		if m.GetSequenceId() > after {
			out = append(out, m)
			if len(out) == maxPollMessages {
				break
			}
		}
	}
	return out
}

// expire drops subscribers that have not polled for longer than idle.
func (p *publisher) expire(idle time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	for k, s := range p.subs {
		if s.polling == 0 && now.Sub(s.lastSeen) > idle {
			delete(p.subs, k)
		}
	}
}

// subscribers is the number of live subscribers (for tests).
func (p *publisher) subscribers() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.subs)
}

// publish sends msg on both pub/sub services: subscriptions are per
// service, so a subscriber sees it once, on the service it subscribed with.
func (s *Server) publish(msg *raypb.PubMessage) {
	s.ctrl.publish(msg)
	s.obs.publish(clonePub(msg))
}

func clonePub(m *raypb.PubMessage) *raypb.PubMessage {
	// The payload is shared read-only; only the sequence id differs.
	return &raypb.PubMessage{ChannelType: m.GetChannelType(), KeyId: m.GetKeyId(), InnerMessage: m.InnerMessage}
}

type ctrlPubSubService struct {
	raypb.UnimplementedControlPlanePubSubGcsServiceServer
	s *Server
}

func (x *ctrlPubSubService) GcsPublish(_ context.Context, req *raypb.GcsPublishRequest) (*raypb.GcsPublishReply, error) {
	for _, m := range req.GetPubMessages() {
		x.s.publish(m)
	}
	return &raypb.GcsPublishReply{Status: okStatus()}, nil
}

func (x *ctrlPubSubService) GcsSubscriberPoll(ctx context.Context, req *raypb.GcsSubscriberPollRequest) (*raypb.GcsSubscriberPollReply, error) {
	return x.s.ctrl.poll(ctx, req), nil
}

func (x *ctrlPubSubService) GcsSubscriberCommandBatch(_ context.Context, req *raypb.GcsSubscriberCommandBatchRequest) (*raypb.GcsSubscriberCommandBatchReply, error) {
	x.s.ctrl.commands(req)
	return &raypb.GcsSubscriberCommandBatchReply{Status: okStatus()}, nil
}

type obsPubSubService struct {
	raypb.UnimplementedObservabilityPubSubServiceServer
	s *Server
}

func (x *obsPubSubService) GcsPublish(_ context.Context, req *raypb.GcsPublishRequest) (*raypb.GcsPublishReply, error) {
	for _, m := range req.GetPubMessages() {
		x.s.publish(m)
	}
	return &raypb.GcsPublishReply{Status: okStatus()}, nil
}

func (x *obsPubSubService) ReportJobError(_ context.Context, req *raypb.ReportJobErrorRequest) (*raypb.ReportJobErrorReply, error) {
	e := req.GetJobError()
	x.s.publish(&raypb.PubMessage{
		ChannelType:  raypb.ChannelType_RAY_ERROR_INFO_CHANNEL,
		KeyId:        e.GetJobId(),
		InnerMessage: &raypb.PubMessage_ErrorInfoMessage{ErrorInfoMessage: e},
	})
	return &raypb.ReportJobErrorReply{Status: okStatus()}, nil
}

func (x *obsPubSubService) GcsSubscriberPoll(ctx context.Context, req *raypb.GcsSubscriberPollRequest) (*raypb.GcsSubscriberPollReply, error) {
	return x.s.obs.poll(ctx, req), nil
}

func (x *obsPubSubService) GcsSubscriberCommandBatch(_ context.Context, req *raypb.GcsSubscriberCommandBatchRequest) (*raypb.GcsSubscriberCommandBatchReply, error) {
	x.s.obs.commands(req)
	return &raypb.GcsSubscriberCommandBatchReply{Status: okStatus()}, nil
}

// PublishError sends an error to the drivers of a job (RAY_ERROR_INFO_CHANNEL,
// keyed like Ray's publishers by the job id's hex text), as ReportJobError
// does.
func (s *Server) PublishError(jobID []byte, typ, message string) {
	s.publish(&raypb.PubMessage{
		ChannelType: raypb.ChannelType_RAY_ERROR_INFO_CHANNEL,
		KeyId:       []byte(hexID(jobID)),
		InnerMessage: &raypb.PubMessage_ErrorInfoMessage{ErrorInfoMessage: &raypb.ErrorTableData{
			JobId: jobID, Type: typ, ErrorMessage: message, Timestamp: float64(s.now().UnixMilli()) / 1000,
		}},
	})
}

// PublishLogs sends worker output lines to the drivers (RAY_LOG_CHANNEL), as
// a raylet's log forwarder does with GcsPublish.
func (s *Server) PublishLogs(b *raypb.LogBatch) {
	s.publish(&raypb.PubMessage{
		ChannelType:  raypb.ChannelType_RAY_LOG_CHANNEL,
		KeyId:        []byte(b.GetJobId()),
		InnerMessage: &raypb.PubMessage_LogBatchMessage{LogBatchMessage: b},
	})
}

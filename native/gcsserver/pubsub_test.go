package gcsserver

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/gray-cluster/gray/proto/ray/raypb"
)

func logMsg(job []byte, line string) *raypb.PubMessage {
	return &raypb.PubMessage{
		ChannelType:  raypb.ChannelType_RAY_LOG_CHANNEL,
		KeyId:        job,
		InnerMessage: &raypb.PubMessage_LogBatchMessage{LogBatchMessage: &raypb.LogBatch{Lines: []string{line}}},
	}
}

func TestPubSubAckReplaceAndKeys(t *testing.T) {
	e := newEnv(t, nil)
	sid := randBytes(28)
	nilPub := bytes.Repeat([]byte{0xff}, 28)
	cmd := func(ch raypb.ChannelType, key []byte, unsub bool) {
		c := &raypb.Command{ChannelType: ch, KeyId: key, CommandMessageOneOf: &raypb.Command_SubscribeMessage{SubscribeMessage: &raypb.SubMessage{}}}
		if unsub {
			c.CommandMessageOneOf = &raypb.Command_UnsubscribeMessage{UnsubscribeMessage: &raypb.UnsubscribeMessage{}}
		}
		if _, err := e.obs.GcsSubscriberCommandBatch(e.cctx(), &raypb.GcsSubscriberCommandBatchRequest{SubscriberId: sid, Commands: []*raypb.Command{c}}); err != nil {
			t.Fatal(err)
		}
	}
	cmd(raypb.ChannelType_RAY_LOG_CHANNEL, []byte("job1"), false)

	// A poll held with nothing to send returns when a message is published.
	type res struct {
		r   *raypb.GcsSubscriberPollReply
		err error
	}
	got := make(chan res, 1)
	go func() {
		r, err := e.obs.GcsSubscriberPoll(e.cctx(), &raypb.GcsSubscriberPollRequest{SubscriberId: sid, PublisherId: nilPub})
		got <- res{r, err}
	}()
	waitFor(t, "the poll to be held", func() bool {
		e.srv.obs.mu.Lock()
		defer e.srv.obs.mu.Unlock()
		s := e.srv.obs.subs[string(sid)]
		return s != nil && s.polling == 1
	})
	if _, err := e.obs.GcsPublish(e.cctx(), &raypb.GcsPublishRequest{PubMessages: []*raypb.PubMessage{logMsg([]byte("job2"), "other"), logMsg([]byte("job1"), "hello")}}); err != nil {
		t.Fatal(err)
	}
	r := <-got
	if r.err != nil || len(r.r.GetPubMessages()) != 1 || r.r.GetPubMessages()[0].GetLogBatchMessage().GetLines()[0] != "hello" {
		t.Fatalf("held poll = %v, %v", r.r, r.err)
	}
	pub := r.r.GetPublisherId()
	seq := r.r.GetPubMessages()[0].GetSequenceId()

	// Unacknowledged messages are re-sent; acknowledged ones are not.
	_, _ = e.obs.GcsPublish(e.cctx(), &raypb.GcsPublishRequest{PubMessages: []*raypb.PubMessage{logMsg([]byte("job1"), "second")}})
	again, _ := e.obs.GcsSubscriberPoll(e.cctx(), &raypb.GcsSubscriberPollRequest{SubscriberId: sid, PublisherId: pub, MaxProcessedSequenceId: seq - 1})
	if len(again.GetPubMessages()) != 2 {
		t.Fatalf("unacked resend = %d messages", len(again.GetPubMessages()))
	}
	acked, _ := e.obs.GcsSubscriberPoll(e.cctx(), &raypb.GcsSubscriberPollRequest{SubscriberId: sid, PublisherId: pub, MaxProcessedSequenceId: seq})
	if len(acked.GetPubMessages()) != 1 || acked.GetPubMessages()[0].GetLogBatchMessage().GetLines()[0] != "second" {
		t.Fatalf("after ack = %v", acked.GetPubMessages())
	}
	last := acked.GetPubMessages()[0].GetSequenceId()

	// A second poll from the same subscriber replaces the held one.
	go func() {
		r, err := e.obs.GcsSubscriberPoll(e.cctx(), &raypb.GcsSubscriberPollRequest{SubscriberId: sid, PublisherId: pub, MaxProcessedSequenceId: last})
		got <- res{r, err}
	}()
	waitFor(t, "the first poll to be held", func() bool {
		e.srv.obs.mu.Lock()
		defer e.srv.obs.mu.Unlock()
		return e.srv.obs.subs[string(sid)].polling == 1
	})
	ctx, cancel := context.WithTimeout(e.ctx, 200*time.Millisecond)
	defer cancel()
	go func() {
		_, _ = e.obs.GcsSubscriberPoll(ctx, &raypb.GcsSubscriberPollRequest{SubscriberId: sid, PublisherId: pub, MaxProcessedSequenceId: last})
	}()
	r = <-got
	if r.err != nil || len(r.r.GetPubMessages()) != 0 {
		t.Fatalf("replaced poll = %v, %v", r.r, r.err)
	}

	// Unsubscribed keys are no longer delivered.
	cmd(raypb.ChannelType_RAY_LOG_CHANNEL, []byte("job1"), true)
	cmd(raypb.ChannelType_RAY_ERROR_INFO_CHANNEL, nil, false)
	_, _ = e.obs.GcsPublish(e.cctx(), &raypb.GcsPublishRequest{PubMessages: []*raypb.PubMessage{logMsg([]byte("job1"), "dropped")}})
	_, _ = e.obs.ReportJobError(e.cctx(), &raypb.ReportJobErrorRequest{JobError: &raypb.ErrorTableData{JobId: []byte("job9"), Type: "task", ErrorMessage: "boom"}})
	fin, _ := e.obs.GcsSubscriberPoll(e.cctx(), &raypb.GcsSubscriberPollRequest{SubscriberId: sid, PublisherId: pub, MaxProcessedSequenceId: last})
	if len(fin.GetPubMessages()) != 1 || fin.GetPubMessages()[0].GetErrorInfoMessage().GetErrorMessage() != "boom" {
		t.Fatalf("after unsubscribe = %v", fin.GetPubMessages())
	}
}

func TestPubSubCloseEndsHeldPolls(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.PollHold = time.Minute })
	sid := randBytes(28)
	done := make(chan error, 1)
	go func() {
		_, err := e.ctrl.GcsSubscriberPoll(e.ctx, &raypb.GcsSubscriberPollRequest{SubscriberId: sid})
		done <- err
	}()
	waitFor(t, "the poll to be held", func() bool {
		e.srv.ctrl.mu.Lock()
		defer e.srv.ctrl.mu.Unlock()
		s := e.srv.ctrl.subs[string(sid)]
		return s != nil && s.polling == 1
	})
	e.srv.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("held poll ended with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close left the poll held")
	}
}

func TestPubSubExpiresIdleSubscribers(t *testing.T) {
	var now time.Time = time.Unix(1000, 0)
	p := newPublisher("t", func() time.Time { return now }, time.Second)
	p.commands(&raypb.GcsSubscriberCommandBatchRequest{SubscriberId: []byte("a"), Commands: []*raypb.Command{{ChannelType: raypb.ChannelType_GCS_ACTOR_CHANNEL}}})
	p.commands(&raypb.GcsSubscriberCommandBatchRequest{SubscriberId: []byte("b")})
	now = now.Add(30 * time.Second)
	p.commands(&raypb.GcsSubscriberCommandBatchRequest{SubscriberId: []byte("b")})
	now = now.Add(40 * time.Second)
	p.expire(time.Minute)
	if p.subscribers() != 1 {
		t.Fatalf("subscribers after expiry = %d, want 1", p.subscribers())
	}
	p.publish(&raypb.PubMessage{ChannelType: raypb.ChannelType_GCS_ACTOR_CHANNEL})
	if len(p.subs["b"].mailbox) != 0 {
		t.Fatal("b got a message of a channel it did not subscribe to")
	}
}

func TestPublishErrorAndLogsInProcess(t *testing.T) {
	e := newEnv(t, nil)
	sub := e.subscribe(raypb.ChannelType_RAY_ERROR_INFO_CHANNEL, nil)
	sub.add(raypb.ChannelType_RAY_LOG_CHANNEL, nil)
	e.srv.PublishError(testJob, "worker_died", "a worker died")
	e.srv.PublishLogs(&raypb.LogBatch{JobId: "01000000", Lines: []string{"out"}})
	m := sub.next(nil)
	if m.GetErrorInfoMessage().GetType() != "worker_died" || string(m.GetKeyId()) != "01000000" {
		t.Fatalf("error message = %v", m)
	}
	if m = sub.next(nil); m.GetLogBatchMessage().GetLines()[0] != "out" {
		t.Fatalf("log message = %v", m)
	}
}

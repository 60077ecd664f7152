package clientserver

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync/atomic"

	pb "github.com/gray-cluster/gray/proto/rayclientpb"
)

// logTee is the front end's slog handler: every record goes to the
// configured handler and, like the stock server's handler on the "ray"
// logger, to the log streams of driver sessions that asked for its level
// (LogSettingsRequest.loglevel, a Python logging level).
type logTee struct {
	inner slog.Handler
	sink  *logSink
}

// logSink fans server records out to sessions. Records are queued and
// published by one goroutine: a handler may run while its caller holds the
// server's locks, which publishing needs.
type logSink struct {
	// min is the lowest level any session streams (math.MaxInt32: none).
	min   atomic.Int32
	queue chan *pb.LogData
}

// logRecordName is the logger name server records carry.
const logRecordName = "gray.clientserver"

func newLogSink() *logSink {
	k := &logSink{queue: make(chan *pb.LogData, 1024)}
	k.min.Store(math.MaxInt32)
	return k
}

// pyLevel maps a slog level to Python's logging levels (DEBUG 10, INFO 20,
// WARNING 30, ERROR 40).
func pyLevel(l slog.Level) int32 {
	return int32(20 + int(l)*10/4)
}

func (t *logTee) Enabled(ctx context.Context, l slog.Level) bool {
	return t.inner.Enabled(ctx, l) || pyLevel(l) >= t.sink.min.Load()
}

func (t *logTee) Handle(ctx context.Context, r slog.Record) error {
	var err error
	if t.inner.Enabled(ctx, r.Level) {
		err = t.inner.Handle(ctx, r)
	}
	if lvl := pyLevel(r.Level); lvl >= t.sink.min.Load() {
		var b strings.Builder
		b.WriteString(r.Message)
		r.Attrs(func(a slog.Attr) bool {
			fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
			return true
		})
		select {
		case t.sink.queue <- &pb.LogData{Msg: b.String(), Level: lvl, Name: logRecordName}:
		default: // a burst of records must not stall the server
		}
	}
	return err
}

func (t *logTee) WithAttrs(as []slog.Attr) slog.Handler {
	return &logTee{inner: t.inner.WithAttrs(as), sink: t.sink}
}

func (t *logTee) WithGroup(name string) slog.Handler {
	return &logTee{inner: t.inner.WithGroup(name), sink: t.sink}
}

// publishServerLogs delivers queued server records until ctx ends.
func (s *Server) publishServerLogs(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case d := <-s.logSink.queue:
			s.mu.Lock()
			var targets []*session
			for _, ss := range s.sessions {
				if ss.workerID == "" {
					targets = append(targets, ss)
				}
			}
			s.mu.Unlock()
			for _, ss := range targets {
				ss.publishServerLog(d)
			}
		}
	}
}

// setLogLevel applies a session's log settings and recomputes the lowest
// level any session streams.
func (s *Server) setLogLevel(ss *session, enabled bool, level int32) {
	ss.mu.Lock()
	ss.logEnabled, ss.logLevel = enabled, level
	ss.mu.Unlock()
	s.updateLogMin()
}

func (s *Server) updateLogMin() {
	s.mu.Lock()
	list := make([]*session, 0, len(s.sessions))
	for _, ss := range s.sessions {
		if ss.workerID == "" {
			list = append(list, ss)
		}
	}
	s.mu.Unlock()
	min := int32(math.MaxInt32)
	for _, ss := range list {
		ss.mu.Lock()
		if ss.logEnabled && len(ss.logs) > 0 && ss.logLevel < min {
			min = ss.logLevel
		}
		ss.mu.Unlock()
	}
	s.logSink.min.Store(min)
}

// publishServerLog sends a server record to the session's log streams if
// it asked for that level.
func (ss *session) publishServerLog(d *pb.LogData) {
	ss.mu.Lock()
	ok := ss.logEnabled && d.Level >= ss.logLevel
	ss.mu.Unlock()
	if ok {
		ss.publishLog(d)
	}
}

package clientserver

import (
	"context"
	"net"
	"sync"
	"time"

	"github.com/gray-cluster/gray/internal/ids"
	pb "github.com/gray-cluster/gray/proto/rayclientpb"
	"github.com/gray-cluster/gray/raylet"
	"github.com/gray-cluster/gray/taskspec"
)

// session is the server side of one client_id: a Ray job with its own
// namespace, runtime env and references. Worker runtimes connect as sessions
// too (workerID set); their requests act on behalf of the job of the task
// they are running.
type session struct {
	clientID string
	workerID string
	// account is the driver's account (its token's); "" for a worker.
	account string
	peer    net.Addr // the client end of the first data stream

	mu          sync.Mutex
	job         ids.JobID
	namespace   string
	env         taskspec.RuntimeEnv
	envErr      error // why the job's runtime_env cannot be set up
	runtimeEnv  map[string]any
	grace       time.Duration
	initialized bool
	// stored: the session's record is in Config.Sessions; resumed: it
	// was set up again from that record by a restarted head.
	stored, resumed bool
	streams         int
	generation      int
	ended           bool
	cleanupReq      bool

	// Reliable delivery across reconnects (OrderedResponseCache semantics).
	cache     map[int32]*pb.DataResponse
	inflight  map[int32]bool
	asyncGets map[int32]*asyncGetOp
	out       *outbox

	// clientRefs are the client-side ref ids of payloads this session put.
	clientRefs []string
	// held are the objects a driver session holds a reference to (it put
	// them, submitted the task returning them, or received a value
	// containing them); it may use no others, as with the stock server.
	held map[ids.ObjectID]struct{}

	putChunks  map[int32]*chunkBuf
	taskChunks map[int32]*taskChunkBuf

	logs     map[int]chan *pb.LogData
	logSeq   int
	logLevel int32
	// logEnabled is the client's last LogSettingsRequest.enabled.
	logEnabled bool
}

func newSession(clientID, workerID string) *session {
	return &session{
		clientID:   clientID,
		workerID:   workerID,
		grace:      30 * time.Second,
		cache:      map[int32]*pb.DataResponse{},
		inflight:   map[int32]bool{},
		asyncGets:  map[int32]*asyncGetOp{},
		held:       map[ids.ObjectID]struct{}{},
		putChunks:  map[int32]*chunkBuf{},
		taskChunks: map[int32]*taskChunkBuf{},
		logs:       map[int]chan *pb.LogData{},
		logLevel:   20,
		logEnabled: true,
	}
}

// holder is the key under which the store tracks this session's refs. A
// worker's session shares its worker's key: the worker reports its own
// reference counts over the raylet socket.
func (ss *session) holder() string {
	if ss.workerID != "" {
		return raylet.WorkerHolder(ss.workerID)
	}
	return "session:" + ss.clientID
}

// track records that the session holds id.
func (ss *session) track(id ids.ObjectID) {
	if ss.workerID != "" {
		return
	}
	ss.mu.Lock()
	ss.held[id] = struct{}{}
	ss.mu.Unlock()
}

// untrack records that the session released id.
func (ss *session) untrack(id ids.ObjectID) {
	ss.mu.Lock()
	delete(ss.held, id)
	ss.mu.Unlock()
}

// holds reports whether the session may use id. Worker sessions act for
// the job of their task, whose references the worker reports to its raylet
// (not to this front end), so they may use any.
func (ss *session) holds(id ids.ObjectID) bool {
	if ss.workerID != "" {
		return true
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	_, ok := ss.held[id]
	return ok
}

// chunkBuf collects the chunks of one put.
type chunkBuf struct {
	chunks    [][]byte
	size      int64
	total     int32
	clientRef []byte
}

// taskChunkBuf collects the chunks of one task's argument data.
type taskChunkBuf struct {
	first  *pb.ClientTask
	chunks [][]byte
	total  int32
}

// outbox is an unbounded queue of responses drained by one stream.
type outbox struct {
	mu     sync.Mutex
	items  []*pb.DataResponse
	notify chan struct{}
	done   chan struct{}
}

func newOutbox() *outbox {
	return &outbox{notify: make(chan struct{}, 1), done: make(chan struct{})}
}

func (o *outbox) push(r *pb.DataResponse) {
	o.mu.Lock()
	o.items = append(o.items, r)
	o.mu.Unlock()
	select {
	case o.notify <- struct{}{}:
	default:
	}
}

func (o *outbox) drain() []*pb.DataResponse {
	o.mu.Lock()
	defer o.mu.Unlock()
	items := o.items
	o.items = nil
	return items
}

// send delivers a response on the session's current stream. Responses to
// requests that may be resent after a reconnect are cached until acked.
func (ss *session) send(r *pb.DataResponse, cacheable bool) {
	ss.mu.Lock()
	if cacheable && r.ReqId != 0 {
		ss.cache[r.ReqId] = r
		delete(ss.inflight, r.ReqId)
	}
	out := ss.out
	ss.mu.Unlock()
	if out != nil {
		out.push(r)
	}
}

// asyncGetOp is one async get being answered. It answers on the stream it
// arrived on only: after a reconnect the client re-sends the request from
// the first chunk it lacks, and that request's op takes over.
type asyncGetOp struct {
	out    *outbox
	ctx    context.Context
	cancel context.CancelFunc
}

// sendOn delivers an uncached response on out, the stream a request came
// in on; false when that stream has been replaced (a reconnect) and the
// response would land in the middle of the new stream's answers.
func (ss *session) sendOn(out *outbox, r *pb.DataResponse) bool {
	ss.mu.Lock()
	current := ss.out == out
	ss.mu.Unlock()
	if !current || out == nil {
		return false
	}
	out.push(r)
	return true
}

// ack drops cached responses up to and including reqID.
func (ss *session) ack(reqID int32) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for id := range ss.cache {
		if id <= reqID {
			delete(ss.cache, id)
		}
	}
}

// answered reports whether a request id was already answered or is being
// worked on (a resend after a reconnect).
func (ss *session) answered(reqID int32) bool {
	if reqID == 0 {
		return false
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	_, cached := ss.cache[reqID]
	return cached || ss.inflight[reqID]
}

// admit decides what to do with an incoming request id: true means process
// it; false means it was a resend already answered (re-sent from cache) or
// still being worked on.
func (ss *session) admit(reqID int32) bool {
	if reqID == 0 {
		return true
	}
	ss.mu.Lock()
	cached, ok := ss.cache[reqID]
	busy := ss.inflight[reqID]
	out := ss.out
	if !ok && !busy {
		ss.inflight[reqID] = true
	}
	ss.mu.Unlock()
	if ok {
		if out != nil {
			out.push(cached)
		}
		return false
	}
	return !busy
}

func (ss *session) subscribeLogs() (int, chan *pb.LogData) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.logSeq++
	ch := make(chan *pb.LogData, 4096)
	ss.logs[ss.logSeq] = ch
	return ss.logSeq, ch
}

func (ss *session) unsubscribeLogs(id int) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	delete(ss.logs, id)
}

func (ss *session) publishLog(d *pb.LogData) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for _, ch := range ss.logs {
		select {
		case ch <- d:
		default: // a stalled log reader must not stall workers
		}
	}
}

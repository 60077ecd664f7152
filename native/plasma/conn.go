package plasma

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	fb "github.com/gray-cluster/gray/native/fbs/plasmafb"
	"github.com/gray-cluster/gray/native/ipcframe"
)

// maxRequest bounds a request body (a Get of many ids is the largest).
const maxRequest = 16 << 20

// writeTimeout bounds one reply write to a client that stopped reading.
const writeTimeout = 30 * time.Second

// ErrUnknownMessage is a frame type the store does not serve.
var ErrUnknownMessage = errors.New("plasma: unknown message type")

var connSeq atomic.Int64

// conn is one client connection.
type conn struct {
	s   *Store
	nc  *net.UnixConn
	log *slog.Logger
	ctx context.Context
	end context.CancelFunc

	wmu    sync.Mutex
	fdSent bool // the segment fd went to this client (guarded by wmu)

	// Guarded by Store.mu.
	gone    bool                      // cleaned up: take no more references
	held    map[ObjectID]*object      // objects this client holds a reference to
	pending map[uint64]*pendingCreate // creates waiting for room
}

type pendingCreate struct {
	req   createReq
	since time.Time
}

func newConn(s *Store, ctx context.Context, nc *net.UnixConn) *conn {
	ctx, end := context.WithCancel(ctx)
	return &conn{
		s: s, nc: nc, ctx: ctx, end: end,
		log:     s.log.With("client", connSeq.Add(1)),
		held:    map[ObjectID]*object{},
		pending: map[uint64]*pendingCreate{},
	}
}

// serve reads requests until the client goes or sends something bad, then
// releases everything the client held.
func (c *conn) serve() {
	defer c.cleanup()
	r := ipcframe.NewReader(bufio.NewReader(c.nc), maxRequest)
	for {
		f, err := r.Read()
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && c.ctx.Err() == nil {
				c.log.Warn("plasma client dropped: bad frame", "err", err)
			}
			return
		}
		if f.Type == int64(fb.MessageTypePlasmaDisconnectClient) {
			return
		}
		if err := c.handle(fb.MessageType(f.Type), f.Body); err != nil {
			if errors.Is(err, ErrMalformed) || errors.Is(err, ErrUnknownMessage) {
				c.log.Warn("plasma client dropped: bad request", "type", f.Type, "err", err)
			} else if c.ctx.Err() == nil {
				c.log.Debug("plasma client gone", "err", err)
			}
			return
		}
	}
}

func (c *conn) cleanup() {
	c.end()
	c.nc.Close()
	s := c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, o := range c.held {
		if !o.isSealed && !o.deleted && o.creator == c {
			s.abortLocked(c, o)
			continue
		}
		s.releaseLocked(c, id)
	}
	c.pending = nil
	c.gone = true
	delete(s.conns, c)
}

// reply writes one frame, followed by the segment fd if withFd and this
// client has not received it yet.
func (c *conn) reply(typ fb.MessageType, body []byte, withFd bool) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
	defer c.nc.SetWriteDeadline(time.Time{})
	if err := ipcframe.Write(c.nc, int64(typ), body); err != nil {
		return fmt.Errorf("plasma: write reply: %w", err)
	}
	if withFd && !c.fdSent {
		if _, _, err := c.nc.WriteMsgUnix([]byte{0}, unix.UnixRights(c.s.seg.fd), nil); err != nil {
			return fmt.Errorf("plasma: pass segment fd: %w", err)
		}
		c.fdSent = true
	}
	return nil
}

func (c *conn) mmapSize() int64 { return c.s.seg.size + mmapGap }
func (c *conn) storeFd() int32  { return int32(c.s.seg.fd) }

func (c *conn) handle(typ fb.MessageType, body []byte) error {
	switch typ {
	case fb.MessageTypePlasmaConnectRequest:
		return c.reply(fb.MessageTypePlasmaConnectReply, encodeConnectReply(c.s.cfg.Capacity), false)
	case fb.MessageTypePlasmaCreateRequest:
		req, err := decodeCreate(body)
		if err != nil {
			return err
		}
		return c.create(req)
	case fb.MessageTypePlasmaCreateRetryRequest:
		id, reqID, err := decodeCreateRetry(body)
		if err != nil {
			return err
		}
		return c.createRetry(id, reqID)
	case fb.MessageTypePlasmaSealRequest, fb.MessageTypePlasmaAbortRequest,
		fb.MessageTypePlasmaReleaseRequest, fb.MessageTypePlasmaContainsRequest:
		id, mayUnmap, err := decodeIDMessage(typ, body)
		if err != nil {
			return err
		}
		return c.idRequest(typ, id, mayUnmap)
	case fb.MessageTypePlasmaGetRequest:
		ids, timeout, err := decodeGet(body)
		if err != nil {
			return err
		}
		c.get(ids, timeout)
		return nil
	case fb.MessageTypePlasmaDeleteRequest:
		ids, err := decodeDelete(body)
		if err != nil {
			return err
		}
		return c.delete(ids)
	case fb.MessageTypePlasmaGetDebugStringRequest:
		return c.reply(fb.MessageTypePlasmaGetDebugStringReply, encodeDebugStringReply(c.s.DebugString()), false)
	}
	return fmt.Errorf("%w: %d", ErrUnknownMessage, int64(typ))
}

// create answers a PlasmaCreateRequest: the object, an error, or a request
// id to retry with while the store cannot make room.
func (c *conn) create(req createReq) error {
	s := c.s
	s.mu.Lock()
	var body []byte
	ok := false
	switch {
	case s.objects[req.id] != nil:
		body = encodeCreateReply(req.id, spec{}, fb.PlasmaErrorObjectExists, 0, 0, 0)
	case req.dataSize > uint64(s.alloc.capacity) || req.metaSize > uint64(s.alloc.capacity) ||
		alignUp(int64(req.dataSize+req.metaSize)) > s.alloc.capacity:
		c.log.Warn("plasma create larger than the store", "object", req.id, "size", req.dataSize+req.metaSize, "capacity", s.cfg.Capacity)
		body = encodeCreateReply(req.id, spec{}, fb.PlasmaErrorOutOfMemory, 0, 0, 0)
	default:
		body, ok, _ = c.tryCreateLocked(req)
		if !ok {
			if req.tryImmediately {
				body = encodeCreateReply(req.id, spec{}, fb.PlasmaErrorOutOfMemory, 0, 0, 0)
			} else {
				s.nextReq++
				c.pending[s.nextReq] = &pendingCreate{req: req, since: time.Now()}
				body = encodeCreateReply(req.id, spec{}, fb.PlasmaErrorOK, s.nextReq, 0, 0)
			}
		}
	}
	s.mu.Unlock()
	return c.reply(fb.MessageTypePlasmaCreateReply, body, ok)
}

// tryCreateLocked allocates req and returns the reply carrying it; busy
// says that spills are under way to make room.
func (c *conn) tryCreateLocked(req createReq) (body []byte, ok, busy bool) {
	o, wait := c.s.createLocked(req.id, int64(req.dataSize), int64(req.metaSize), req.owner, c)
	if o == nil {
		return nil, false, wait != nil
	}
	o.device, o.source = req.deviceNum, req.source
	c.s.holdLocked(c, o)
	return encodeCreateReply(req.id, o.spec(), fb.PlasmaErrorOK, 0, c.storeFd(), c.mmapSize()), true, false
}

func (c *conn) createRetry(id ObjectID, reqID uint64) error {
	s := c.s
	s.mu.Lock()
	var body []byte
	ok := false
	p := c.pending[reqID]
	switch {
	case p == nil || p.req.id != id:
		c.log.Warn("plasma create retry for an unknown request", "object", id, "request", reqID)
		body = encodeCreateReply(id, spec{}, fb.PlasmaErrorUnexpectedError, 0, 0, 0)
	case s.objects[id] != nil:
		delete(c.pending, reqID)
		body = encodeCreateReply(id, spec{}, fb.PlasmaErrorObjectExists, 0, 0, 0)
	default:
		var busy bool
		body, ok, busy = c.tryCreateLocked(p.req)
		switch {
		case ok:
			delete(c.pending, reqID)
		case busy:
			p.since = time.Now() // spilling: the grace period counts from when it stops
			body = encodeCreateReply(id, spec{}, fb.PlasmaErrorOK, reqID, 0, 0)
		case time.Since(p.since) >= s.cfg.OOMGrace:
			delete(c.pending, reqID)
			c.log.Warn("plasma create out of memory", "object", id, "size", p.req.dataSize+p.req.metaSize,
				"used", s.used, "capacity", s.cfg.Capacity)
			body = encodeCreateReply(id, spec{}, fb.PlasmaErrorOutOfMemory, 0, 0, 0)
		default:
			body = encodeCreateReply(id, spec{}, fb.PlasmaErrorOK, reqID, 0, 0)
		}
	}
	s.mu.Unlock()
	return c.reply(fb.MessageTypePlasmaCreateReply, body, ok)
}

// idRequest serves Seal, Abort, Release and Contains.
func (c *conn) idRequest(typ fb.MessageType, id ObjectID, mayUnmap bool) error {
	s := c.s
	s.mu.Lock()
	o := s.objects[id]
	switch typ {
	case fb.MessageTypePlasmaSealRequest:
		perr := fb.PlasmaErrorOK
		switch {
		case o == nil:
			perr = fb.PlasmaErrorObjectNonexistent
		case !o.isSealed:
			s.sealLocked(o)
			s.maybeDeleteLocked(o)
		}
		s.mu.Unlock()
		return c.reply(fb.MessageTypePlasmaSealReply, encodeIDReply(fb.MessageTypePlasmaSealReply, id, perr, 0), false)
	case fb.MessageTypePlasmaAbortRequest:
		if o != nil && !o.isSealed && o.creator == c {
			s.abortLocked(c, o)
		} else {
			c.log.Warn("plasma abort of an object this client is not creating", "object", id)
		}
		s.mu.Unlock()
		return c.reply(fb.MessageTypePlasmaAbortReply, encodeIDReply(fb.MessageTypePlasmaAbortReply, id, 0, 0), false)
	case fb.MessageTypePlasmaReleaseRequest:
		held := s.releaseLocked(c, id)
		s.mu.Unlock()
		if !held {
			c.log.Debug("plasma release of an object the client does not hold", "object", id)
		}
		if !mayUnmap {
			return nil
		}
		perr := fb.PlasmaErrorOK
		if !held {
			perr = fb.PlasmaErrorObjectNonexistent
		}
		return c.reply(fb.MessageTypePlasmaReleaseReply, encodeIDReply(fb.MessageTypePlasmaReleaseReply, id, perr, 0), false)
	default: // Contains
		has := int32(0)
		if o != nil && o.contained() {
			has = 1
		}
		s.mu.Unlock()
		return c.reply(fb.MessageTypePlasmaContainsReply, encodeIDReply(fb.MessageTypePlasmaContainsReply, id, 0, has), false)
	}
}

func (c *conn) delete(ids []ObjectID) error {
	s := c.s
	errs := make([]fb.PlasmaError, len(ids))
	s.mu.Lock()
	for i, id := range ids {
		switch s.deleteLocked(id, false) {
		case deleteNonexistent:
			errs[i] = fb.PlasmaErrorObjectNonexistent
		case deleteNotSealed:
			errs[i] = fb.PlasmaErrorObjectNotSealed
		case deleteInUse:
			errs[i] = fb.PlasmaErrorObjectInUse
		}
	}
	s.mu.Unlock()
	return c.reply(fb.MessageTypePlasmaDeleteReply, encodeDeleteReply(ids, errs), false)
}

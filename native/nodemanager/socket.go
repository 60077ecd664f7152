package nodemanager

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/gray-cluster/gray/native/ipcframe"
	commonpb "github.com/gray-cluster/gray/proto/ray/commonpb"
	raypb "github.com/gray-cluster/gray/proto/ray/raypb"
)

// ErrProtocol is a client that broke the socket protocol.
var ErrProtocol = errors.New("nodemanager: protocol violation")

// client is one connection on the raylet socket.
type client struct {
	r      *Raylet
	conn   net.Conn
	wmu    sync.Mutex
	ctx    context.Context
	cancel context.CancelFunc
	worker *worker // set by RegisterClientRequest
	once   sync.Once
}

func (c *client) send(typ int64, body []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return ipcframe.Write(c.conn, typ, body)
}

func (c *client) close() {
	c.once.Do(func() {
		c.cancel()
		c.conn.Close()
	})
}

func (r *Raylet) acceptLoop(l net.Listener) {
	for {
		conn, err := l.Accept()
		if err != nil {
			if r.ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				r.log.Error("raylet socket accept failed", "err", err)
			}
			return
		}
		ctx, cancel := context.WithCancel(r.ctx)
		c := &client{r: r, conn: conn, ctx: ctx, cancel: cancel}
		r.goTracked(func() { r.serveClient(c) })
	}
}

// serveClient reads one client's frames until it disconnects or breaks the
// protocol; then the worker or driver behind it is gone.
func (r *Raylet) serveClient(c *client) {
	defer func() {
		c.close()
		if w := c.worker; w != nil {
			if w.cmd == nil {
				// A driver (or a process we did not start): the socket is
				// its lifetime.
				w.markGone()
			}
			r.workerGone(w, commonpb.WorkerExitType_SYSTEM_ERROR,
				"Worker unexpectedly exits with a connection error code 2. End of file. The worker's socket to the raylet closed.")
		}
	}()
	rd := ipcframe.NewReader(c.conn, 0)
	for {
		f, err := rd.Read()
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && c.ctx.Err() == nil {
				r.log.Warn("raylet socket: dropping client", "worker_id", c.workerIDString(), "err", err)
			}
			return
		}
		done, err := r.handleFrame(c, f)
		if err != nil {
			r.log.Warn("raylet socket: dropping client", "worker_id", c.workerIDString(), "type", f.Type, "err", err)
			return
		}
		if done {
			return
		}
	}
}

func (c *client) workerIDString() string {
	if c.worker == nil {
		return ""
	}
	return c.worker.id.String()
}

// handleFrame handles one message; done means the client disconnected
// cleanly.
func (r *Raylet) handleFrame(c *client, f ipcframe.Frame) (done bool, err error) {
	if c.worker == nil && f.Type != msgRegisterClientRequest {
		return false, fmt.Errorf("%w: message type %d before RegisterClientRequest", ErrProtocol, f.Type)
	}
	switch f.Type {
	case msgRegisterClientRequest:
		if c.worker != nil {
			return false, fmt.Errorf("%w: second RegisterClientRequest", ErrProtocol)
		}
		m, err := parseRegisterClientRequest(f.Body)
		if err != nil {
			return false, err
		}
		return false, r.registerClient(c, m)
	case msgAnnounceWorkerPort:
		m, err := parseAnnounceWorkerPort(f.Body)
		if err != nil {
			return false, err
		}
		return false, r.announcePort(c, m)
	case msgDisconnectClientRequest:
		m, err := parseDisconnectClientRequest(f.Body)
		if err != nil {
			return false, err
		}
		r.mu.Lock()
		c.worker.setExit(commonpb.WorkerExitType(m.Type), m.Detail)
		c.worker.exiting = true
		r.mu.Unlock()
		if err := c.send(msgDisconnectClientReply, buildDisconnectClientReply()); err != nil {
			return false, err
		}
		return true, nil
	case msgActorCreationTaskDone:
		r.mu.Lock()
		if l := c.worker.lease; l != nil && l.isActor {
			c.worker.actorID = append([]byte(nil), l.spec.GetActorId()...)
		}
		r.mu.Unlock()
		return false, nil
	case msgNotifyWorkerBlocked:
		r.setBlocked(c.worker, true)
		return false, nil
	case msgNotifyWorkerUnblocked:
		r.setBlocked(c.worker, false)
		return false, nil
	case msgAsyncGetObjectsRequest:
		// Plasma Get wakes up by itself once the object is sealed here;
		// objects on other nodes are pulled.
		m, err := parseAsyncGetObjects(f.Body)
		if err == nil {
			r.pulls.want(m)
		}
		return false, err
	case msgCancelGetRequest:
		return false, nil
	case msgWaitRequest:
		m, err := parseWaitRequest(f.Body)
		if err != nil {
			return false, err
		}
		r.pulls.want(m.objectsWithOwners)
		r.goTracked(func() { r.wait(c, m) })
		return false, nil
	case msgWaitForActorCallArgs:
		m, err := parseWaitForActorCallArgs(f.Body)
		if err != nil {
			return false, err
		}
		r.pulls.want(m.objectsWithOwners)
		r.goTracked(func() { r.waitActorCallArgs(c, m) })
		return false, nil
	case msgSubscribePlasmaReady:
		m, err := parseSubscribePlasmaReady(f.Body)
		if err != nil {
			return false, err
		}
		// The core worker subscribes when an object it awaits
		// (ObjectRef._on_completed, await ref) is in plasma but not here:
		// pull it from the node that holds it, as for a Get or Wait.
		r.pulls.want(objectsWithOwners{IDs: [][]byte{m.ObjectID}, Owners: []fbAddress{m.Owner}})
		r.goTracked(func() { r.plasmaReady(c, m) })
		return false, nil
	case msgPushErrorRequest:
		m, err := parsePushError(f.Body)
		if err != nil {
			return false, err
		}
		r.goTracked(func() { r.pushError(m) })
		return false, nil
	case msgFreeObjectsInObjectStore:
		m, err := parseFreeObjects(f.Body)
		if err != nil {
			return false, err
		}
		r.freeObjects(m.IDs)
		return false, nil
	default:
		return false, fmt.Errorf("%w: unknown message type %d", ErrProtocol, f.Type)
	}
}

// registerClient binds the connection to a pooled worker the raylet started
// (matched by worker id) or to a new driver, and replies with the port the
// process must serve on.
func (r *Raylet) registerClient(c *client, m registerClientRequest) error {
	id, ok := workerIDFrom(m.WorkerID)
	if !ok {
		return fmt.Errorf("%w: worker_id of %d bytes", ErrMalformed, len(m.WorkerID))
	}
	r.mu.Lock()
	var w *worker
	var reason string
	switch m.WorkerType {
	case workerTypeDriver:
		if _, dup := r.byID[id]; dup {
			reason = "a worker with this id is already registered"
			break
		}
		w = &worker{id: id, typ: m.WorkerType, pid: int(m.WorkerPID), jobHex: jobHexOf(m.JobID), jobID: m.JobID,
			ip: m.IP, state: wsDriver, launched: time.Now(), gone: make(chan struct{})}
		if w.ip == "" {
			w.ip = r.cfg.NodeIP
		}
		cfg := &commonpb.JobConfig{}
		if err := proto.Unmarshal(m.SerializedJobConfig, cfg); err != nil {
			r.log.Warn("driver's serialized_job_config does not decode; using an empty one", "err", err)
		}
		w.jobConfig = cfg
		r.byID[id] = w
	case workerTypeWorker, workerTypeSpill, workerTypeRestore:
		w = r.byID[id]
		if w == nil || w.state != wsStarting {
			w = nil
			reason = "unknown worker id: this raylet did not start worker " + id.String()
			break
		}
		w.pid = int(m.WorkerPID)
		w.state = wsRegistered
		if w.jobHex == nilJobHex && len(m.JobID) == 4 && jobHexOf(m.JobID) != nilJobHex {
			w.jobHex = jobHexOf(m.JobID)
		}
		r.starting--
		r.startFailures = 0
	default:
		reason = fmt.Sprintf("unsupported worker type %d", m.WorkerType)
	}
	var port int
	if w != nil {
		p, err := r.allocPortLocked()
		if err != nil {
			reason = err.Error()
			if w.typ == workerTypeDriver {
				delete(r.byID, id)
			}
			w = nil
		} else {
			port = p
			w.port = int32(p)
			w.client = c
			c.worker = w
		}
	}
	first := false
	if w != nil && w.typ == workerTypeDriver && !r.firstDrive {
		r.firstDrive = true
		first = true
	}
	if first {
		r.prestartLocked(r.cfg.NumPrestartWorkers, nilJobHex)
	}
	r.mu.Unlock()
	if w == nil {
		_ = c.send(msgRegisterClientReply, buildRegisterClientReply(false, reason, r.cfg.NodeID, 0))
		return fmt.Errorf("%w: registration refused: %s", ErrProtocol, reason)
	}
	r.log.Debug("client registered", "worker_id", id.String(), "type", m.WorkerType, "pid", m.WorkerPID, "port", port)
	return c.send(msgRegisterClientReply, buildRegisterClientReply(true, "OK", r.cfg.NodeID, int32(port)))
}

// announcePort: a worker is now idle in the pool; a driver's job is added
// to the GCS before the reply.
func (r *Raylet) announcePort(c *client, m announceWorkerPort) error {
	w := c.worker
	r.mu.Lock()
	if m.Port > 0 && m.Port != w.port {
		delete(r.usedPorts, int(w.port))
		w.port = m.Port
		r.usedPorts[int(m.Port)] = true
	}
	if w.typ != workerTypeDriver {
		if w.state == wsRegistered {
			w.state = wsIdle
			w.idleFrom = time.Now()
			r.scheduleLocked()
		}
		r.mu.Unlock()
		return nil
	}
	w.entrypoint = m.Entrypoint
	r.mu.Unlock()
	// AddJob may take a while; do not hold up this client's reader (the
	// driver waits for the reply anyway).
	r.goTracked(func() {
		ctx, cancel := context.WithTimeout(c.ctx, 60*time.Second)
		defer cancel()
		err := r.gcs.addJob(ctx, r.jobTableData(w))
		ok, reason := true, "OK"
		if err != nil {
			r.log.Error("AddJob failed", "job", w.jobHex, "err", err)
			ok, reason = false, "AddJob failed: "+err.Error()
		} else {
			r.mu.Lock()
			r.jobs[w.jobHex] = &jobInfo{id: w.jobID, driver: w.id}
			r.mu.Unlock()
		}
		if err := c.send(msgAnnounceWorkerPortReply, buildAnnounceWorkerPortReply(ok, reason)); err != nil {
			c.close()
		}
	})
	return nil
}

// jobInfo is a job whose driver is connected here.
type jobInfo struct {
	id     []byte
	driver WorkerID
}

func (r *Raylet) jobTableData(w *worker) *raypb.JobTableData {
	now := time.Now()
	return &raypb.JobTableData{
		JobId:           w.jobID,
		IsDead:          false,
		Timestamp:       now.UnixMilli(),
		DriverIpAddress: w.ip,
		DriverPid:       int64(w.pid),
		Config:          w.jobConfig,
		StartTime:       uint64(now.UnixMilli()),
		Entrypoint:      w.entrypoint,
		DriverAddress:   w.address(r.cfg.NodeID),
	}
}

// setBlocked releases a leased worker's CPU while it waits in ray.get and
// takes it back when it resumes.
func (r *Raylet) setBlocked(w *worker, blocked bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	l := w.lease
	if l == nil || w.blocked == blocked {
		return
	}
	w.blocked = blocked
	if blocked {
		if _, ok := l.alloc["CPU"]; ok {
			w.blockedCPU = r.res.ReleaseOnly(l.alloc, "CPU")
		}
		r.scheduleLocked()
		return
	}
	if w.blockedCPU != nil {
		r.res.Reacquire("CPU", w.blockedCPU)
		w.blockedCPU = nil
	}
	r.scheduleLocked()
}

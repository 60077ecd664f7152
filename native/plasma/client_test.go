package plasma

import (
	"fmt"
	"net"
	"testing"
	"time"

	flatbuffers "github.com/google/flatbuffers/go"
	"golang.org/x/sys/unix"

	fb "github.com/gray-cluster/gray/native/fbs/plasmafb"
	"github.com/gray-cluster/gray/native/ipcframe"
)

// testClient speaks the plasma wire protocol the way the stock core worker
// does: synchronous request/reply frames, the segment fd received with
// recvmsg right after the first reply that references it, the segment
// mapped (mmap_size - 8 bytes) at offset 0.
type testClient struct {
	t    testing.TB
	nc   *net.UnixConn
	r    *ipcframe.Reader
	maps map[[2]int64][]byte // (store_fd, unique_fd_id) -> mapping
	fds  []int
}

func dial(t testing.TB, path string) *testClient {
	t.Helper()
	nc, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	c := &testClient{t: t, nc: nc.(*net.UnixConn), maps: map[[2]int64][]byte{}}
	c.r = ipcframe.NewReader(c.nc, 0) // unbuffered: the fd rides on its own byte
	t.Cleanup(c.close)
	return c
}

func (c *testClient) close() {
	c.nc.Close()
	for k, m := range c.maps {
		unix.Munmap(m)
		delete(c.maps, k)
	}
	for _, fd := range c.fds {
		unix.Close(fd)
	}
	c.fds = nil
}

func (c *testClient) send(typ fb.MessageType, body []byte) {
	c.t.Helper()
	if err := ipcframe.Write(c.nc, int64(typ), body); err != nil {
		c.t.Fatalf("send %v: %v", typ, err)
	}
}

func (c *testClient) recv(want fb.MessageType) []byte {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	f, err := c.r.Read()
	if err != nil {
		c.t.Fatalf("waiting for %v: %v", want, err)
	}
	if fb.MessageType(f.Type) != want {
		c.t.Fatalf("got message %d, want %v", f.Type, want)
	}
	return f.Body
}

// mapping returns the segment mapping for (fd, uid), receiving and mapping
// the fd if this is the first reply that references it.
func (c *testClient) mapping(fd int32, uid, mmapSize int64) []byte {
	c.t.Helper()
	key := [2]int64{int64(fd), uid}
	if m, ok := c.maps[key]; ok {
		return m
	}
	buf, oob := make([]byte, 1), make([]byte, unix.CmsgSpace(4))
	c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, oobn, _, _, err := c.nc.ReadMsgUnix(buf, oob)
	if err != nil {
		c.t.Fatalf("recvmsg fd: %v", err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		c.t.Fatalf("control messages: %v (%d)", err, len(msgs))
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		c.t.Fatalf("unix rights: %v %v", fds, err)
	}
	c.fds = append(c.fds, fds[0])
	m, err := unix.Mmap(fds[0], 0, int(mmapSize-8), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		c.t.Fatalf("mmap %d: %v", mmapSize-8, err)
	}
	c.maps[key] = m
	return m
}

func (c *testClient) connect() int64 {
	c.t.Helper()
	b := flatbuffers.NewBuilder(16)
	fb.PlasmaConnectRequestStart(b)
	b.Finish(fb.PlasmaConnectRequestEnd(b))
	c.send(fb.MessageTypePlasmaConnectRequest, b.FinishedBytes())
	return fb.GetRootAsPlasmaConnectReply(c.recv(fb.MessageTypePlasmaConnectReply), 0).MemoryCapacity()
}

// created is a decoded PlasmaCreateReply; buf is the object's data+metadata
// in the client's mapping when the create succeeded.
type created struct {
	err   fb.PlasmaError
	retry uint64
	spec  fb.PlasmaObjectSpec
	buf   []byte
}

func (c *testClient) create(id ObjectID, dataSize, metaSize uint64, owner Owner) created {
	c.t.Helper()
	b := flatbuffers.NewBuilder(128)
	idOff := b.CreateByteString(id[:])
	node := b.CreateByteString(owner.NodeID)
	ip := b.CreateString(owner.IP)
	worker := b.CreateByteString(owner.WorkerID)
	fb.PlasmaCreateRequestStart(b)
	fb.PlasmaCreateRequestAddObjectId(b, idOff)
	fb.PlasmaCreateRequestAddOwnerNodeId(b, node)
	fb.PlasmaCreateRequestAddOwnerIpAddress(b, ip)
	fb.PlasmaCreateRequestAddOwnerPort(b, owner.Port)
	fb.PlasmaCreateRequestAddOwnerWorkerId(b, worker)
	fb.PlasmaCreateRequestAddDataSize(b, dataSize)
	fb.PlasmaCreateRequestAddMetadataSize(b, metaSize)
	b.Finish(fb.PlasmaCreateRequestEnd(b))
	c.send(fb.MessageTypePlasmaCreateRequest, b.FinishedBytes())
	return c.createReply(id)
}

func (c *testClient) createRetry(id ObjectID, reqID uint64) created {
	c.t.Helper()
	b := flatbuffers.NewBuilder(64)
	idOff := b.CreateByteString(id[:])
	fb.PlasmaCreateRetryRequestStart(b)
	fb.PlasmaCreateRetryRequestAddObjectId(b, idOff)
	fb.PlasmaCreateRetryRequestAddRequestId(b, reqID)
	b.Finish(fb.PlasmaCreateRetryRequestEnd(b))
	c.send(fb.MessageTypePlasmaCreateRetryRequest, b.FinishedBytes())
	return c.createReply(id)
}

func (c *testClient) createReply(id ObjectID) created {
	c.t.Helper()
	m := fb.GetRootAsPlasmaCreateReply(c.recv(fb.MessageTypePlasmaCreateReply), 0)
	if got := ObjectID(m.ObjectId()); got != id {
		c.t.Fatalf("create reply for %x, want %s", got, id)
	}
	var out created
	out.err, out.retry = m.Error(), m.RetryWithRequestId()
	if m.PlasmaObject(&out.spec) == nil {
		c.t.Fatal("create reply without plasma_object")
	}
	if out.err != fb.PlasmaErrorOK || out.retry > 0 {
		return out
	}
	if out.spec.SegmentIndex() != m.StoreFd() || out.spec.UniqueFdId() != m.UniqueFdId() {
		c.t.Fatalf("spec fd (%d,%d) != reply fd (%d,%d)", out.spec.SegmentIndex(), out.spec.UniqueFdId(), m.StoreFd(), m.UniqueFdId())
	}
	if out.spec.DataOffset()%64 != 0 || out.spec.MetadataOffset() != out.spec.DataOffset()+out.spec.DataSize() {
		c.t.Fatalf("bad offsets: data %d+%d meta %d", out.spec.DataOffset(), out.spec.DataSize(), out.spec.MetadataOffset())
	}
	mem := c.mapping(m.StoreFd(), m.UniqueFdId(), m.MmapSize())
	off := out.spec.DataOffset()
	out.buf = mem[off : off+out.spec.DataSize()+out.spec.MetadataSize()]
	return out
}

func (c *testClient) idRequest(typ fb.MessageType, id ObjectID) {
	b := flatbuffers.NewBuilder(64)
	idOff := b.CreateByteString(id[:])
	switch typ {
	case fb.MessageTypePlasmaSealRequest:
		fb.PlasmaSealRequestStart(b)
		fb.PlasmaSealRequestAddObjectId(b, idOff)
		b.Finish(fb.PlasmaSealRequestEnd(b))
	case fb.MessageTypePlasmaAbortRequest:
		fb.PlasmaAbortRequestStart(b)
		fb.PlasmaAbortRequestAddObjectId(b, idOff)
		b.Finish(fb.PlasmaAbortRequestEnd(b))
	case fb.MessageTypePlasmaContainsRequest:
		fb.PlasmaContainsRequestStart(b)
		fb.PlasmaContainsRequestAddObjectId(b, idOff)
		b.Finish(fb.PlasmaContainsRequestEnd(b))
	case fb.MessageTypePlasmaReleaseRequest:
		fb.PlasmaReleaseRequestStart(b)
		fb.PlasmaReleaseRequestAddObjectId(b, idOff)
		b.Finish(fb.PlasmaReleaseRequestEnd(b))
	}
	c.send(typ, b.FinishedBytes())
}

func (c *testClient) seal(id ObjectID) fb.PlasmaError {
	c.t.Helper()
	c.idRequest(fb.MessageTypePlasmaSealRequest, id)
	m := fb.GetRootAsPlasmaSealReply(c.recv(fb.MessageTypePlasmaSealReply), 0)
	if ObjectID(m.ObjectId()) != id {
		c.t.Fatalf("seal reply for another id")
	}
	return m.Error()
}

func (c *testClient) abort(id ObjectID) {
	c.t.Helper()
	c.idRequest(fb.MessageTypePlasmaAbortRequest, id)
	c.recv(fb.MessageTypePlasmaAbortReply)
}

// release sends a PlasmaReleaseRequest with may_unmap false: no reply.
func (c *testClient) release(id ObjectID) { c.idRequest(fb.MessageTypePlasmaReleaseRequest, id) }

func (c *testClient) contains(id ObjectID) bool {
	c.t.Helper()
	c.idRequest(fb.MessageTypePlasmaContainsRequest, id)
	return fb.GetRootAsPlasmaContainsReply(c.recv(fb.MessageTypePlasmaContainsReply), 0).HasObject() == 1
}

// got is one entry of a Get reply: nil data when not present.
type got struct {
	data, meta []byte
}

func (c *testClient) sendGet(ids []ObjectID, timeoutMs int64) {
	b := flatbuffers.NewBuilder(64)
	offs := make([]flatbuffers.UOffsetT, len(ids))
	for i := range ids {
		offs[i] = b.CreateByteString(ids[i][:])
	}
	fb.PlasmaGetRequestStartObjectIdsVector(b, len(ids))
	for i := len(offs) - 1; i >= 0; i-- {
		b.PrependUOffsetT(offs[i])
	}
	vec := b.EndVector(len(ids))
	fb.PlasmaGetRequestStart(b)
	fb.PlasmaGetRequestAddObjectIds(b, vec)
	if timeoutMs != 0 {
		fb.PlasmaGetRequestAddTimeoutMs(b, timeoutMs)
	}
	b.Finish(fb.PlasmaGetRequestEnd(b))
	c.send(fb.MessageTypePlasmaGetRequest, b.FinishedBytes())
}

func (c *testClient) getReply(ids []ObjectID) []got {
	c.t.Helper()
	m := fb.GetRootAsPlasmaGetReply(c.recv(fb.MessageTypePlasmaGetReply), 0)
	if m.ObjectIdsLength() != len(ids) || m.PlasmaObjectsLength() != len(ids) {
		c.t.Fatalf("get reply lists %d ids/%d objects, want %d", m.ObjectIdsLength(), m.PlasmaObjectsLength(), len(ids))
	}
	if m.StoreFdsLength() != m.MmapSizesLength() || m.StoreFdsLength() != m.UniqueFdIdsLength() {
		c.t.Fatalf("fd vectors disagree")
	}
	for i := 0; i < m.StoreFdsLength(); i++ {
		c.mapping(m.StoreFds(i), m.UniqueFdIds(i), m.MmapSizes(i))
	}
	out := make([]got, len(ids))
	for i := range ids {
		if ObjectID(m.ObjectIds(i)) != ids[i] {
			c.t.Fatalf("get reply id %d differs", i)
		}
		var sp fb.PlasmaObjectSpec
		m.PlasmaObjects(&sp, i)
		if sp.DataSize() == ^uint64(0) {
			continue
		}
		mem, ok := c.maps[[2]int64{int64(sp.SegmentIndex()), sp.UniqueFdId()}]
		if !ok {
			c.t.Fatalf("object %d in segment (%d,%d) that was never passed", i, sp.SegmentIndex(), sp.UniqueFdId())
		}
		out[i] = got{
			data: mem[sp.DataOffset() : sp.DataOffset()+sp.DataSize()],
			meta: mem[sp.MetadataOffset() : sp.MetadataOffset()+sp.MetadataSize()],
		}
	}
	return out
}

func (c *testClient) get(ids []ObjectID, timeoutMs int64) []got {
	c.t.Helper()
	c.sendGet(ids, timeoutMs)
	return c.getReply(ids)
}

func (c *testClient) delete(ids ...ObjectID) []fb.PlasmaError {
	c.t.Helper()
	b := flatbuffers.NewBuilder(64)
	offs := make([]flatbuffers.UOffsetT, len(ids))
	for i := range ids {
		offs[i] = b.CreateByteString(ids[i][:])
	}
	fb.PlasmaDeleteRequestStartObjectIdsVector(b, len(ids))
	for i := len(offs) - 1; i >= 0; i-- {
		b.PrependUOffsetT(offs[i])
	}
	vec := b.EndVector(len(ids))
	fb.PlasmaDeleteRequestStart(b)
	fb.PlasmaDeleteRequestAddCount(b, int32(len(ids)))
	fb.PlasmaDeleteRequestAddObjectIds(b, vec)
	b.Finish(fb.PlasmaDeleteRequestEnd(b))
	c.send(fb.MessageTypePlasmaDeleteRequest, b.FinishedBytes())
	m := fb.GetRootAsPlasmaDeleteReply(c.recv(fb.MessageTypePlasmaDeleteReply), 0)
	errs := make([]fb.PlasmaError, m.ErrorsLength())
	for i := range errs {
		errs[i] = m.Errors(i)
	}
	return errs
}

// put creates, writes, seals and releases an object, as ray.put does
// (retrying the create while the store makes room).
func (c *testClient) put(id ObjectID, data, meta []byte) {
	c.t.Helper()
	cr := c.create(id, uint64(len(data)), uint64(len(meta)), Owner{})
	for cr.err == fb.PlasmaErrorOK && cr.retry != 0 {
		cr = c.createRetry(id, cr.retry)
	}
	if cr.err != fb.PlasmaErrorOK || cr.retry != 0 {
		c.t.Fatalf("create %s: error %v retry %d", id, cr.err, cr.retry)
	}
	copy(cr.buf, data)
	copy(cr.buf[len(data):], meta)
	if e := c.seal(id); e != fb.PlasmaErrorOK {
		c.t.Fatalf("seal %s: %v", id, e)
	}
	c.release(id)
}

func oid(n int) ObjectID {
	var id ObjectID
	copy(id[:], fmt.Sprintf("object-%06d", n))
	return id
}

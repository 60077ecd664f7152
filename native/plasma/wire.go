package plasma

import (
	"errors"
	"fmt"

	flatbuffers "github.com/google/flatbuffers/go"

	fb "github.com/gray-cluster/gray/native/fbs/plasmafb"
)

// ErrMalformed is a request body that is not a well-formed flatbuffer of
// its declared type, or that carries an object id of the wrong length.
var ErrMalformed = errors.New("plasma: malformed message")

// decode runs fn over a request body, turning the panics the flatbuffers
// accessors raise on out-of-range offsets into ErrMalformed.
func decode(body []byte, fn func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", ErrMalformed, r)
		}
	}()
	if len(body) < 4 {
		return fmt.Errorf("%w: body of %d bytes", ErrMalformed, len(body))
	}
	fn()
	return nil
}

// toID copies a wire object id, which must be exactly 28 bytes.
func toID(b []byte) (ObjectID, error) {
	var id ObjectID
	if len(b) != len(id) {
		return id, fmt.Errorf("%w: object id of %d bytes", ErrMalformed, len(b))
	}
	copy(id[:], b)
	return id, nil
}

type createReq struct {
	id             ObjectID
	owner          Owner
	dataSize       uint64
	metaSize       uint64
	source         int32
	deviceNum      int32
	mutable        bool
	tryImmediately bool
}

func decodeCreate(body []byte) (r createReq, err error) {
	var raw []byte
	if err = decode(body, func() {
		m := fb.GetRootAsPlasmaCreateRequest(body, 0)
		raw = m.ObjectId()
		r.owner = Owner{
			NodeID:   append([]byte(nil), m.OwnerNodeId()...),
			WorkerID: append([]byte(nil), m.OwnerWorkerId()...),
			IP:       string(m.OwnerIpAddress()),
			Port:     m.OwnerPort(),
		}
		r.dataSize, r.metaSize = m.DataSize(), m.MetadataSize()
		r.source, r.deviceNum = int32(m.Source()), m.DeviceNum()
		r.mutable, r.tryImmediately = m.IsMutable(), m.TryImmediately()
	}); err != nil {
		return r, err
	}
	r.id, err = toID(raw)
	return r, err
}

func decodeCreateRetry(body []byte) (id ObjectID, reqID uint64, err error) {
	var raw []byte
	if err = decode(body, func() {
		m := fb.GetRootAsPlasmaCreateRetryRequest(body, 0)
		raw, reqID = m.ObjectId(), m.RequestId()
	}); err != nil {
		return id, 0, err
	}
	id, err = toID(raw)
	return id, reqID, err
}

// decodeIDMessage reads slot 0 (object_id) of the single-id requests
// (Abort, Seal, Contains) and, for Release, slot 1 (may_unmap).
func decodeIDMessage(typ fb.MessageType, body []byte) (id ObjectID, mayUnmap bool, err error) {
	var raw []byte
	if err = decode(body, func() {
		switch typ {
		case fb.MessageTypePlasmaAbortRequest:
			raw = fb.GetRootAsPlasmaAbortRequest(body, 0).ObjectId()
		case fb.MessageTypePlasmaSealRequest:
			raw = fb.GetRootAsPlasmaSealRequest(body, 0).ObjectId()
		case fb.MessageTypePlasmaContainsRequest:
			raw = fb.GetRootAsPlasmaContainsRequest(body, 0).ObjectId()
		case fb.MessageTypePlasmaReleaseRequest:
			m := fb.GetRootAsPlasmaReleaseRequest(body, 0)
			raw, mayUnmap = m.ObjectId(), m.MayUnmap()
		}
	}); err != nil {
		return id, false, err
	}
	id, err = toID(raw)
	return id, mayUnmap, err
}

func decodeGet(body []byte) (ids []ObjectID, timeoutMs int64, err error) {
	var raws [][]byte
	if err = decode(body, func() {
		m := fb.GetRootAsPlasmaGetRequest(body, 0)
		n := m.ObjectIdsLength()
		if n > len(body) {
			panic(fmt.Sprintf("%d ids in %d bytes", n, len(body)))
		}
		for i := 0; i < n; i++ {
			raws = append(raws, m.ObjectIds(i))
		}
		timeoutMs = m.TimeoutMs()
	}); err != nil {
		return nil, 0, err
	}
	ids, err = toIDs(raws)
	return ids, timeoutMs, err
}

func decodeDelete(body []byte) (ids []ObjectID, err error) {
	var raws [][]byte
	if err = decode(body, func() {
		m := fb.GetRootAsPlasmaDeleteRequest(body, 0)
		n := m.ObjectIdsLength()
		if n > len(body) {
			panic(fmt.Sprintf("%d ids in %d bytes", n, len(body)))
		}
		for i := 0; i < n; i++ {
			raws = append(raws, m.ObjectIds(i))
		}
	}); err != nil {
		return nil, err
	}
	return toIDs(raws)
}

func toIDs(raws [][]byte) ([]ObjectID, error) {
	ids := make([]ObjectID, len(raws))
	for i, raw := range raws {
		id, err := toID(raw)
		if err != nil {
			return nil, err
		}
		ids[i] = id
	}
	return ids, nil
}

// spec is one PlasmaObjectSpec as the store reports it.
type spec struct {
	present   bool
	dataOff   uint64
	dataSize  uint64
	metaSize  uint64
	allocSize uint64
	deviceNum int32
}

// putSpec writes a PlasmaObjectSpec inline (the builder must be positioned
// for a struct: right before a table's Add call or inside a struct vector).
// An absent object is all zero except data_size, which is all ones.
func putSpec(b *flatbuffers.Builder, fd int32, s spec) flatbuffers.UOffsetT {
	if !s.present {
		return fb.CreatePlasmaObjectSpec(b, 0, 0, 0, 0, ^uint64(0), 0, 0, 0, false, 0, false)
	}
	return fb.CreatePlasmaObjectSpec(b, fd, uniqueFdID, s.dataOff, s.dataOff, s.dataSize,
		s.dataOff+s.dataSize, s.metaSize, s.allocSize, false, s.deviceNum, false)
}

// uniqueFdID is the id the store gives its one segment; clients key their
// mappings by (store_fd, unique_fd_id).
const uniqueFdID = 1

func encodeConnectReply(capacity int64) []byte {
	b := flatbuffers.NewBuilder(32)
	fb.PlasmaConnectReplyStart(b)
	fb.PlasmaConnectReplyAddMemoryCapacity(b, capacity)
	b.Finish(fb.PlasmaConnectReplyEnd(b))
	return b.FinishedBytes()
}

// encodeCreateReply builds a PlasmaCreateReply. With retry > 0 the object is
// not created yet and the client must send PlasmaCreateRetryRequest(retry).
// The spec slot is always present (the stock client dereferences it).
func encodeCreateReply(id ObjectID, s spec, perr fb.PlasmaError, retry uint64, fd int32, mmapSize int64) []byte {
	b := flatbuffers.NewBuilder(192)
	idOff := b.CreateByteString(id[:])
	fb.PlasmaCreateReplyStart(b)
	if s.present {
		fb.PlasmaCreateReplyAddMmapSize(b, mmapSize)
		fb.PlasmaCreateReplyAddUniqueFdId(b, uniqueFdID)
		fb.PlasmaCreateReplyAddStoreFd(b, fd)
	}
	if retry > 0 {
		fb.PlasmaCreateReplyAddRetryWithRequestId(b, retry)
	}
	fb.PlasmaCreateReplyAddObjectId(b, idOff)
	if !s.present {
		s = spec{present: true} // error or retry: a zero spec, not "absent"
		fd = 0
	}
	fb.PlasmaCreateReplyAddPlasmaObject(b, putSpec(b, fd, s))
	fb.PlasmaCreateReplyAddError(b, perr)
	b.Finish(fb.PlasmaCreateReplyEnd(b))
	return b.FinishedBytes()
}

func encodeIDReply(typ fb.MessageType, id ObjectID, perr fb.PlasmaError, flag int32) []byte {
	b := flatbuffers.NewBuilder(64)
	idOff := b.CreateByteString(id[:])
	switch typ {
	case fb.MessageTypePlasmaAbortReply:
		fb.PlasmaAbortReplyStart(b)
		fb.PlasmaAbortReplyAddObjectId(b, idOff)
		b.Finish(fb.PlasmaAbortReplyEnd(b))
	case fb.MessageTypePlasmaSealReply:
		fb.PlasmaSealReplyStart(b)
		fb.PlasmaSealReplyAddObjectId(b, idOff)
		fb.PlasmaSealReplyAddError(b, perr)
		b.Finish(fb.PlasmaSealReplyEnd(b))
	case fb.MessageTypePlasmaReleaseReply:
		fb.PlasmaReleaseReplyStart(b)
		fb.PlasmaReleaseReplyAddObjectId(b, idOff)
		fb.PlasmaReleaseReplyAddShouldUnmap(b, flag != 0)
		fb.PlasmaReleaseReplyAddError(b, perr)
		b.Finish(fb.PlasmaReleaseReplyEnd(b))
	case fb.MessageTypePlasmaContainsReply:
		fb.PlasmaContainsReplyStart(b)
		fb.PlasmaContainsReplyAddObjectId(b, idOff)
		fb.PlasmaContainsReplyAddHasObject(b, flag)
		b.Finish(fb.PlasmaContainsReplyEnd(b))
	}
	return b.FinishedBytes()
}

func byteStrings(b *flatbuffers.Builder, ids []ObjectID) []flatbuffers.UOffsetT {
	offs := make([]flatbuffers.UOffsetT, len(ids))
	for i := range ids {
		offs[i] = b.CreateByteString(ids[i][:])
	}
	return offs
}

func offsetVector(b *flatbuffers.Builder, offs []flatbuffers.UOffsetT) flatbuffers.UOffsetT {
	b.StartVector(4, len(offs), 4)
	for i := len(offs) - 1; i >= 0; i-- {
		b.PrependUOffsetT(offs[i])
	}
	return b.EndVector(len(offs))
}

// encodeGetReply lists every requested id with its spec, and the segment
// (store_fds/unique_fd_ids/mmap_sizes of length 1) when any is present.
func encodeGetReply(ids []ObjectID, specs []spec, fd int32, mmapSize int64) []byte {
	b := flatbuffers.NewBuilder(128 + 120*len(ids))
	idVec := offsetVector(b, byteStrings(b, ids))
	any := false
	fb.PlasmaGetReplyStartPlasmaObjectsVector(b, len(specs))
	for i := len(specs) - 1; i >= 0; i-- {
		putSpec(b, fd, specs[i])
		any = any || specs[i].present
	}
	objVec := b.EndVector(len(specs))
	n := 0
	if any {
		n = 1
	}
	fb.PlasmaGetReplyStartStoreFdsVector(b, n)
	if any {
		b.PrependInt32(fd)
	}
	fdVec := b.EndVector(n)
	fb.PlasmaGetReplyStartUniqueFdIdsVector(b, n)
	if any {
		b.PrependInt64(uniqueFdID)
	}
	uidVec := b.EndVector(n)
	fb.PlasmaGetReplyStartMmapSizesVector(b, n)
	if any {
		b.PrependInt64(mmapSize)
	}
	sizeVec := b.EndVector(n)
	handleVec := offsetVector(b, nil)
	fb.PlasmaGetReplyStart(b)
	fb.PlasmaGetReplyAddObjectIds(b, idVec)
	fb.PlasmaGetReplyAddPlasmaObjects(b, objVec)
	fb.PlasmaGetReplyAddStoreFds(b, fdVec)
	fb.PlasmaGetReplyAddUniqueFdIds(b, uidVec)
	fb.PlasmaGetReplyAddMmapSizes(b, sizeVec)
	fb.PlasmaGetReplyAddHandles(b, handleVec)
	b.Finish(fb.PlasmaGetReplyEnd(b))
	return b.FinishedBytes()
}

func encodeDeleteReply(ids []ObjectID, errs []fb.PlasmaError) []byte {
	b := flatbuffers.NewBuilder(64 + 40*len(ids))
	idVec := offsetVector(b, byteStrings(b, ids))
	b.StartVector(4, len(errs), 4)
	for i := len(errs) - 1; i >= 0; i-- {
		b.PrependInt32(int32(errs[i]))
	}
	errVec := b.EndVector(len(errs))
	fb.PlasmaDeleteReplyStart(b)
	fb.PlasmaDeleteReplyAddCount(b, int32(len(ids)))
	fb.PlasmaDeleteReplyAddObjectIds(b, idVec)
	fb.PlasmaDeleteReplyAddErrors(b, errVec)
	b.Finish(fb.PlasmaDeleteReplyEnd(b))
	return b.FinishedBytes()
}

func encodeDebugStringReply(s string) []byte {
	b := flatbuffers.NewBuilder(64 + len(s))
	off := b.CreateString(s)
	fb.PlasmaGetDebugStringReplyStart(b)
	fb.PlasmaGetDebugStringReplyAddDebugString(b, off)
	b.Finish(fb.PlasmaGetDebugStringReplyEnd(b))
	return b.FinishedBytes()
}

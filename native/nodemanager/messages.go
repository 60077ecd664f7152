package nodemanager

import (
	"errors"
	"fmt"

	flatbuffers "github.com/google/flatbuffers/go"

	fb "github.com/gray-cluster/gray/native/fbs/rayletfb"
)

// ErrMalformed is a unix-socket message whose flatbuffer does not decode.
var ErrMalformed = errors.New("nodemanager: malformed message")

// Message types of the raylet socket (ray.protocol.MessageType, 2.60).
const (
	msgActorCreationTaskDone    = int64(fb.MessageTypeActorCreationTaskDone)
	msgRegisterClientRequest    = int64(fb.MessageTypeRegisterClientRequest)
	msgRegisterClientReply      = int64(fb.MessageTypeRegisterClientReply)
	msgAnnounceWorkerPort       = int64(fb.MessageTypeAnnounceWorkerPort)
	msgAnnounceWorkerPortReply  = int64(fb.MessageTypeAnnounceWorkerPortReply)
	msgDisconnectClientRequest  = int64(fb.MessageTypeDisconnectClientRequest)
	msgDisconnectClientReply    = int64(fb.MessageTypeDisconnectClientReply)
	msgAsyncGetObjectsRequest   = int64(fb.MessageTypeAsyncGetObjectsRequest)
	msgCancelGetRequest         = int64(fb.MessageTypeCancelGetRequest)
	msgNotifyWorkerBlocked      = int64(fb.MessageTypeNotifyWorkerBlocked)
	msgNotifyWorkerUnblocked    = int64(fb.MessageTypeNotifyWorkerUnblocked)
	msgWaitRequest              = int64(fb.MessageTypeWaitRequest)
	msgWaitReply                = int64(fb.MessageTypeWaitReply)
	msgWaitForActorCallArgs     = int64(fb.MessageTypeWaitForActorCallArgsRequest)
	msgPushErrorRequest         = int64(fb.MessageTypePushErrorRequest)
	msgFreeObjectsInObjectStore = int64(fb.MessageTypeFreeObjectsInObjectStoreRequest)
	msgSubscribePlasmaReady     = int64(fb.MessageTypeSubscribePlasmaReady)
)

// Worker types of RegisterClientRequest.worker_type (rpc.WorkerType).
const (
	workerTypeWorker  = 0
	workerTypeDriver  = 1
	workerTypeSpill   = 2
	workerTypeRestore = 3
)

// fbAddress mirrors the flatbuffer Address table (rpc.Address).
type fbAddress struct {
	NodeID   []byte
	IP       string
	Port     int32
	WorkerID []byte
}

type registerClientRequest struct {
	WorkerType          int32
	WorkerID            []byte
	WorkerPID           int64
	JobID               []byte
	RuntimeEnvHash      int32
	Language            int32
	IP                  string
	Port                int32
	SerializedJobConfig []byte
}

type announceWorkerPort struct {
	Port       int32
	Entrypoint string
}

type disconnectClientRequest struct {
	Type      int32
	Detail    string
	Exception []byte
}

type objectsWithOwners struct {
	IDs    [][]byte
	Owners []fbAddress
}

type waitRequest struct {
	objectsWithOwners
	NumRequired int32
	TimeoutMs   int64
}

type waitForActorCallArgs struct {
	objectsWithOwners
	TaskID        []byte
	AttemptNumber int32
}

type pushErrorRequest struct {
	JobID     []byte
	Type      string
	Message   string
	Timestamp float64
}

type freeObjectsRequest struct {
	LocalOnly bool
	IDs       [][]byte
}

type subscribePlasmaReady struct {
	ObjectID []byte
	Owner    fbAddress
}

// decode runs fn, turning the panics of the generated accessors on a
// corrupt buffer (offsets out of range) into ErrMalformed.
func decode(name string, body []byte, fn func()) (err error) {
	if len(body) < 4 {
		return fmt.Errorf("%w: %s: %d-byte body", ErrMalformed, name, len(body))
	}
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: %s: %v", ErrMalformed, name, p)
		}
	}()
	fn()
	return nil
}

func clone(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte(nil), b...)
}

func readAddress(a *fb.Address) fbAddress {
	return fbAddress{NodeID: clone(a.NodeId()), IP: string(a.IpAddress()), Port: a.Port(), WorkerID: clone(a.WorkerId())}
}

func parseRegisterClientRequest(body []byte) (m registerClientRequest, err error) {
	err = decode("RegisterClientRequest", body, func() {
		t := fb.GetRootAsRegisterClientRequest(body, 0)
		m = registerClientRequest{
			WorkerType: t.WorkerType(), WorkerID: clone(t.WorkerId()), WorkerPID: t.WorkerPid(),
			JobID: clone(t.JobId()), RuntimeEnvHash: t.RuntimeEnvHash(), Language: t.Language(),
			IP: string(t.IpAddress()), Port: t.Port(), SerializedJobConfig: clone(t.SerializedJobConfig()),
		}
	})
	return m, err
}

func parseAnnounceWorkerPort(body []byte) (m announceWorkerPort, err error) {
	err = decode("AnnounceWorkerPort", body, func() {
		t := fb.GetRootAsAnnounceWorkerPort(body, 0)
		m = announceWorkerPort{Port: t.Port(), Entrypoint: string(t.Entrypoint())}
	})
	return m, err
}

func parseDisconnectClientRequest(body []byte) (m disconnectClientRequest, err error) {
	err = decode("DisconnectClientRequest", body, func() {
		t := fb.GetRootAsDisconnectClientRequest(body, 0)
		m = disconnectClientRequest{Type: t.DisconnectType(), Detail: string(t.DisconnectDetail()),
			Exception: clone(t.CreationTaskExceptionPbBytes())}
	})
	return m, err
}

type idsAndOwners interface {
	ObjectIds(j int) []byte
	ObjectIdsLength() int
	OwnerAddresses(obj *fb.Address, j int) bool
	OwnerAddressesLength() int
}

func readIDsAndOwners(t idsAndOwners) objectsWithOwners {
	var o objectsWithOwners
	for i := 0; i < t.ObjectIdsLength(); i++ {
		o.IDs = append(o.IDs, clone(t.ObjectIds(i)))
	}
	var a fb.Address
	for i := 0; i < t.OwnerAddressesLength(); i++ {
		if t.OwnerAddresses(&a, i) {
			o.Owners = append(o.Owners, readAddress(&a))
		}
	}
	return o
}

func parseAsyncGetObjects(body []byte) (m objectsWithOwners, err error) {
	err = decode("AsyncGetObjectsRequest", body, func() {
		m = readIDsAndOwners(fb.GetRootAsAsyncGetObjectsRequest(body, 0))
	})
	return m, err
}

func parseWaitRequest(body []byte) (m waitRequest, err error) {
	err = decode("WaitRequest", body, func() {
		t := fb.GetRootAsWaitRequest(body, 0)
		m = waitRequest{objectsWithOwners: readIDsAndOwners(t), NumRequired: t.NumRequiredObjects(), TimeoutMs: t.Timeout()}
	})
	return m, err
}

func parseWaitForActorCallArgs(body []byte) (m waitForActorCallArgs, err error) {
	err = decode("WaitForActorCallArgsRequest", body, func() {
		t := fb.GetRootAsWaitForActorCallArgsRequest(body, 0)
		m = waitForActorCallArgs{objectsWithOwners: readIDsAndOwners(t), TaskID: clone(t.TaskId()), AttemptNumber: t.AttemptNumber()}
	})
	return m, err
}

func parsePushError(body []byte) (m pushErrorRequest, err error) {
	err = decode("PushErrorRequest", body, func() {
		t := fb.GetRootAsPushErrorRequest(body, 0)
		m = pushErrorRequest{JobID: clone(t.JobId()), Type: string(t.Type()), Message: string(t.ErrorMessage()), Timestamp: t.Timestamp()}
	})
	return m, err
}

func parseFreeObjects(body []byte) (m freeObjectsRequest, err error) {
	err = decode("FreeObjectsRequest", body, func() {
		t := fb.GetRootAsFreeObjectsRequest(body, 0)
		m.LocalOnly = t.LocalOnly()
		for i := 0; i < t.ObjectIdsLength(); i++ {
			m.IDs = append(m.IDs, clone(t.ObjectIds(i)))
		}
	})
	return m, err
}

func parseSubscribePlasmaReady(body []byte) (m subscribePlasmaReady, err error) {
	err = decode("SubscribePlasmaReady", body, func() {
		t := fb.GetRootAsSubscribePlasmaReady(body, 0)
		m.ObjectID = clone(t.ObjectId())
		if a := t.OwnerAddress(nil); a != nil {
			m.Owner = readAddress(a)
		}
	})
	return m, err
}

// Replies the raylet sends.

func buildRegisterClientReply(success bool, reason string, nodeID []byte, port int32) []byte {
	b := flatbuffers.NewBuilder(128)
	r := b.CreateString(reason)
	n := b.CreateByteString(nodeID)
	fb.RegisterClientReplyStart(b)
	fb.RegisterClientReplyAddSuccess(b, success)
	fb.RegisterClientReplyAddFailureReason(b, r)
	fb.RegisterClientReplyAddNodeId(b, n)
	fb.RegisterClientReplyAddPort(b, port)
	b.Finish(fb.RegisterClientReplyEnd(b))
	return b.FinishedBytes()
}

func buildAnnounceWorkerPortReply(success bool, reason string) []byte {
	b := flatbuffers.NewBuilder(64)
	r := b.CreateString(reason)
	fb.AnnounceWorkerPortReplyStart(b)
	fb.AnnounceWorkerPortReplyAddSuccess(b, success)
	fb.AnnounceWorkerPortReplyAddFailureReason(b, r)
	b.Finish(fb.AnnounceWorkerPortReplyEnd(b))
	return b.FinishedBytes()
}

func buildDisconnectClientReply() []byte {
	b := flatbuffers.NewBuilder(16)
	fb.DisconnectClientReplyStart(b)
	b.Finish(fb.DisconnectClientReplyEnd(b))
	return b.FinishedBytes()
}

func stringVector(b *flatbuffers.Builder, items [][]byte) flatbuffers.UOffsetT {
	offs := make([]flatbuffers.UOffsetT, len(items))
	for i, s := range items {
		offs[i] = b.CreateByteString(s)
	}
	b.StartVector(4, len(offs), 4)
	for i := len(offs) - 1; i >= 0; i-- {
		b.PrependUOffsetT(offs[i])
	}
	return b.EndVector(len(offs))
}

func buildWaitReply(found, remaining [][]byte) []byte {
	b := flatbuffers.NewBuilder(256)
	f := stringVector(b, found)
	r := stringVector(b, remaining)
	fb.WaitReplyStart(b)
	fb.WaitReplyAddFound(b, f)
	fb.WaitReplyAddRemaining(b, r)
	b.Finish(fb.WaitReplyEnd(b))
	return b.FinishedBytes()
}

package clientserver_test

import (
	"bytes"
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/internal/pickle"
	pb "github.com/gray-cluster/gray/proto/rayclientpb"
)

const mib = 1 << 20

func TestClusterInfo(t *testing.T) {
	h := startPool(t)
	c := dial(t, h)
	tests := []struct {
		typ   pb.ClusterInfoType_TypeEnum
		check func(v any) bool
	}{
		{pb.ClusterInfoType_PING, func(v any) bool { return v != nil }},
		{pb.ClusterInfoType_IS_INITIALIZED, func(v any) bool { return v == true }},
	}
	for _, tc := range tests {
		t.Run(tc.typ.String(), func(t *testing.T) {
			resp, err := c.driver.ClusterInfo(c.ctx(), &pb.ClusterInfoRequest{Type: tc.typ})
			if err != nil {
				t.Fatal(err)
			}
			if resp.Type != tc.typ {
				t.Errorf("response type %v, want %v", resp.Type, tc.typ)
			}
			var v any
			if err := json.Unmarshal([]byte(resp.GetJson()), &v); err != nil {
				t.Fatalf("json %q: %v", resp.GetJson(), err)
			}
			if !tc.check(v) {
				t.Errorf("json = %s", resp.GetJson())
			}
		})
	}
}

func TestHandshake(t *testing.T) {
	h := startPool(t)
	c := dial(t, h)
	_, info := c.connect()
	if info.RayVersion != "2.60.0" {
		t.Errorf("ray_version = %q, want 2.60.0", info.RayVersion)
	}
	if !regexp.MustCompile(`^\d+\.\d+\.\d+$`).MatchString(info.PythonVersion) {
		t.Errorf("python_version = %q", info.PythonVersion)
	}
	if info.NumClients < 1 {
		t.Errorf("num_clients = %d with this client connected", info.NumClients)
	}
}

func TestChunkedPutAndGetObject(t *testing.T) {
	h := startPool(t)
	c := dial(t, h)
	d, _ := c.connect()
	value := bytesPickle(12*mib, 42)
	if bytes.Contains(value, []byte("PickleStub")) {
		t.Fatal("test data happens to contain the stub marker; change the seed")
	}
	objects, used := h.Store.Len(), h.Store.Used()

	put := d.put(value, 5*mib)
	if !put.Valid || len(put.Id) != ids.ObjectIDSize {
		t.Fatalf("put = valid %v, id of %d bytes, error %q", put.Valid, len(put.Id), put.Error)
	}
	if h.Store.Len() != objects+1 || h.Store.Used() != used+int64(len(value)) {
		t.Errorf("store after put: %d objects, %d bytes; want %d, %d", h.Store.Len(), h.Store.Used(), objects+1, used+int64(len(value)))
	}

	chunks, err := c.getObject(&pb.GetRequest{Ids: [][]byte{put.Id}, Timeout: 60})
	if err != nil {
		t.Fatal(err)
	}
	var whole []byte
	for i, ch := range chunks {
		if !ch.Valid {
			t.Fatalf("chunk %d invalid: %q", i, ch.Error)
		}
		if int(ch.ChunkId) != i || int(ch.TotalChunks) != len(chunks) {
			t.Fatalf("chunk %d has chunk_id %d, total_chunks %d (got %d chunks)", i, ch.ChunkId, ch.TotalChunks, len(chunks))
		}
		whole = append(whole, ch.Data...)
	}
	if len(chunks) < 3 {
		t.Fatalf("%d chunks for %d bytes; want 5 MiB chunks", len(chunks), len(whole))
	}
	for i, ch := range chunks {
		if ch.TotalSize != uint64(len(whole)) {
			t.Fatalf("chunk %d total_size %d, sum of chunks %d", i, ch.TotalSize, len(whole))
		}
	}
	// The stream is a pickle of [loads_from_server(value)].
	v, err := pickle.DecodeBytes(whole)
	if err != nil {
		t.Fatalf("GetObject data is not a pickle: %v", err)
	}
	list, ok := v.([]any)
	if !ok || len(list) != 1 {
		t.Fatalf("GetObject pickle is %T %v, want a one-element list", v, v)
	}
	call, ok := list[0].(*pickle.Object)
	if !ok || call.Module != "ray.util.client.client_pickler" || call.Name != "loads_from_server" || len(call.Args) != 1 {
		t.Fatalf("element is %#v, want loads_from_server(bytes)", list[0])
	}
	if got, _ := call.Args[0].([]byte); !bytes.Equal(got, value) {
		t.Fatalf("the value came back changed (%d bytes, want %d)", len(got), len(value))
	}

	tail, err := c.getObject(&pb.GetRequest{Ids: [][]byte{put.Id}, Timeout: 60, StartChunkId: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(tail) != len(chunks)-1 {
		t.Fatalf("start_chunk_id=1 gave %d chunks, want %d", len(tail), len(chunks)-1)
	}
	for i, ch := range tail {
		want := chunks[i+1]
		if ch.ChunkId != want.ChunkId || ch.TotalChunks != want.TotalChunks || ch.TotalSize != want.TotalSize || !bytes.Equal(ch.Data, want.Data) {
			t.Fatalf("resumed chunk %d differs from chunk %d of the full stream", ch.ChunkId, want.ChunkId)
		}
	}
}

func TestUnknownObject(t *testing.T) {
	h := startPool(t)
	c := dial(t, h)
	d, _ := c.connect()
	unknown := ids.NewTaskID(ids.NilActorFor(ids.JobFromInt(77))).ReturnID(1)

	chunks, err := c.getObject(&pb.GetRequest{Ids: [][]byte{unknown[:]}, Timeout: 1})
	if err != nil {
		t.Fatalf("GetObject of an unknown id failed at the gRPC level: %v", err)
	}
	if len(chunks) != 1 || chunks[0].Valid || len(chunks[0].Error) == 0 {
		t.Fatalf("GetObject of an unknown id = %v; want one invalid response with an error", chunks)
	}
	if e, err := pickle.DecodeBytes(chunks[0].Error); err != nil {
		t.Errorf("error is not a pickle: %v", err)
	} else if o, ok := e.(*pickle.Object); !ok || o.Name == "" {
		t.Errorf("error pickle decodes to %#v, want an exception", e)
	}

	wait, err := c.driver.WaitObject(c.ctx(), &pb.WaitRequest{ObjectIds: [][]byte{unknown[:]}, NumReturns: 1, Timeout: 1, ClientId: c.clientID})
	if err != nil {
		t.Fatalf("WaitObject of an unknown id failed at the gRPC level: %v", err)
	}
	if wait.Valid {
		t.Errorf("WaitObject of an unknown id = %v, want valid=false", wait)
	}

	// A known, sealed id is ready.
	put := d.put(bytesPickle(64, 1), 5*mib)
	wait, err = c.driver.WaitObject(c.ctx(), &pb.WaitRequest{ObjectIds: [][]byte{put.Id}, NumReturns: 1, Timeout: 10, ClientId: c.clientID})
	if err != nil || !wait.Valid || len(wait.ReadyObjectIds) != 1 || !bytes.Equal(wait.ReadyObjectIds[0], put.Id) || len(wait.RemainingObjectIds) != 0 {
		t.Fatalf("WaitObject of a sealed id = %v, %v", wait, err)
	}
}

func TestKV(t *testing.T) {
	h := startPool(t)
	c := dial(t, h)
	ctx := c.ctx()
	ns := []byte("ns1")
	put := func(key, value string, overwrite bool, ns []byte) bool {
		t.Helper()
		r, err := c.driver.KVPut(ctx, &pb.KVPutRequest{Key: []byte(key), Value: []byte(value), Overwrite: overwrite, Namespace: ns})
		if err != nil {
			t.Fatal(err)
		}
		return r.AlreadyExists
	}
	get := func(key string, ns []byte) *pb.KVGetResponse {
		t.Helper()
		r, err := c.driver.KVGet(ctx, &pb.KVGetRequest{Key: []byte(key), Namespace: ns})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	hasValue := func(r *pb.KVGetResponse) bool {
		return r.ProtoReflect().Has(r.ProtoReflect().Descriptor().Fields().ByName("value"))
	}

	if r := get("missing", nil); hasValue(r) {
		t.Fatalf("KVGet of a missing key set value = %q", r.Value)
	}
	if put("k", "v1", false, nil) {
		t.Error("first put reported already_exists")
	}
	if !put("k", "v2", false, nil) {
		t.Error("second put reported a new key")
	}
	if r := get("k", nil); !hasValue(r) || string(r.Value) != "v1" {
		t.Errorf("overwrite=false replaced the value: %q", r.Value)
	}
	if !put("k", "v3", true, nil) {
		t.Error("overwriting put reported a new key")
	}
	if r := get("k", nil); string(r.Value) != "v3" {
		t.Errorf("overwrite=true kept %q", r.Value)
	}
	if put("empty", "", true, nil); !hasValue(get("empty", nil)) {
		t.Error("KVGet of a key holding b\"\" left value unset (the client would return None)")
	}

	// Namespaces are isolated; unset and empty namespace are the same.
	put("k", "in-ns", true, ns)
	if r := get("k", ns); string(r.Value) != "in-ns" {
		t.Errorf("namespaced get = %q", r.Value)
	}
	if r := get("k", []byte{}); string(r.Value) != "v3" {
		t.Errorf("empty namespace get = %q, want the default namespace's v3", r.Value)
	}
	for _, k := range []string{"pre/b", "pre/a", "prefix"} {
		put(k, "x", true, ns)
	}
	list, err := c.driver.KVList(ctx, &pb.KVListRequest{Prefix: []byte("pre"), Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	if got := joinKeys(list.Keys); got != "pre/a,pre/b,prefix" {
		t.Errorf("KVList(pre) = %s", got)
	}
	exists := func(key string, ns []byte) bool {
		r, err := c.driver.KVExists(ctx, &pb.KVExistsRequest{Key: []byte(key), Namespace: ns})
		if err != nil {
			t.Fatal(err)
		}
		return r.Exists
	}
	if !exists("pre/a", ns) || exists("pre/a", nil) {
		t.Error("KVExists ignores the namespace")
	}
	del, err := c.driver.KVDel(ctx, &pb.KVDelRequest{Key: []byte("pre/"), DelByPrefix: true, Namespace: ns})
	if err != nil || del.DeletedNum != 2 {
		t.Fatalf("KVDel(pre/, by prefix) = %v, %v; want 2", del, err)
	}
	del, err = c.driver.KVDel(ctx, &pb.KVDelRequest{Key: []byte("k")})
	if err != nil || del.DeletedNum != 1 {
		t.Fatalf("KVDel(k) = %v, %v; want 1", del, err)
	}
	if exists("k", nil) || !exists("k", ns) || !exists("prefix", ns) {
		t.Error("KVDel removed the wrong keys")
	}
}

func joinKeys(keys [][]byte) string {
	s := make([]string, len(keys))
	for i, k := range keys {
		s[i] = string(k)
	}
	return strings.Join(s, ",")
}

func TestKVPutRetryAppliedOnce(t *testing.T) {
	h := startPool(t)
	c := dial(t, h)
	retry := c.ctx("thread_id", "140000", "req_id", "7")
	first, err := c.driver.KVPut(retry, &pb.KVPutRequest{Key: []byte("k"), Value: []byte("first"), Overwrite: true})
	if err != nil || first.AlreadyExists {
		t.Fatalf("first put = %v, %v", first, err)
	}
	second, err := c.driver.KVPut(retry, &pb.KVPutRequest{Key: []byte("k"), Value: []byte("second"), Overwrite: true})
	if err != nil {
		t.Fatal(err)
	}
	if second.AlreadyExists != first.AlreadyExists {
		t.Errorf("retried put answered %v, want the first answer %v", second, first)
	}
	if v, _, _ := h.KV.Get(context.Background(), nil, []byte("k")); string(v) != "first" {
		t.Errorf("retried put was applied again: value %q", v)
	}
	// Another req_id is a new request.
	third, err := c.driver.KVPut(c.ctx("thread_id", "140000", "req_id", "8"), &pb.KVPutRequest{Key: []byte("k"), Value: []byte("third"), Overwrite: true})
	if err != nil || !third.AlreadyExists {
		t.Fatalf("put with a new req_id = %v, %v", third, err)
	}
	if v, _, _ := h.KV.Get(context.Background(), nil, []byte("k")); string(v) != "third" {
		t.Errorf("put with a new req_id not applied: value %q", v)
	}
}

func TestDatapathBadRequests(t *testing.T) {
	h := startPool(t)
	bad, other := dial(t, h), dial(t, h)
	d, _ := bad.connect()
	d2, _ := other.connect()
	objects := h.Store.Len()

	// A request whose oneof this server does not know (a field number from
	// a newer protocol) is skipped; the stream keeps working.
	unknown := &pb.DataRequest{ReqId: d.reqID()}
	unknown.ProtoReflect().SetUnknown(protowire.AppendBytes(protowire.AppendTag(nil, 99, protowire.BytesType), []byte("future")))
	d.send(unknown)
	if info := d.call(&pb.DataRequest{Type: &pb.DataRequest_ConnectionInfo{ConnectionInfo: &pb.ConnectionInfoRequest{}}}).GetConnectionInfo(); info == nil || info.RayVersion != "2.60.0" {
		t.Fatalf("connection_info after an unknown request = %v", info)
	}

	// A put whose data names the stub class but is not a pickle.
	garbage := []byte("\x80\x05 not a pickle at all, but it mentions PickleStub \xff\xfe")
	for _, chunk := range []int{len(garbage), 16} {
		p := d.put(garbage, chunk)
		if p.Valid || len(p.Error) == 0 || len(p.Id) != 0 {
			t.Fatalf("garbage put in %d-byte chunks = valid %v, id %x, error %q; want invalid with an error", chunk, p.Valid, p.Id, p.Error)
		}
	}
	if h.Store.Len() != objects {
		t.Fatalf("failed puts stored objects: %d, want %d", h.Store.Len(), objects)
	}

	// Both clients are still served.
	for _, c := range []struct {
		name string
		d    *dataStream
		rc   *rawClient
	}{{"bad", d, bad}, {"other", d2, other}} {
		if p := c.d.put(bytesPickle(100, 3), 5*mib); !p.Valid || len(p.Id) != ids.ObjectIDSize {
			t.Errorf("%s client: put after the bad requests = %v", c.name, p)
		}
		if _, err := c.rc.driver.ClusterInfo(c.rc.ctx(), &pb.ClusterInfoRequest{Type: pb.ClusterInfoType_PING}); err != nil {
			t.Errorf("%s client: ping after the bad requests: %v", c.name, err)
		}
	}
}

func TestReconnectToUnknownSession(t *testing.T) {
	h := startPool(t)
	c := dial(t, h)
	s, err := c.data.Datapath(c.ctxAs(newClientID(), "True"))
	if err == nil {
		_, err = s.Recv()
	}
	if status.Code(err) != codes.NotFound {
		t.Fatalf("reconnecting to an unknown session: %v, want NotFound", err)
	}
}

func TestDatapathResendAnsweredFromCache(t *testing.T) {
	h := startPool(t)
	c := dial(t, h)
	d, _ := c.connect()
	objects := h.Store.Len()
	req := &pb.DataRequest{ReqId: d.reqID(), Type: &pb.DataRequest_Put{Put: &pb.PutRequest{Data: bytesPickle(100, 9)}}}
	d.send(req)
	first := d.recv(req.ReqId).GetPut()
	d.send(req) // as a reconnecting client resends unacknowledged requests
	again := d.recv(req.ReqId).GetPut()
	if !first.Valid || !bytes.Equal(first.Id, again.Id) {
		t.Fatalf("resent put answered %x, first answer %x", again.Id, first.Id)
	}
	if h.Store.Len() != objects+1 {
		t.Fatalf("resent put stored %d objects, want 1", h.Store.Len()-objects)
	}
}

func TestConnectionCleanupReleasesObjects(t *testing.T) {
	h := startPool(t)
	c := dial(t, h)
	objects, used := h.Store.Len(), h.Store.Used()
	d, _ := c.connect()
	rc, err := c.driver.ClusterInfo(c.ctx(), &pb.ClusterInfoRequest{Type: pb.ClusterInfoType_RUNTIME_CONTEXT})
	if err != nil {
		t.Fatal(err)
	}
	job := ids.JobID(rc.GetRuntimeContext().GetJobId())
	if info, ok := h.Jobs.Get(job); !ok || !info.Alive {
		t.Fatalf("job %s of the session: %+v, %v", job.Hex(), info, ok)
	}
	for i := 0; i < 3; i++ {
		if p := d.put(bytesPickle(1000+i, uint64(i)), 5*mib); !p.Valid {
			t.Fatalf("put %d invalid", i)
		}
	}
	if h.Store.Len() != objects+3 {
		t.Fatalf("store holds %d objects after 3 puts, want %d", h.Store.Len(), objects+3)
	}
	if r := d.call(&pb.DataRequest{Type: &pb.DataRequest_ConnectionCleanup{ConnectionCleanup: &pb.ConnectionCleanupRequest{}}}); r.GetConnectionCleanup() == nil {
		t.Fatalf("connection_cleanup answered %v", r)
	}
	if err := d.closeAndDrain(); err != nil {
		t.Fatalf("data stream after cleanup: %v", err)
	}
	eventually(t, "session objects released", func() bool { return h.Store.Len() == objects })
	if h.Store.Used() != used {
		t.Errorf("store uses %d bytes after cleanup, want %d", h.Store.Used(), used)
	}
	if info, _ := h.Jobs.Get(job); info.Alive {
		t.Error("job still alive after connection_cleanup")
	}
	// The session is gone: it cannot be resumed.
	s, err := c.data.Datapath(c.ctxAs(c.clientID, "True"))
	if err == nil {
		_, err = s.Recv()
	}
	if status.Code(err) != codes.NotFound {
		t.Fatalf("reconnecting after cleanup: %v, want NotFound", err)
	}
}

// A client that disconnects in the middle of a chunked put loses only that
// put: nothing half-written reaches the store and other clients carry on.
func TestDisconnectMidPut(t *testing.T) {
	h := startPool(t)
	c := dial(t, h)
	objects, used := h.Store.Len(), h.Store.Used()
	d, _ := c.connect()
	data := bytesPickle(3*mib, 7)
	id := d.reqID()
	for i := 0; i < 2; i++ { // two of three chunks, then the client goes away
		d.send(&pb.DataRequest{ReqId: id, Type: &pb.DataRequest_Put{Put: &pb.PutRequest{
			Data: data[i*mib : (i+1)*mib], ChunkId: int32(i), TotalChunks: 3, TotalSize: int64(len(data)),
		}}})
	}
	if r := d.call(&pb.DataRequest{Type: &pb.DataRequest_ConnectionCleanup{ConnectionCleanup: &pb.ConnectionCleanupRequest{}}}); r.GetConnectionCleanup() == nil {
		t.Fatalf("connection_cleanup answered %v", r)
	}
	_ = d.closeAndDrain()
	eventually(t, "session gone", func() bool { return h.Store.Len() == objects })
	if h.Store.Used() != used {
		t.Errorf("store uses %d bytes, want %d: a partial put leaked", h.Store.Used(), used)
	}
	other := dial(t, h)
	d2, _ := other.connect()
	if p := d2.put(bytesPickle(1000, 1), 5*mib); !p.Valid || len(p.Id) != 28 {
		t.Fatalf("another client's put after the disconnect: %v", p)
	}
}

package plasma

import (
	"errors"
	"io"
	"testing"
	"time"

	flatbuffers "github.com/google/flatbuffers/go"

	fb "github.com/gray-cluster/gray/native/fbs/plasmafb"
	"github.com/gray-cluster/gray/native/ipcframe"
)

func emptyTable() []byte {
	b := flatbuffers.NewBuilder(16)
	b.StartObject(0)
	b.Finish(b.EndObject())
	return b.FinishedBytes()
}

// expectDropped checks that the store closed c's connection.
func expectDropped(t *testing.T, c *testClient) {
	t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := c.nc.Read(make([]byte, 1))
	if !errors.Is(err, io.EOF) {
		t.Fatalf("connection still open after bad input: %v", err)
	}
}

func TestBadInputDropsOnlyTheOffender(t *testing.T) {
	s := newStore(t, Config{})
	good := dial(t, s.cfg.SocketPath)
	good.connect()
	good.put(oid(1), []byte("ok"), nil)

	shortID := func() []byte {
		b := flatbuffers.NewBuilder(32)
		id := b.CreateByteString([]byte("short"))
		fb.PlasmaSealRequestStart(b)
		fb.PlasmaSealRequestAddObjectId(b, id)
		b.Finish(fb.PlasmaSealRequestEnd(b))
		return b.FinishedBytes()
	}()
	cases := []struct {
		name string
		typ  fb.MessageType
		body []byte
	}{
		{"garbage create", fb.MessageTypePlasmaCreateRequest, []byte{0xff, 0xff, 0xff, 0x7f, 1, 2, 3, 4}},
		{"truncated get", fb.MessageTypePlasmaGetRequest, []byte{1, 2}},
		{"id of 5 bytes", fb.MessageTypePlasmaSealRequest, shortID},
		{"unknown type", 99, emptyTable()},
		{"reply type from a client", fb.MessageTypePlasmaGetReply, emptyTable()},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			bad := dial(t, s.cfg.SocketPath)
			bad.connect()
			bad.get([]ObjectID{oid(1)}, 0) // holds a reference
			bad.send(tc.typ, tc.body)
			expectDropped(t, bad)
			if got := good.get([]ObjectID{oid(1)}, 0); string(got[0].data) != "ok" {
				t.Fatalf("good client after bad input: %q", got[0].data)
			}
			good.release(oid(1))
		})
	}
	// A bad cookie drops the connection too.
	bad := dial(t, s.cfg.SocketPath)
	frame := ipcframe.Append(nil, int64(fb.MessageTypePlasmaConnectRequest), emptyTable())
	frame[0] = 1
	bad.nc.Write(frame)
	expectDropped(t, bad)
	// Everything the dropped clients held was released: a delete succeeds.
	eventually(t, "dropped clients to be cleaned up", func() bool { return s.Usage().Clients == 1 })
	if errs := good.delete(oid(1)); errs[0] != fb.PlasmaErrorOK {
		t.Fatalf("delete after bad clients left: %v", errs)
	}
}

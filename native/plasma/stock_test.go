package plasma

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	fb "github.com/gray-cluster/gray/native/fbs/plasmafb"
)

// stockPython is the interpreter of the stock ray==2.60.0 wheel (the
// repository's .venv), or "" when there is none.
func stockPython() string {
	if p := os.Getenv("GRAY_RAY_PYTHON"); p != "" {
		return p
	}
	p, err := filepath.Abs("../../.venv/bin/python")
	if err != nil {
		return ""
	}
	if _, err := os.Stat(p); err != nil {
		return ""
	}
	return p
}

type stockParsed struct {
	Kind     string  `json:"kind"`
	OK       bool    `json:"ok"`
	ID       string  `json:"id"`
	IDs      any     `json:"ids"`
	Retry    uint64  `json:"retry"`
	Object   []int64 `json:"object"`
	Objects  []int64 `json:"objects_words"`
	FD       []int64 `json:"fd"`
	FDs      string  `json:"fds"`
	Mmap     int64   `json:"mmap_size"`
	Mmaps    string  `json:"mmap_sizes"`
	Flag     bool    `json:"flag"`
	Errors   string  `json:"errors"`
	idsSlice []string
}

// TestStockReaders hands our replies to the plasma::Read*Reply functions
// inside the stock wheel's _raylet.so (the code the core worker runs on
// every reply) and checks what they extract.
func TestStockReaders(t *testing.T) {
	py := stockPython()
	if py == "" {
		t.Skip("no stock Ray wheel (.venv) to test against")
	}
	a, b := oid(0xa), oid(0xb)
	ah, bh := hex.EncodeToString(a[:]), hex.EncodeToString(b[:])
	const (
		dataOff  = 0x10000
		dataSize = 0x2345
		metaSize = 0x77
		fd       = 17
		mmapSize = 0x7000008
	)
	present := spec{present: true, dataOff: dataOff, dataSize: dataSize, metaSize: metaSize, allocSize: dataSize + metaSize}
	type req struct {
		Kind string `json:"kind"`
		Hex  string `json:"hex"`
		N    int    `json:"n,omitempty"`
	}
	enc := func(kind string, body []byte, n int) req { return req{kind, hex.EncodeToString(body), n} }
	reqs := []req{
		enc("create", encodeCreateReply(a, present, fb.PlasmaErrorOK, 0, fd, mmapSize), 0),
		enc("create", encodeCreateReply(a, spec{}, fb.PlasmaErrorOK, 5, 0, 0), 0),
		enc("create", encodeCreateReply(a, spec{}, fb.PlasmaErrorOutOfMemory, 0, 0, 0), 0),
		enc("create", encodeCreateReply(a, spec{}, fb.PlasmaErrorObjectExists, 0, 0, 0), 0),
		enc("get", encodeGetReply([]ObjectID{a, b}, []spec{present, {}}, fd, mmapSize), 2),
		enc("get", encodeGetReply([]ObjectID{b}, []spec{{}}, fd, mmapSize), 1),
		enc("seal", encodeIDReply(fb.MessageTypePlasmaSealReply, a, fb.PlasmaErrorOK, 0), 0),
		enc("seal", encodeIDReply(fb.MessageTypePlasmaSealReply, a, fb.PlasmaErrorObjectNonexistent, 0), 0),
		enc("abort", encodeIDReply(fb.MessageTypePlasmaAbortReply, a, 0, 0), 0),
		enc("contains", encodeIDReply(fb.MessageTypePlasmaContainsReply, a, 0, 1), 0),
		enc("contains", encodeIDReply(fb.MessageTypePlasmaContainsReply, b, 0, 0), 0),
		enc("release", encodeIDReply(fb.MessageTypePlasmaReleaseReply, a, fb.PlasmaErrorOK, 0), 0),
		enc("delete", encodeDeleteReply([]ObjectID{a, b}, []fb.PlasmaError{fb.PlasmaErrorOK, fb.PlasmaErrorObjectInUse}), 0),
	}
	in, _ := json.Marshal(reqs)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, "testdata/stock_readers.py")
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() == 3 {
		t.Skipf("stock wheel not importable: %s", stderr.String())
	}
	if err != nil {
		t.Fatalf("stock readers: %v\n%s", err, stderr.String())
	}
	var res []stockParsed
	if err := json.Unmarshal(out, &res); err != nil || len(res) != len(reqs) {
		t.Fatalf("stock readers output (%v): %s", err, out)
	}
	has := func(words []int64, vals ...int64) bool {
		for _, v := range vals {
			found := false
			for _, w := range words {
				found = found || w == v
			}
			if !found {
				return false
			}
		}
		return true
	}
	ids := func(r stockParsed) string { b, _ := json.Marshal(r.IDs); return string(b) }

	c := res[0] // create, OK
	if !c.OK || !strings.Contains(c.ID, ah) || c.Retry != 0 || c.Mmap != mmapSize ||
		c.FD[0]&0xffffffff != fd || c.FD[1] != uniqueFdID ||
		!has(c.Object, dataOff, dataSize, dataOff+dataSize, metaSize) {
		t.Fatalf("stock reading of our create reply: %+v", c)
	}
	// The 2.60 PlasmaObject starts store_fd (int, then the unique id),
	// header_offset, data_offset, metadata_offset, data_size,
	// metadata_size, allocated_size: every value came from its own slot.
	if want := []int64{fd, uniqueFdID, dataOff, dataOff, dataOff + dataSize, dataSize, metaSize, dataSize + metaSize}; !equalInt64s(c.Object[:8], want) {
		t.Fatalf("stock PlasmaObject from our create reply: %#x, want %#x", c.Object[:8], want)
	}
	if c := res[1]; !c.OK || c.Retry != 5 {
		t.Fatalf("create retry reply: %+v", c)
	}
	if res[2].OK || res[3].OK {
		t.Fatal("error create replies read as OK")
	}
	g := res[4] // get, one present one absent
	if !g.OK || !strings.Contains(ids(g), ah) || !strings.Contains(ids(g), bh) ||
		!has(g.Objects, dataOff, dataSize, dataOff+dataSize, metaSize, -1) {
		t.Fatalf("stock reading of our get reply: %+v", g)
	}
	// One (int fd, padding, int64 unique id) pair.
	fds, _ := hex.DecodeString(g.FDs)
	if len(fds) != 16 || binary.LittleEndian.Uint32(fds) != fd || binary.LittleEndian.Uint64(fds[8:]) != uniqueFdID || g.Mmaps != hex.EncodeToString(binary.LittleEndian.AppendUint64(nil, mmapSize)) {
		t.Fatalf("get reply segments: fds %s sizes %s", g.FDs, g.Mmaps)
	}
	if !equalInt64s(g.Objects[:8], c.Object[:8]) {
		t.Fatalf("stock PlasmaObject from our get reply: %#x", g.Objects[:8])
	}
	if g := res[5]; !g.OK || g.FDs != "" || g.Mmaps != "" || !has(g.Objects, -1) {
		t.Fatalf("all-absent get reply: %+v", g)
	}
	if r := res[6]; !r.OK || !strings.Contains(r.ID, ah) {
		t.Fatalf("seal reply: %+v", r)
	}
	if res[7].OK {
		t.Fatal("seal of a missing object read as OK")
	}
	if r := res[8]; !r.OK || !strings.Contains(r.ID, ah) {
		t.Fatalf("abort reply: %+v", r)
	}
	if r := res[9]; !r.OK || !r.Flag || !strings.Contains(r.ID, ah) {
		t.Fatalf("contains reply: %+v", r)
	}
	if r := res[10]; !r.OK || r.Flag {
		t.Fatalf("contains (absent) reply: %+v", r)
	}
	if r := res[11]; !r.OK || !strings.Contains(r.ID, ah) {
		t.Fatalf("release reply: %+v", r)
	}
	if d := res[12]; !d.OK || !strings.Contains(ids(d), ah) || !strings.Contains(ids(d), bh) || d.Errors != "0000000005000000" {
		t.Fatalf("delete reply: %+v", d)
	}
}

func equalInt64s(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

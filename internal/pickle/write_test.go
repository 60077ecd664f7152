package pickle

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

const timeoutMsg = "Get timed out: some object(s) not ready."

func TestCallDecodes(t *testing.T) {
	data, err := Call("builtins", "slice", "s", []byte{1, 2}, int64(-1)<<40, 1.5, true, nil, 7)
	if err != nil {
		t.Fatal(err)
	}
	v, err := DecodeBytes(data)
	if err != nil {
		t.Fatal(err)
	}
	want := &Object{Module: "builtins", Name: "slice",
		Args: []any{"s", []byte{1, 2}, int64(-1) << 40, 1.5, true, nil, int64(7)}}
	if !reflect.DeepEqual(v, want) {
		t.Errorf("got %#v", v)
	}
	if _, err := Call("builtins", "slice", struct{}{}); !errors.Is(err, ErrUnsupported) {
		t.Errorf("struct arg: %v, want ErrUnsupported", err)
	}
	if _, err := Call("", "x"); !errors.Is(err, ErrUnsupported) {
		t.Errorf("empty module: %v, want ErrUnsupported", err)
	}
}

func concat(segs [][]byte) []byte { return bytes.Join(segs, nil) }

// split cuts b into n roughly equal chunks plus an empty one.
func split(b []byte, n int) [][]byte {
	var out [][]byte
	step := (len(b) + n - 1) / n
	for len(b) > step {
		out = append(out, b[:step], nil)
		b = b[step:]
	}
	return append(out, b)
}

func TestWrapListStructure(t *testing.T) {
	big := bytes.Repeat([]byte("z"), 1000)
	values := [][][]byte{split([]byte("first"), 2), nil, split(big, 3)}
	segs := WrapList(values)
	data := concat(segs)
	if int64(len(data)) != WrapListSize(values) {
		t.Fatalf("len %d != WrapListSize %d", len(data), WrapListSize(values))
	}
	// Chunks are referenced, not copied.
	found := false
	for _, s := range segs {
		if len(s) > 0 && &s[0] == &values[2][0][0] {
			found = true
		}
	}
	if !found {
		t.Error("chunk was copied")
	}
	v, err := DecodeBytes(data)
	if err != nil {
		t.Fatal(err)
	}
	call := func(b []byte) *Object {
		return &Object{Module: loadsModule, Name: loadsName, Args: []any{b}}
	}
	want := []any{call([]byte("first")), call([]byte{}), call(big)}
	if !reflect.DeepEqual(v, want) {
		t.Errorf("got %#v", v)
	}
	if v, err := DecodeBytes(concat(WrapList(nil))); err != nil || !reflect.DeepEqual(v, []any{}) {
		t.Errorf("empty list: %#v, %v", v, err)
	}
}

// TestWrapListHuge checks the length opcodes around 4 GiB without allocating
// such values: the chunks all share one buffer.
func TestWrapListHuge(t *testing.T) {
	chunk := make([]byte, 1<<20)
	repeat := func(n int, extra int) [][]byte {
		out := make([][]byte, n, n+1)
		for i := range out {
			out[i] = chunk
		}
		return append(out, chunk[:extra])
	}
	tests := []struct {
		name   string
		chunks [][]byte
		op     byte
		length uint64
	}{
		{"4GiB-1", repeat(4095, 1<<20-1), opBinBytes, 1<<32 - 1},
		{"4GiB", repeat(4096, 0), opBinBytes8, 1 << 32},
		{"4GiB+1", repeat(4096, 1), opBinBytes8, 1<<32 + 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			values := [][][]byte{tc.chunks}
			segs := WrapList(values)
			var total int64
			for _, s := range segs {
				total += int64(len(s))
			}
			if total != WrapListSize(values) {
				t.Errorf("segments total %d, WrapListSize %d", total, WrapListSize(values))
			}
			head := segs[0]
			i := len(wrapHeader) + len(wrapPerValue)
			if head[i] != tc.op {
				t.Fatalf("opcode 0x%02x, want 0x%02x", head[i], tc.op)
			}
			var n uint64
			if tc.op == opBinBytes8 {
				n = binary.LittleEndian.Uint64(head[i+1:])
			} else {
				n = uint64(binary.LittleEndian.Uint32(head[i+1:]))
			}
			if n != tc.length {
				t.Errorf("length %d, want %d", n, tc.length)
			}
			// Opcodes, the non-empty chunks themselves, opcodes.
			nonEmpty := 0
			for _, c := range tc.chunks {
				if len(c) > 0 {
					nonEmpty++
				}
			}
			if len(segs) != nonEmpty+2 || &segs[1][0] != &chunk[0] {
				t.Errorf("%d segments for %d chunks, or chunks copied", len(segs), nonEmpty)
			}
		})
	}
}

// TestWritersLoadInPython loads the writers' output with stock Python and Ray.
func TestWritersLoadInPython(t *testing.T) {
	findPython(t)
	dir := t.TempDir()
	write := func(name string, data []byte) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	must := func(b []byte, err error) []byte {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	write("timeout.pkl", must(Exception("ray.exceptions", "GetTimeoutError", timeoutMsg)))
	write("value_error.pkl", must(Call("builtins", "ValueError", "bad \xff value")))
	write("slice.pkl", must(Call("builtins", "slice", "s\u00e9", []byte{0, 255}, int64(1)<<40)))
	write("slice2.pkl", must(Call("builtins", "slice", 1.5, true, nil)))
	long := must(Call("builtins", "str", strings.Repeat("y", 1000))) // > 255 bytes: BINBYTES
	v0, v1 := readFixture(t, "wrap_value0.pkl"), readFixture(t, "wrap_value1.pkl")
	write("wrap.pkl", concat(WrapList([][][]byte{split(v0, 3), split(v1, 4), {long}})))
	write("wrap_empty.pkl", concat(WrapList(nil)))

	out := runPython(t, pythonCheck, dir)
	if !strings.Contains(out, "ok") {
		t.Errorf("python output: %s", out)
	}
}

const pythonCheck = `
import os, pickle, sys
import ray.cloudpickle as cloudpickle
import ray.exceptions
from ray.util.client import ray as client_api

class OfflineWorker:
    def call_retain(self, id): pass
    def call_release(self, id): pass
    def is_connected(self): return False

client_api.get_context().client_worker = OfflineWorker()
from ray.util.client.common import ClientActorHandle, ClientObjectRef

d = sys.argv[1]
def load(name, loads=pickle.loads):
    with open(os.path.join(d, name), "rb") as f:
        return loads(f.read())

e = load("timeout.pkl")
assert type(e) is ray.exceptions.GetTimeoutError, type(e)
assert str(e) == "` + timeoutMsg + `", str(e)
e = load("timeout.pkl", cloudpickle.loads)
assert isinstance(e, ray.exceptions.GetTimeoutError) and isinstance(e, TimeoutError)

e = load("value_error.pkl")
assert type(e) is ValueError and e.args == ("bad \ufffd value",), repr(e)

s = load("slice.pkl")
assert (s.start, s.stop, s.step) == ("s\u00e9", b"\x00\xff", 1 << 40), s
s = load("slice2.pkl")
assert (s.start, s.stop, s.step) == (1.5, True, None), s

for loads in (pickle.loads, cloudpickle.loads):
    w = load("wrap.pkl", loads)
    assert isinstance(w, list) and len(w) == 3, w
    assert w[0] == {"a": [1, 2, 3], "b": b"xyz"}, w[0]
    ref, x, actor = w[1]
    assert isinstance(ref, ClientObjectRef) and ref.binary() == b"\x01" * 28, ref
    assert x == "x"
    assert isinstance(actor, ClientActorHandle), actor
    assert actor.actor_ref.binary() == b"\x41" * 16
    assert w[2] == "y" * 1000
assert load("wrap_empty.pkl") == []
print("ok")
`

package pickle

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Identifiers used by testdata/gen.py.
const testClientID = "client-0123"

func oid(n byte) []byte { return bytes.Repeat([]byte{n}, 28) }
func aid(n byte) []byte { return bytes.Repeat([]byte{n}, 16) }

// clientSideID is ClientSideRefID(b"\xcc" + bytes([n]) * 16).
func clientSideID(n byte) []byte { return append([]byte{0xcc}, bytes.Repeat([]byte{n}, 16)...) }

func objStub(n byte) Stub {
	return Stub{Type: StubObject, ClientID: testClientID, RefID: oid(n)}
}

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatalf("fixture %s: %v (regenerate with testdata/gen.py)", name, err)
	}
	return data
}

// findPython returns the python (with ray[client] installed) that checks
// the writers: $GRAY_PYTHON when it names a python, else the repository's
// .venv. It skips the test when there is neither.
func findPython(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("GRAY_PYTHON"); p != "" {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
		t.Logf("GRAY_PYTHON=%q is not an executable; trying .venv", p)
	}
	p, err := filepath.Abs(filepath.Join("..", "..", ".venv", "bin", "python"))
	if err == nil {
		if _, err = os.Stat(p); err == nil {
			return p
		}
	}
	t.Skip("no python available (set GRAY_PYTHON or create .venv with ray[client])")
	return ""
}

// runPython runs script with python, passing args, and fails the test with
// its output on error.
func runPython(t *testing.T, script string, args ...string) string {
	t.Helper()
	py := findPython(t)
	cmd := exec.Command(py, append([]string{"-c", script}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("python failed: %v\n%s", err, out)
	}
	return string(out)
}

// pickleOps builds pickle opcode sequences by hand (protocol 4 forms).
type pickleOps struct{ b []byte }

func (p *pickleOps) op(b ...byte) *pickleOps { p.b = append(p.b, b...); return p }

func (p *pickleOps) str(s string) *pickleOps {
	if len(s) < 256 {
		return p.op(opShortBinUnicode, byte(len(s))).op([]byte(s)...)
	}
	p.op(opBinUnicode)
	p.b = binary.LittleEndian.AppendUint32(p.b, uint32(len(s)))
	return p.op([]byte(s)...)
}

func (p *pickleOps) bytes(b []byte) *pickleOps {
	p.b = bytesHeader(p.b, uint64(len(b)))
	return p.op(b...)
}

func (p *pickleOps) global(module, name string) *pickleOps {
	return p.str(module).str(name).op(opStackGlobal)
}

// stub appends what Ray's ClientPickler writes for a persistent id:
// copyreg._reconstructor(PickleStub, tuple, fields) BINPERSID.
func (p *pickleOps) stub(s Stub) *pickleOps {
	p.global("copyreg", "_reconstructor").global(stubModule, stubName).global("builtins", "tuple")
	p.op(opMark).str(s.Type).str(s.ClientID).bytes(s.RefID)
	if s.HasName {
		p.str(s.Name)
	} else {
		p.op(opNone)
	}
	p.op(opNone) // baseline_options
	return p.op(opTuple, opTuple3, opReduce, opBinPersID)
}

// numpyTaskArgs returns a task-argument pickle shaped like the one Ray's
// client writes (protocol 5, in-band buffer) for (np.arange(n, dtype=uint8),
// ref): the array data travels in one BYTEARRAY8.
func numpyTaskArgs(n int, ref Stub) []byte {
	p := &pickleOps{}
	p.op(opProto, 5).global("numpy._core.numeric", "_frombuffer").op(opMark)
	p.op(opByteArray8)
	p.b = binary.LittleEndian.AppendUint64(p.b, uint64(n))
	start := len(p.b)
	p.b = append(p.b, make([]byte, n)...)
	for i := range n {
		p.b[start+i] = byte(i)
	}
	p.global("numpy", "dtype").str("u1").op(opTuple1, opReduce)
	p.op(opBinInt)
	p.b = binary.LittleEndian.AppendUint32(p.b, uint32(n))
	p.op(opTuple1).str("C").op(opTuple, opReduce)
	p.stub(ref)
	return p.op(opTuple2, opEmptyDict, opTuple2, opStop).b
}

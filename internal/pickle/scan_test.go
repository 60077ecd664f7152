package pickle

import (
	"bytes"
	"errors"
	"reflect"
	"runtime"
	"testing"
)

func TestScanTaskArgs(t *testing.T) {
	o1, o2, o3 := objStub(1), objStub(2), objStub(3)
	actor := Stub{Type: StubActor, ClientID: testClientID, RefID: aid(0x41)}
	remoteFunc := Stub{Type: StubRemoteFunc, ClientID: testClientID, RefID: oid(0x21),
		Options: map[string]any{"num_cpus": int64(2), "max_retries": int64(3)}}
	allTypes := []Stub{
		actor,
		remoteFunc,
		{Type: StubRemoteFuncSelfReference, ClientID: testClientID, RefID: clientSideID(0x22)},
		{Type: StubRemoteActor, ClientID: testClientID, RefID: oid(0x31),
			Options: map[string]any{"max_restarts": int64(1)}},
		{Type: StubRemoteActorSelfReference, ClientID: testClientID, RefID: clientSideID(0x32)},
		{Type: StubRemoteMethod, ClientID: testClientID, RefID: aid(0x41), Name: "incr", HasName: true},
		{Type: StubRay, ClientID: testClientID, RefID: []byte{}},
	}
	var allTypesTop []TopLevelRef
	for i, s := range allTypes {
		allTypesTop = append(allTypesTop, TopLevelRef{Index: i, Stub: s})
	}
	arg := func(i int, s Stub) TopLevelRef { return TopLevelRef{Index: i, Stub: s} }
	kw := func(k string, s Stub) TopLevelRef { return TopLevelRef{Index: -1, Kwarg: k, Stub: s} }

	tests := []struct {
		file string
		want TaskArgs
	}{
		{"no_stubs.pkl", TaskArgs{NumArgs: 7, KwargNames: []string{"k"}}},
		{"get_actor.pkl", TaskArgs{KwargNames: []string{}}},
		{"toplevel.pkl", TaskArgs{
			TopLevel:   []TopLevelRef{arg(0, o1), arg(2, o2), kw("a", o3)},
			All:        []Stub{o1, o2, o3},
			NumArgs:    3,
			KwargNames: []string{"a", "b"},
		}},
		// r1 at top level and inside a list, dict, tuple and set.
		{"same_ref_nested.pkl", TaskArgs{
			TopLevel:   []TopLevelRef{arg(0, o1), kw("kw", o1)},
			All:        []Stub{o1, o1, o1, o1, o1, o1, o1},
			NumArgs:    5,
			KwargNames: []string{"kw", "nested"},
		}},
		// Repeated stubs memoized by the pickler: BINGET + BINPERSID.
		{"memoized.pkl", TaskArgs{
			TopLevel:   []TopLevelRef{arg(0, o1), kw("kw", o1), kw("x", o2)},
			All:        []Stub{o1, o1, o2, o1, o2},
			NumArgs:    3,
			KwargNames: []string{"kw", "x"},
		}},
		{"all_types.pkl", TaskArgs{
			TopLevel:   allTypesTop,
			All:        append(append([]Stub(nil), allTypes...), remoteFunc),
			NumArgs:    7,
			KwargNames: []string{"opts"},
		}},
		// closure capturing r2, instance of a local class holding r3, a
		// lambda, then r1.
		{"closure_class.pkl", TaskArgs{
			TopLevel: []TopLevelRef{arg(3, o1)},
			All:      []Stub{o2, o3, o1},
			NumArgs:  4, KwargNames: []string{},
		}},
		{"numpy_bytes.pkl", TaskArgs{
			TopLevel: []TopLevelRef{arg(2, o1)},
			All:      []Stub{o1},
			NumArgs:  3, KwargNames: []string{"arr"},
		}},
		{"dataclass.pkl", TaskArgs{
			All:     []Stub{o1, o2, o3, o1},
			NumArgs: 4, KwargNames: []string{},
		}},
		{"proto5.pkl", TaskArgs{
			All:     []Stub{o1, o2, o3},
			NumArgs: 13, KwargNames: []string{},
		}},
		{"proto2.pkl", TaskArgs{
			TopLevel:   []TopLevelRef{arg(0, o1), kw("k", o2)},
			All:        []Stub{o1, o2},
			NumArgs:    3,
			KwargNames: []string{"k"},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			data := readFixture(t, tc.file)
			orig := bytes.Clone(data)
			got, err := ScanTaskArgsBytes(data)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("ScanTaskArgsBytes:\n got %+v\nwant %+v", got, tc.want)
			}
			if !bytes.Equal(data, orig) {
				t.Error("ScanTaskArgsBytes modified its input")
			}
			stubs, err := ScanStubs(bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(stubs, tc.want.All) {
				t.Errorf("ScanStubs:\n got %+v\nwant %+v", stubs, tc.want.All)
			}
			viaReader, err := ScanTaskArgs(bytes.NewReader(data))
			if err != nil || !reflect.DeepEqual(viaReader, got) {
				t.Errorf("ScanTaskArgs(reader) = %+v, %v; want the Bytes result", viaReader, err)
			}
		})
	}
}

func TestScanErrors(t *testing.T) {
	tests := []struct {
		file      string
		scanErr   error // ScanStubs
		argsError error // ScanTaskArgs
	}{
		{"proto0.pkl", ErrBadPersistentID, ErrBadPersistentID}, // text PERSID
		{"bad_pid_tuple.pkl", ErrBadPersistentID, ErrBadPersistentID},
		{"bad_pid_str.pkl", ErrBadPersistentID, ErrBadPersistentID},
		{"bad_pid_type.pkl", ErrBadPersistentID, ErrBadPersistentID},
		{"not_task_args.pkl", nil, ErrNotTaskArgs},
		{"options.pkl", nil, ErrNotTaskArgs},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			data := readFixture(t, tc.file)
			if _, err := ScanStubsBytes(data); !errors.Is(err, tc.scanErr) || (tc.scanErr == nil) != (err == nil) {
				t.Errorf("ScanStubsBytes error = %v, want %v", err, tc.scanErr)
			}
			if _, err := ScanTaskArgsBytes(data); !errors.Is(err, tc.argsError) {
				t.Errorf("ScanTaskArgsBytes error = %v, want %v", err, tc.argsError)
			}
		})
	}
}

func TestScanMalformed(t *testing.T) {
	good := readFixture(t, "toplevel.pkl")
	tests := map[string][]byte{
		"empty":            nil,
		"truncated":        good[:len(good)-1],
		"cut in argument":  good[:20],
		"unknown opcode":   {0x80, 0x05, 0xff, '.'},
		"huge BINBYTES8":   append([]byte{0x80, 0x05, opBinBytes8}, 0, 0, 0, 0, 0, 0, 0, 0x40, '.'),
		"huge FRAME":       append([]byte{0x80, 0x05, opFrame}, 0, 0, 0, 0, 1, 0, 0, 0, 'N', '.'),
		"negative LONG4":   {opLong4, 0xff, 0xff, 0xff, 0xff, '.'},
		"out-of-band":      {0x80, 0x05, opNextBuffer, '.'},
		"odd DICT items":   {opMark, 'N', opDict, '.'},
		"stack underflow":  {opTuple2, '.'},
		"REDUCE on bytes":  {opShortBinBytes, 1, 'x', opEmptyTuple, opReduce, '.'},
		"missing newline":  {opGlobal, 'a', '\n', 'b'},
		"empty stack STOP": {'.'},
	}
	for name, data := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := ScanStubsBytes(data); !errors.Is(err, ErrMalformed) {
				t.Errorf("error = %v, want ErrMalformed", err)
			}
		})
	}
}

// TestScanRewrites covers the opcodes sanitize rewrites for gopickle.
func TestScanRewrites(t *testing.T) {
	p := &pickleOps{}
	p.op(opProto, 5, opMark)
	p.op(opEmptySet, opMark).bytes([]byte("a")).bytes([]byte("b")).op(opAddItems) // {b"a", b"b"}
	p.op(opMark).bytes([]byte("c")).stub(objStub(7)).op(opFrozenSet)              // frozenset
	p.op(opLong1, 0, opLong4, 0, 0, 0, 0)                                         // 0 twice
	p.op(opTuple, opEmptyDict, opTuple2, opStop)
	data := p.b
	orig := bytes.Clone(data)
	ta, err := ScanTaskArgsBytes(data)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(data, orig) {
		t.Error("input was modified")
	}
	if want := []Stub{objStub(7)}; !reflect.DeepEqual(ta.All, want) || ta.NumArgs != 4 {
		t.Errorf("got %+v", ta)
	}
	v, err := DecodeBytes(data)
	if err != nil {
		t.Fatal(err)
	}
	st := objStub(7)
	want := []any{
		[]any{[]any{[]byte("a"), []byte("b")}, []any{[]byte("c"), &st}, int64(0), int64(0)},
		map[string]any{},
	}
	if !reflect.DeepEqual(v, want) {
		t.Errorf("DecodeBytes = %#v", v)
	}
}

// TestScanTaskArgsLarge scans a 64 MiB numpy-style payload and reports the
// memory it allocated; the bound is loose on purpose (no timing asserts).
func TestScanTaskArgsLarge(t *testing.T) {
	if testing.Short() {
		t.Skip("large payload")
	}
	const n = 64 << 20
	data := numpyTaskArgs(n, objStub(9))
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	ta, err := ScanTaskArgs(bytes.NewReader(data))
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	want := []TopLevelRef{{Index: 1, Stub: objStub(9)}}
	if !reflect.DeepEqual(ta.TopLevel, want) || ta.NumArgs != 2 {
		t.Errorf("got %+v", ta)
	}
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("payload %d MiB: allocated %d MiB (reader copy + gopickle's copy of the buffer)", n>>20, alloc>>20)
	if alloc > 4*n {
		t.Errorf("allocated %d bytes for a %d-byte payload", alloc, n)
	}
}

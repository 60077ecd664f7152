package pickle

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"strings"

	ogórek "github.com/kisielk/og-rek"
)

// writeProtocol is the protocol of the pickles [Call] writes: every Python 3
// Ray client reads it.
const writeProtocol = 4

// Call returns a pickle that, when loaded, calls module.name(*args) and
// yields the result, e.g.
//
//	Call("ray.exceptions", "GetTimeoutError", "Get timed out: some object(s) not ready.")
//	Call("builtins", "ValueError", "bad value")
//
// args may be string, []byte (Python bytes), int, int64, float64, bool or nil
// (None); other types fail with [ErrUnsupported]. Strings that are not valid
// UTF-8 have the invalid bytes replaced by U+FFFD, since Python would refuse
// to load them.
func Call(module, name string, args ...any) ([]byte, error) {
	if module == "" || name == "" || strings.ContainsRune(module+name, '\n') {
		return nil, fmt.Errorf("%w: bad global name %q.%q", ErrUnsupported, module, name)
	}
	tuple := make(ogórek.Tuple, len(args))
	for i, a := range args {
		switch v := a.(type) {
		case nil:
			tuple[i] = ogórek.None{}
		case string:
			tuple[i] = strings.ToValidUTF8(v, "\uFFFD")
		case []byte:
			tuple[i] = ogórek.Bytes(v)
		case int:
			tuple[i] = int64(v)
		case int64, float64, bool:
			tuple[i] = v
		default:
			return nil, fmt.Errorf("%w: argument %d has type %T", ErrUnsupported, i, a)
		}
	}
	var buf bytes.Buffer
	enc := ogórek.NewEncoderWithConfig(&buf, &ogórek.EncoderConfig{Protocol: writeProtocol})
	call := ogórek.Call{
		Callable: ogórek.Class{Module: strings.ToValidUTF8(module, "\uFFFD"), Name: strings.ToValidUTF8(name, "\uFFFD")},
		Args:     tuple,
	}
	if err := enc.Encode(call); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnsupported, err)
	}
	return buf.Bytes(), nil
}

// Exception returns a pickle that loads as the exception module.name(message),
// e.g. Exception("ray.exceptions", "GetTimeoutError", "Get timed out: ...").
// It is Call with a single string argument.
func Exception(module, name, message string) ([]byte, error) {
	return Call(module, name, message)
}

// The list pickle written by WrapList is
//
//	PROTO 4
//	SHORT_BINUNICODE "ray.util.client.client_pickler"
//	SHORT_BINUNICODE "loads_from_server"
//	STACK_GLOBAL  BINPUT 0  POP          (memo[0] = loads_from_server)
//	EMPTY_LIST
//	for each value:
//	    BINGET 0  <bytes opcode + length> <value chunks...>  TUPLE1 REDUCE APPEND
//	STOP
const (
	loadsModule = "ray.util.client.client_pickler"
	loadsName   = "loads_from_server"
	// wrapHeader is everything before the first value.
	wrapHeader = "\x80\x04" +
		"\x8c" + string(rune(len(loadsModule))) + loadsModule +
		"\x8c" + string(rune(len(loadsName))) + loadsName +
		"\x93q\x000]"
	wrapPerValue = "h\x00"        // before a value's bytes opcode
	wrapAfter    = "\x85Ra"       // after a value's data
	wrapTrailer  = "."            // after the last value
	maxBinBytes  = math.MaxUint32 // largest length BINBYTES can carry
)

// bytesHeader appends the opcode and length prefix of a bytes object of n
// bytes: SHORT_BINBYTES below 256, BINBYTES up to 4 GiB - 1, else BINBYTES8.
func bytesHeader(dst []byte, n uint64) []byte {
	switch {
	case n < 256:
		return append(dst, opShortBinBytes, byte(n))
	case n <= maxBinBytes:
		return binary.LittleEndian.AppendUint32(append(dst, opBinBytes), uint32(n))
	default:
		return binary.LittleEndian.AppendUint64(append(dst, opBinBytes8), n)
	}
}

func bytesHeaderLen(n uint64) int64 {
	switch {
	case n < 256:
		return 2
	case n <= maxBinBytes:
		return 5
	default:
		return 9
	}
}

func valueLen(chunks [][]byte) uint64 {
	var n uint64
	for _, c := range chunks {
		n += uint64(len(c))
	}
	return n
}

// WrapList returns the segments of a pickle that loads as a Python list whose
// i-th element is ray.util.client.client_pickler.loads_from_server(v) where v
// is the concatenation of values[i]'s chunks. The concatenation of the
// returned segments is the pickle; its length is [WrapListSize](values).
//
// Non-empty chunks are returned as they are (the same slices, not copies);
// only the small opcode segments between them are allocated. Each value is
// written as SHORT_BINBYTES, BINBYTES or, from 4 GiB on, BINBYTES8.
func WrapList(values [][][]byte) [][]byte {
	segs := make([][]byte, 0, 2+len(values)+countChunks(values))
	pending := []byte(wrapHeader)
	for _, chunks := range values {
		pending = append(pending, wrapPerValue...)
		pending = bytesHeader(pending, valueLen(chunks))
		for _, c := range chunks {
			if len(c) == 0 {
				continue
			}
			if len(pending) > 0 {
				segs = append(segs, pending)
				pending = make([]byte, 0, len(wrapAfter)+len(wrapPerValue)+9)
			}
			segs = append(segs, c)
		}
		pending = append(pending, wrapAfter...)
	}
	pending = append(pending, wrapTrailer...)
	return append(segs, pending)
}

func countChunks(values [][][]byte) int {
	n := 0
	for _, v := range values {
		n += len(v)
	}
	return n
}

// WrapListSize returns the length of the pickle [WrapList](values) describes,
// without building it.
func WrapListSize(values [][][]byte) int64 {
	n := int64(len(wrapHeader) + len(wrapTrailer))
	for _, chunks := range values {
		v := valueLen(chunks)
		n += int64(len(wrapPerValue)) + bytesHeaderLen(v) + int64(v) + int64(len(wrapAfter))
	}
	return n
}

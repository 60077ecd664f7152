package pickle

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// Pickle opcodes (see Python's Lib/pickletools.py).
const (
	opMark           = '('
	opStop           = '.'
	opPop            = '0'
	opPopMark        = '1'
	opDup            = '2'
	opFloat          = 'F'
	opInt            = 'I'
	opBinInt         = 'J'
	opBinInt1        = 'K'
	opLong           = 'L'
	opBinInt2        = 'M'
	opNone           = 'N'
	opPersID         = 'P'
	opBinPersID      = 'Q'
	opReduce         = 'R'
	opString         = 'S'
	opBinString      = 'T'
	opShortBinString = 'U'
	opUnicode        = 'V'
	opBinUnicode     = 'X'
	opAppend         = 'a'
	opBuild          = 'b'
	opGlobal         = 'c'
	opDict           = 'd'
	opEmptyDict      = '}'
	opAppends        = 'e'
	opGet            = 'g'
	opBinGet         = 'h'
	opInst           = 'i'
	opLongBinGet     = 'j'
	opList           = 'l'
	opEmptyList      = ']'
	opObj            = 'o'
	opPut            = 'p'
	opBinPut         = 'q'
	opLongBinPut     = 'r'
	opSetItem        = 's'
	opTuple          = 't'
	opEmptyTuple     = ')'
	opSetItems       = 'u'
	opBinFloat       = 'G'
	opBinBytes       = 'B'
	opShortBinBytes  = 'C'

	opProto           = 0x80
	opNewObj          = 0x81
	opExt1            = 0x82
	opExt2            = 0x83
	opExt4            = 0x84
	opTuple1          = 0x85
	opTuple2          = 0x86
	opTuple3          = 0x87
	opNewTrue         = 0x88
	opNewFalse        = 0x89
	opLong1           = 0x8a
	opLong4           = 0x8b
	opShortBinUnicode = 0x8c
	opBinUnicode8     = 0x8d
	opBinBytes8       = 0x8e
	opEmptySet        = 0x8f
	opAddItems        = 0x90
	opFrozenSet       = 0x91
	opNewObjEx        = 0x92
	opStackGlobal     = 0x93
	opMemoize         = 0x94
	opFrame           = 0x95
	opByteArray8      = 0x96
	opNextBuffer      = 0x97
	opReadOnlyBuffer  = 0x98
)

// sanitize walks the opcode stream of data up to its STOP opcode without
// building any object, and returns the data to hand to gopickle.
//
// It fails with ErrMalformed on unknown opcodes, truncated arguments, a
// missing STOP and out-of-band buffers (NEXT_BUFFER), and it checks every
// length argument (and FRAME size) against the bytes actually left, because
// gopickle allocates the announced length before reading it.
//
// It also rewrites, in place and length-preserving, opcodes on which gopickle
// would panic:
//
//   - EMPTY_SET, ADDITEMS and FROZENSET become EMPTY_LIST, APPENDS and LIST:
//     gopickle stores set members as Go map keys, which panics for bytes
//     members. Sets therefore decode like lists.
//   - GLOBAL copy_reg._reconstructor (written by Python 3 for protocols < 3)
//     gets a private module name of the same length: gopickle resolves that
//     name itself and drops the reconstructed object's state, which holds the
//     PickleStub fields.
//   - LONG1 and LONG4 with a zero byte count (the integer 0) become BININT1 0
//     and BININT 0: gopickle indexes the empty byte string.
//
// When a rewrite is needed and owned is false, data is copied first, so the
// caller's slice is never modified.
func sanitize(data []byte, owned bool) ([]byte, error) {
	rewrite := func(pos int, b ...byte) {
		if !owned {
			data = bytes.Clone(data)
			owned = true
		}
		copy(data[pos:], b)
	}
	for pos := 0; ; {
		if pos >= len(data) {
			return nil, fmt.Errorf("%w: no STOP opcode before end of data", ErrMalformed)
		}
		op := data[pos]
		arg := pos + 1
		rest := len(data) - arg
		// Default: the opcode takes no argument.
		next := arg
		switch op {
		case opStop:
			return data, nil
		case opMark, opPop, opPopMark, opDup, opNone, opBinPersID, opReduce,
			opAppend, opBuild, opDict, opEmptyDict, opAppends, opList,
			opEmptyList, opObj, opSetItem, opTuple, opEmptyTuple, opSetItems,
			opNewObj, opTuple1, opTuple2, opTuple3, opNewTrue, opNewFalse,
			opNewObjEx, opStackGlobal, opMemoize, opReadOnlyBuffer:
		case opEmptySet:
			rewrite(pos, opEmptyList)
		case opAddItems:
			rewrite(pos, opAppends)
		case opFrozenSet:
			rewrite(pos, opList)
		case opNextBuffer:
			return nil, fmt.Errorf("%w: out-of-band buffers are not supported (offset %d)", ErrMalformed, pos)
		case opProto, opBinInt1, opBinGet, opBinPut, opExt1:
			next = arg + 1
		case opBinInt2, opExt2:
			next = arg + 2
		case opBinInt, opLongBinGet, opLongBinPut, opExt4:
			next = arg + 4
		case opBinFloat:
			next = arg + 8
		case opFrame:
			// The frame's content is itself a run of opcodes walked below;
			// only its announced size needs checking.
			if rest < 8 {
				return nil, truncated(op, pos)
			}
			if n := binary.LittleEndian.Uint64(data[arg:]); n > uint64(rest-8) {
				return nil, fmt.Errorf("%w: frame of %d bytes at offset %d exceeds the data", ErrMalformed, n, pos)
			}
			next = arg + 8
		case opInt, opLong, opFloat, opString, opUnicode, opPersID, opGet, opPut:
			end, err := lineEnd(data, arg, 1, pos)
			if err != nil {
				return nil, err
			}
			next = end
		case opGlobal, opInst:
			end, err := lineEnd(data, arg, 2, pos)
			if err != nil {
				return nil, err
			}
			if op == opGlobal && string(data[arg:end]) == "copy_reg\n_reconstructor\n" {
				rewrite(arg, []byte(reconstructorAlias)...)
			}
			next = end
		default:
			size, signed := countedSize(op)
			if size == 0 {
				return nil, fmt.Errorf("%w: unknown opcode 0x%02x at offset %d", ErrMalformed, op, pos)
			}
			if rest < size {
				return nil, truncated(op, pos)
			}
			var n uint64
			switch size {
			case 1:
				n = uint64(data[arg])
			case 4:
				u := binary.LittleEndian.Uint32(data[arg:])
				if signed && int32(u) < 0 {
					return nil, fmt.Errorf("%w: negative length for opcode 0x%02x at offset %d", ErrMalformed, op, pos)
				}
				n = uint64(u)
			default:
				n = binary.LittleEndian.Uint64(data[arg:])
			}
			if n > uint64(rest-size) {
				return nil, truncated(op, pos)
			}
			if n == 0 && op == opLong1 {
				rewrite(pos, opBinInt1, 0)
			} else if n == 0 && op == opLong4 {
				rewrite(pos, opBinInt, 0, 0, 0, 0)
			}
			next = arg + size + int(n)
		}
		if next > len(data) {
			return nil, truncated(op, pos)
		}
		pos = next
	}
}

// countedSize returns the size of the length prefix of opcodes followed by
// counted data, whether that prefix is signed, and 0 for other opcodes.
func countedSize(op byte) (size int, signed bool) {
	switch op {
	case opShortBinString, opShortBinBytes, opShortBinUnicode, opLong1:
		return 1, false
	case opBinBytes, opBinUnicode:
		return 4, false
	case opBinString, opLong4:
		return 4, true
	case opBinUnicode8, opBinBytes8, opByteArray8:
		return 8, false
	}
	return 0, false
}

// lineEnd returns the offset just past the n-th newline at or after start.
func lineEnd(data []byte, start, n, pos int) (int, error) {
	for range n {
		i := bytes.IndexByte(data[start:], '\n')
		if i < 0 {
			return 0, truncated(data[pos], pos)
		}
		start += i + 1
	}
	return start, nil
}

func truncated(op byte, pos int) error {
	return fmt.Errorf("%w: truncated argument of opcode 0x%02x at offset %d", ErrMalformed, op, pos)
}

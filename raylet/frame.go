package raylet

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"slices"
)

// ErrFrame is returned for a malformed worker message.
var ErrFrame = errors.New("malformed worker frame")

// Limits on what a frame may claim; blobs grow as data arrives, so a lying
// size cannot make the raylet allocate memory the peer never sends.
const (
	maxHeader = 16 << 20
	maxBlob   = 1 << 50
	blobStep  = 64 << 20
)

// frame is one message between raylet and worker: a JSON header and blobs.
type frame struct {
	Header map[string]any
	Blobs  [][]byte
}

// blob is an outgoing blob given as the chunks it is stored in.
type blob [][]byte

func (b blob) size() int {
	n := 0
	for _, c := range b {
		n += len(c)
	}
	return n
}

// writeFrame writes header and blobs without concatenating the blobs.
func writeFrame(w net.Conn, header map[string]any, blobs []blob) error {
	sizes := make([]int, len(blobs))
	for i, b := range blobs {
		sizes[i] = b.size()
	}
	header["blobs"] = sizes
	h, err := json.Marshal(header)
	if err != nil {
		return fmt.Errorf("encode worker header: %w", err)
	}
	bufs := net.Buffers{binary.LittleEndian.AppendUint32(nil, uint32(len(h))), h}
	for _, b := range blobs {
		for _, c := range b {
			if len(c) > 0 {
				bufs = append(bufs, c)
			}
		}
	}
	_, err = bufs.WriteTo(w)
	return err
}

func readFrame(r *bufio.Reader) (*frame, error) {
	var lenb [4]byte
	if _, err := io.ReadFull(r, lenb[:]); err != nil {
		return nil, err
	}
	n := binary.LittleEndian.Uint32(lenb[:])
	if n > maxHeader {
		return nil, fmt.Errorf("%w: header of %d bytes", ErrFrame, n)
	}
	hb := make([]byte, n)
	if _, err := io.ReadFull(r, hb); err != nil {
		return nil, err
	}
	var h map[string]any
	if err := json.Unmarshal(hb, &h); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrFrame, err)
	}
	f := &frame{Header: h}
	if raw, ok := h["blobs"].([]any); ok {
		for _, s := range raw {
			size, ok := s.(float64)
			if !ok || size < 0 || size != math.Trunc(size) || size > maxBlob {
				return nil, fmt.Errorf("%w: bad blob size %v", ErrFrame, s)
			}
			b, err := readBlob(r, int64(size))
			if err != nil {
				return nil, err
			}
			f.Blobs = append(f.Blobs, b)
		}
	}
	return f, nil
}

// readBlob reads size bytes, allocating in steps as the data arrives.
func readBlob(r io.Reader, size int64) ([]byte, error) {
	b := make([]byte, 0, min(size, blobStep))
	for int64(len(b)) < size {
		n := int(min(size-int64(len(b)), blobStep))
		b = slices.Grow(b, n)
		start := len(b)
		b = b[:start+n]
		if _, err := io.ReadFull(r, b[start:]); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
	return b, nil
}

func (f *frame) str(k string) string {
	s, _ := f.Header[k].(string)
	return s
}

// Package ipcframe reads and writes the frames of Ray's local unix-socket
// protocols: the worker↔raylet socket (ray.protocol messages) and the plasma
// store socket (plasma.flatbuf messages) share one framing. Each frame is a
// 24-byte little-endian header, int64 cookie, int64 message type and uint64
// body length, followed by that many bytes of flatbuffer (possibly none).
package ipcframe

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Cookie is RayConfig::ray_cookie, the first word of every frame.
const Cookie int64 = 0x5241590000000000

// HeaderSize is the length of a frame header.
const HeaderSize = 24

// DefaultMaxBody bounds a frame body unless a reader says otherwise: the
// messages on these sockets are small (ids and sizes, never object data).
const DefaultMaxBody = 64 << 20

var (
	// ErrBadCookie is a frame that does not start with Cookie: the peer
	// speaks something else, or the stream lost its place.
	ErrBadCookie = errors.New("ipcframe: bad cookie")
	// ErrTooLarge is a frame whose declared body exceeds the reader's bound.
	ErrTooLarge = errors.New("ipcframe: frame too large")
)

// Frame is one message: its type number and flatbuffer body.
type Frame struct {
	Type int64
	Body []byte
}

// Reader reads frames from a stream.
type Reader struct {
	r       io.Reader
	maxBody uint64
	hdr     [HeaderSize]byte
}

// NewReader reads from r; maxBody 0 means DefaultMaxBody.
func NewReader(r io.Reader, maxBody uint64) *Reader {
	if maxBody == 0 {
		maxBody = DefaultMaxBody
	}
	return &Reader{r: r, maxBody: maxBody}
}

// Read returns the next frame. io.EOF means the peer closed between frames;
// a close inside a frame is io.ErrUnexpectedEOF.
func (r *Reader) Read() (Frame, error) {
	if _, err := io.ReadFull(r.r, r.hdr[:]); err != nil {
		return Frame{}, err
	}
	cookie := int64(binary.LittleEndian.Uint64(r.hdr[0:8]))
	if cookie != Cookie {
		return Frame{}, fmt.Errorf("%w: %#x", ErrBadCookie, uint64(cookie))
	}
	typ := int64(binary.LittleEndian.Uint64(r.hdr[8:16]))
	n := binary.LittleEndian.Uint64(r.hdr[16:24])
	if n > r.maxBody {
		return Frame{}, fmt.Errorf("%w: type %d declares %d bytes (limit %d)", ErrTooLarge, typ, n, r.maxBody)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r.r, body); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return Frame{}, err
	}
	return Frame{Type: typ, Body: body}, nil
}

// Append appends the frame of typ and body to dst, for callers that batch
// writes or send the frame with ancillary data.
func Append(dst []byte, typ int64, body []byte) []byte {
	var hdr [HeaderSize]byte
	binary.LittleEndian.PutUint64(hdr[0:8], uint64(Cookie))
	binary.LittleEndian.PutUint64(hdr[8:16], uint64(typ))
	binary.LittleEndian.PutUint64(hdr[16:24], uint64(len(body)))
	dst = append(dst, hdr[:]...)
	return append(dst, body...)
}

// Write writes one frame with a single Write call, so that concurrent
// writers serialised by the caller never interleave a header and a body.
func Write(w io.Writer, typ int64, body []byte) error {
	_, err := w.Write(Append(make([]byte, 0, HeaderSize+len(body)), typ, body))
	return err
}

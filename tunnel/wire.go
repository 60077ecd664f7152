package tunnel

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
)

// Magic opens every tunnel stream. gRPC's HTTP/2 preface starts "PRI * ",
// so the two never collide on the head's node port (see Mux).
const Magic = "GRAYTUN1"

// Errors of this package; the errors returned wrap one of them (check with
// errors.Is), with the far side's reason in the text.
var (
	// ErrBadRequest: a malformed tunnel header or CONNECT request.
	ErrBadRequest = errors.New("tunnel: bad request")
	// ErrRefused: the far side will not do it: an unauthenticated peer, a
	// back stream nobody asked for, or a target the provider may not open.
	ErrRefused = errors.New("tunnel: refused")
	// ErrNoRoute: no node owns the target's host, or its provider has no
	// tunnel to the head.
	ErrNoRoute = errors.New("tunnel: no route to target")
	// ErrUnreachable: the node owning the target could not connect to it
	// (nothing listens there).
	ErrUnreachable = errors.New("tunnel: target unreachable")
	// ErrTimeout: a peer took too long (a header, a status, a back stream).
	ErrTimeout = errors.New("tunnel: timed out")
	// ErrClosed: the Hub, Agent, Proxy or Forwarder was closed.
	ErrClosed = errors.New("tunnel: closed")
)

// Stream ops. A header names one; records on a listen stream use open and
// ping.
const (
	opDial   byte = 1 // receiver connects to target and pipes
	opListen byte = 2 // provider → head: carries open records
	opBack   byte = 3 // provider → head: answers open id with a conn
	opOpen   byte = 4 // record, head → provider: dial target, answer on back id
	opPing   byte = 5 // record, head → provider: keeps an idle listen stream alive
	// provider → head: where target's owner takes direct streams; the OK
	// status's message is "NODEID PEERADDR" ("" when it takes none).
	opResolve byte = 6
)

// Status codes, the first byte of every reply.
const (
	stOK          byte = 0
	stBadRequest  byte = 1
	stRefused     byte = 2
	stNoRoute     byte = 3
	stUnreachable byte = 4
	stTimeout     byte = 5
	stClosed      byte = 6
)

var statusErrs = map[byte]error{
	stBadRequest: ErrBadRequest, stRefused: ErrRefused, stNoRoute: ErrNoRoute,
	stUnreachable: ErrUnreachable, stTimeout: ErrTimeout, stClosed: ErrClosed,
}

// Wire limits.
const (
	maxFrame   = 512 // bytes of a header or record body
	maxMessage = 400 // bytes of a status message (longer ones are cut)
	bodyFixed  = 1 + 8
)

// header is one frame: op, id, target. On a stream it follows Magic.
type header struct {
	op     byte
	id     uint64
	target string // "host:port" for dial and open; empty otherwise
}

// frame encodes h as a length-prefixed frame: len(2) op(1) id(8) target.
func (h header) frame() []byte {
	b := make([]byte, 2+bodyFixed+len(h.target))
	binary.BigEndian.PutUint16(b, uint16(bodyFixed+len(h.target)))
	b[2] = h.op
	binary.BigEndian.PutUint64(b[3:], h.id)
	copy(b[2+bodyFixed:], h.target)
	return b
}

// streamHeader is Magic followed by h's frame.
func (h header) streamHeader() []byte { return append([]byte(Magic), h.frame()...) }

// readFrame reads and validates one frame.
func readFrame(r io.Reader) (header, error) {
	var lb [2]byte
	if _, err := io.ReadFull(r, lb[:]); err != nil {
		return header{}, err
	}
	n := int(binary.BigEndian.Uint16(lb[:]))
	if n < bodyFixed || n > maxFrame {
		return header{}, fmt.Errorf("%w: frame of %d bytes", ErrBadRequest, n)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return header{}, err
	}
	h := header{op: body[0], id: binary.BigEndian.Uint64(body[1:]), target: string(body[bodyFixed:])}
	return h, h.validate()
}

// readStreamHeader reads Magic and the header after it.
func readStreamHeader(r io.Reader) (header, error) {
	var m [len(Magic)]byte
	if _, err := io.ReadFull(r, m[:]); err != nil {
		return header{}, err
	}
	if string(m[:]) != Magic {
		return header{}, fmt.Errorf("%w: no tunnel magic", ErrBadRequest)
	}
	return readFrame(r)
}

func (h header) validate() error {
	switch h.op {
	case opDial, opOpen, opResolve:
		if _, _, err := splitTarget(h.target); err != nil {
			return err
		}
	case opListen, opBack, opPing:
		if h.target != "" {
			return fmt.Errorf("%w: op %d takes no target", ErrBadRequest, h.op)
		}
	default:
		return fmt.Errorf("%w: unknown op %d", ErrBadRequest, h.op)
	}
	return nil
}

// splitTarget checks that target is "host:port" with a port in 1-65535.
func splitTarget(target string) (host string, port int, err error) {
	host, ps, err := net.SplitHostPort(target)
	if err != nil {
		return "", 0, fmt.Errorf("%w: target %q: %w", ErrBadRequest, target, err)
	}
	port, err = strconv.Atoi(ps)
	if err != nil || port < 1 || port > 65535 || host == "" || ps[0] == '+' || ps[0] == '0' {
		return "", 0, fmt.Errorf("%w: target %q is not host:port", ErrBadRequest, target)
	}
	return host, port, nil
}

// writeStatus sends a reply: code(1) len(2) message.
func writeStatus(w io.Writer, code byte, msg string) error {
	if len(msg) > maxMessage {
		msg = msg[:maxMessage]
	}
	b := make([]byte, 3+len(msg))
	b[0] = code
	binary.BigEndian.PutUint16(b[1:], uint16(len(msg)))
	copy(b[3:], msg)
	_, err := w.Write(b)
	return err
}

// writeErrStatus sends err as a reply, its code taken from the sentinel it
// wraps.
func writeErrStatus(w io.Writer, err error) error {
	return writeStatus(w, statusOf(err), err.Error())
}

func statusOf(err error) byte {
	for code := stBadRequest; code <= stClosed; code++ { // in a fixed order
		if errors.Is(err, statusErrs[code]) {
			return code
		}
	}
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
		return stTimeout
	}
	return stUnreachable
}

// readStatus reads a reply and returns nil for OK, else the far side's
// error wrapping the sentinel its code stands for.
func readStatus(r io.Reader) error {
	_, err := readStatusMsg(r)
	return err
}

// readStatusMsg is readStatus that also returns an OK status's message.
func readStatusMsg(r io.Reader) (string, error) {
	var b [3]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return "", err
	}
	n := int(binary.BigEndian.Uint16(b[1:]))
	if n > maxMessage {
		return "", fmt.Errorf("%w: status message of %d bytes", ErrBadRequest, n)
	}
	msg := make([]byte, n)
	if _, err := io.ReadFull(r, msg); err != nil {
		return "", err
	}
	if b[0] == stOK {
		return string(msg), nil
	}
	sentinel, ok := statusErrs[b[0]]
	if !ok {
		return "", fmt.Errorf("%w: unknown status %d: %s", ErrBadRequest, b[0], msg)
	}
	return "", remoteError{sentinel: sentinel, msg: string(msg)}
}

// remoteError is an error the far side reported: its text, and the
// sentinel its status code stands for.
type remoteError struct {
	sentinel error
	msg      string
}

func (e remoteError) Error() string {
	if e.msg == "" {
		return e.sentinel.Error()
	}
	return e.msg
}
func (e remoteError) Unwrap() error { return e.sentinel }

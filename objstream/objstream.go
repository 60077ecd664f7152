// Package objstream is the codec of object streams between gray's nodes:
// an object (or a byte range of one) as a sequence of ObjectChunk messages
// whose first carries the header, read back with bounds checked against
// the announced size, and the reassembly of objects pushed in ranges.
package objstream

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"time"

	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/internal/nodewire"
	"github.com/gray-cluster/gray/objectstore"
	pb "github.com/gray-cluster/gray/proto/nodepb"
)

// MessageSize bounds one object message; stored chunks are cut to it.
const MessageSize = 1 << 20

// SendObject writes an object as chunk messages: the first carries the
// header, every stored chunk ends with end_of_chunk.
func SendObject(obj *objectstore.Object, send func(*pb.ObjectChunk) error) error {
	first := &pb.ObjectChunk{
		ObjectId: obj.ID.Bytes(), TotalSize: obj.Size, IsError: obj.IsError, Contained: nodewire.IDs(obj.Contained),
	}
	if len(obj.Chunks) == 0 {
		first.EndOfChunk = true
		return send(first)
	}
	for _, c := range obj.Chunks {
		for off := 0; off == 0 || off < len(c); off += MessageSize {
			end := min(off+MessageSize, len(c))
			m := &pb.ObjectChunk{Data: c[off:end], EndOfChunk: end == len(c)}
			if first != nil {
				first.Data, first.EndOfChunk = m.Data, m.EndOfChunk
				m, first = first, nil
			}
			if err := send(m); err != nil {
				return err
			}
		}
	}
	return nil
}

// Sentinel errors for object streams.
var (
	ErrMissing   = errors.New("objstream: object missing")
	ErrOversized = errors.New("objstream: object larger than announced")
)

// readHeader checks the first message of an object stream (whole or
// ranged) and returns the object's id and the ids it contains.
func readHeader(first *pb.ObjectChunk, limit int64) (ids.ObjectID, []ids.ObjectID, error) {
	if first.Missing {
		return ids.ObjectID{}, nil, ErrMissing
	}
	id, err := ids.ObjectFromBytes(first.ObjectId)
	if err != nil {
		return ids.ObjectID{}, nil, err
	}
	contained, err := nodewire.ObjectIDs(first.Contained)
	if err != nil {
		return ids.ObjectID{}, nil, err
	}
	if first.TotalSize < 0 || (limit > 0 && first.TotalSize > limit) {
		return ids.ObjectID{}, nil, ErrOversized
	}
	return id, contained, nil
}

// ReceiveObject reads one object's messages. limit bounds the announced size.
func ReceiveObject(recv func() (*pb.ObjectChunk, error), limit int64) (*objectstore.Object, error) {
	first, err := recv()
	if err != nil {
		return nil, err
	}
	id, contained, err := readHeader(first, limit)
	if err != nil {
		return nil, err
	}
	obj := &objectstore.Object{ID: id, Size: first.TotalSize, IsError: first.IsError, Contained: contained}
	var got int64
	var cur []byte
	m := first
	for {
		got += int64(len(m.Data))
		if got > first.TotalSize {
			return nil, ErrOversized
		}
		cur = append(cur, m.Data...)
		if m.EndOfChunk {
			obj.Chunks = append(obj.Chunks, cur)
			cur = nil
			if got == first.TotalSize {
				return obj, nil
			}
		}
		if m, err = recv(); err != nil {
			if errors.Is(err, io.EOF) {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
}

// ErrBadRange is returned for a range outside its object.
var ErrBadRange = errors.New("objstream: bad object range")

// Range is a piece of an object: the object's header and the bytes at
// [Offset, Offset+len(Data)).
type Range struct {
	ID        ids.ObjectID
	Total     int64
	IsError   bool
	Contained []ids.ObjectID
	Offset    int64
	Data      []byte
}

// SendRange writes the bytes [off, off+n) of obj as one ranged stream.
func SendRange(obj *objectstore.Object, off, n int64, send func(*pb.ObjectChunk) error) error {
	if off < 0 || n < 0 || off+n > obj.Size {
		return fmt.Errorf("%w: [%d,+%d) of %d bytes", ErrBadRange, off, n, obj.Size)
	}
	first := &pb.ObjectChunk{
		ObjectId: obj.ID.Bytes(), TotalSize: obj.Size, IsError: obj.IsError, Contained: nodewire.IDs(obj.Contained),
		Ranged: true, Offset: off,
	}
	// Walk the stored chunks, cutting [off, off+n) into messages.
	var pos int64
	left := n
	sent := false
	for _, c := range obj.Chunks {
		clen := int64(len(c))
		if left == 0 {
			break
		}
		if pos+clen <= off {
			pos += clen
			continue
		}
		start := max(off-pos, 0)
		for start < clen && left > 0 {
			end := min(start+MessageSize, clen, start+left)
			m := &pb.ObjectChunk{Data: c[start:end]}
			if !sent {
				first.Data = m.Data
				m = first
			}
			left -= end - start
			m.EndOfChunk = left == 0
			if err := send(m); err != nil {
				return err
			}
			sent = true
			start = end
		}
		pos += clen
	}
	if !sent {
		first.EndOfChunk = true
		return send(first)
	}
	return nil
}

// ReceiveRange reads one ranged stream. limit bounds the announced size.
func ReceiveRange(recv func() (*pb.ObjectChunk, error), limit int64) (*Range, error) {
	first, err := recv()
	if err != nil {
		return nil, err
	}
	id, contained, err := readHeader(first, limit)
	if err != nil {
		return nil, err
	}
	if !first.Ranged {
		return nil, fmt.Errorf("%w: stream is not ranged", ErrBadRange)
	}
	if first.Offset < 0 || first.Offset > first.TotalSize {
		return nil, ErrOversized
	}
	r := &Range{ID: id, Total: first.TotalSize, IsError: first.IsError, Contained: contained, Offset: first.Offset}
	m := first
	for {
		if r.Offset+int64(len(r.Data))+int64(len(m.Data)) > r.Total {
			return nil, ErrOversized
		}
		r.Data = append(r.Data, m.Data...)
		if m.EndOfChunk {
			return r, nil
		}
		if m, err = recv(); err != nil {
			if errors.Is(err, io.EOF) {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
}

// Assemble puts ranges that cover an object exactly into one object.
func Assemble(parts []*Range) (*objectstore.Object, error) {
	if len(parts) == 0 {
		return nil, fmt.Errorf("%w: no parts", ErrBadRange)
	}
	sort.Slice(parts, func(i, j int) bool { return parts[i].Offset < parts[j].Offset })
	h := parts[0]
	obj := &objectstore.Object{ID: h.ID, Size: h.Total, IsError: h.IsError, Contained: h.Contained}
	var pos int64
	for _, p := range parts {
		if p.ID != h.ID || p.Total != h.Total || p.Offset != pos {
			return nil, fmt.Errorf("%w: part at %d does not follow %d", ErrBadRange, p.Offset, pos)
		}
		obj.Chunks = append(obj.Chunks, p.Data)
		pos += int64(len(p.Data))
	}
	if pos != h.Total {
		return nil, fmt.Errorf("%w: parts cover %d of %d bytes", ErrBadRange, pos, h.Total)
	}
	return obj, nil
}

// Assembly collects the ranges of objects pushed in pieces.
type Assembly struct {
	mu      sync.Mutex
	partial map[ids.ObjectID]*partialObject
}

type partialObject struct {
	parts []*Range
	have  int64
	since time.Time
}

// Add files a range; it returns the object once its ranges cover it.
func (a *Assembly) Add(r *Range, now time.Time) (*objectstore.Object, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.partial == nil {
		a.partial = map[ids.ObjectID]*partialObject{}
	}
	p := a.partial[r.ID]
	if p == nil {
		p = &partialObject{since: now}
		a.partial[r.ID] = p
	}
	for _, q := range p.parts {
		if q.Offset == r.Offset {
			return nil, nil // a retried piece
		}
	}
	p.parts = append(p.parts, r)
	p.have += int64(len(r.Data))
	if p.have < r.Total {
		return nil, nil
	}
	delete(a.partial, r.ID)
	return Assemble(p.parts)
}

// Sweep drops partial objects older than ttl (their sender gave up).
func (a *Assembly) Sweep(now time.Time, ttl time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for id, p := range a.partial {
		if now.Sub(p.since) > ttl {
			delete(a.partial, id)
		}
	}
}

package nodeserver

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

// ErrBadRange is returned for a range outside its object.
var ErrBadRange = errors.New("nodeserver: bad object range")

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

// assembly collects the ranges of objects pushed in pieces.
type assembly struct {
	mu      sync.Mutex
	partial map[ids.ObjectID]*partialObject
}

type partialObject struct {
	parts []*Range
	have  int64
	since time.Time
}

// add files a range; it returns the object once its ranges cover it.
func (a *assembly) add(r *Range, now time.Time) (*objectstore.Object, error) {
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

// sweep drops partial objects older than ttl (their sender gave up).
func (a *assembly) sweep(now time.Time, ttl time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for id, p := range a.partial {
		if now.Sub(p.since) > ttl {
			delete(a.partial, id)
		}
	}
}

package nodemanager

import (
	"context"
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gray-cluster/gray/native/plasma"
	nodepb "github.com/gray-cluster/gray/proto/nodepb"
	commonpb "github.com/gray-cluster/gray/proto/ray/commonpb"
)

// The NativeObjects.Fetch stream between raylets: the receiver writes the
// object into its plasma store in place as chunks arrive (the Go-side
// Writer), the sender serves it from its store without a whole copy (a
// Reader holds it meanwhile). A transfer that breaks (the holder vanished,
// the link dropped) resumes where it stopped, from the same holder or
// another: the request names the offset, the object's bytes being
// immutable.

// objectSink receives a fetched object's data in order.
type objectSink interface {
	io.Writer
	Written() int64
	Seal() error
	Abort()
}

// inPlaceCopier is a store that takes a fetched object's bytes in place
// (plasma) and serves them without a whole copy.
type inPlaceCopier interface {
	Create(id ObjectID, dataSize uint64, metadata []byte, owner *commonpb.Address) (objectSink, error)
	OpenReader(id ObjectID) (objectSource, bool)
}

// objectSource is a held object served in place.
type objectSource interface {
	DataSize() int64
	Metadata() []byte
	View(off, n int64, fn func([]byte) error) error
	Close()
}

// partial is an object a pull has begun writing.
type partial struct {
	sink objectSink
	size uint64
}

func (p *partial) offset() uint64 {
	if p == nil || p.sink == nil {
		return 0
	}
	return uint64(p.sink.Written())
}

// abort drops what was written (the pull gave up).
func (p *partial) abort() {
	if p != nil && p.sink != nil {
		p.sink.Abort()
		p.sink = nil
	}
}

// fetch copies id from the raylet at from into the local store, resuming
// part when an earlier attempt wrote some of it. On error part keeps what
// this attempt wrote, for the next.
func (p *puller) fetch(ctx context.Context, cp copier, id ObjectID, owner, from *commonpb.Address, part *partial) error {
	if part == nil {
		part = &partial{}
		defer part.abort()
	}
	conn, err := p.r.workers.conn(addrString(from))
	if err != nil {
		return err
	}
	// Ending early (the object got here meanwhile, a failed write) cancels
	// the stream, so the sender lets go of its copy.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := nodepb.NewNativeObjectsClient(conn).Fetch(ctx, &nodepb.NativeFetchRequest{ObjectId: id[:], Offset: part.offset()})
	if err != nil {
		return err
	}
	first, err := st.Recv()
	if err != nil {
		if err == io.EOF {
			err = fmt.Errorf("fetch %s from %s: empty stream", id, addrString(from))
		}
		return err
	}
	size := first.GetDataSize()
	if part.sink != nil && part.size != size {
		// Not the object the first holder sent: start over.
		part.abort()
		return fmt.Errorf("fetch %s from %s: %d bytes, an earlier holder sent %d", id, addrString(from), size, part.size)
	}
	if part.sink == nil {
		if ip, ok := cp.(inPlaceCopier); ok {
			part.sink, err = ip.Create(id, size, first.GetMetadata(), owner)
			if errors.Is(err, plasma.ErrObjectExists) {
				return nil // another pull or a local put got it meanwhile
			}
			if err != nil {
				return err
			}
		} else {
			part.sink = &gatherSink{cp: cp, id: id, owner: owner, meta: first.GetMetadata(), data: make([]byte, 0, size)}
		}
		part.size = size
	}
	for c := first; ; {
		if _, err := part.sink.Write(c.GetData()); err != nil {
			part.abort() // more than announced: a broken sender
			return fmt.Errorf("fetch %s from %s: %w", id, addrString(from), err)
		}
		c, err = st.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("fetch %s from %s: stopped at byte %d of %d: %w", id, addrString(from), part.offset(), size, err)
		}
	}
	sink := part.sink
	part.sink = nil
	if err := sink.Seal(); err != nil {
		return fmt.Errorf("fetch %s from %s: %w", id, addrString(from), err)
	}
	return nil
}

// gatherSink collects the data and puts the whole object at Seal (a store
// that cannot take it in place).
type gatherSink struct {
	cp    copier
	id    ObjectID
	owner *commonpb.Address
	meta  []byte
	data  []byte
}

func (g *gatherSink) Write(b []byte) (int, error) {
	if len(g.data)+len(b) > cap(g.data) {
		return 0, fmt.Errorf("more data than the announced %d bytes", cap(g.data))
	}
	g.data = append(g.data, b...)
	return len(b), nil
}

func (g *gatherSink) Written() int64 { return int64(len(g.data)) }

func (g *gatherSink) Seal() error {
	if len(g.data) != cap(g.data) {
		return fmt.Errorf("short stream: %d of %d bytes", len(g.data), cap(g.data))
	}
	return g.cp.Put(g.id, g.data, g.meta, g.owner)
}

func (g *gatherSink) Abort() {}

func (p plasmaStore) Create(id ObjectID, dataSize uint64, metadata []byte, owner *commonpb.Address) (objectSink, error) {
	w, err := p.s.Create(plasma.ObjectID(id), int64(dataSize), metadata, plasma.Owner{
		NodeID: owner.GetNodeId(), WorkerID: owner.GetWorkerId(), IP: owner.GetIpAddress(), Port: owner.GetPort()})
	if err != nil {
		return nil, err
	}
	return w, nil
}

func (p plasmaStore) OpenReader(id ObjectID) (objectSource, bool) {
	r, ok := p.s.OpenReader(plasma.ObjectID(id))
	if !ok {
		return nil, false
	}
	return r, true
}

// objectService serves NativeObjects.Fetch from the local store.
type objectService struct {
	nodepb.UnimplementedNativeObjectsServer
	r *Raylet
}

func (s *objectService) Fetch(req *nodepb.NativeFetchRequest, st nodepb.NativeObjects_FetchServer) error {
	id, ok := objectIDFrom(req.GetObjectId())
	cp, can := s.r.cfg.Store.(copier)
	if !ok || !can {
		return status.Error(codes.InvalidArgument, "bad object id")
	}
	off := req.GetOffset()
	if ip, ok := cp.(inPlaceCopier); ok {
		if src, ok := ip.OpenReader(id); ok {
			defer src.Close()
			if off > uint64(src.DataSize()) {
				return status.Errorf(codes.OutOfRange, "offset %d past the %d-byte object", off, src.DataSize())
			}
			return sendInPlace(src, int64(off), st)
		}
	}
	data, meta, ok := cp.Read(id)
	if !ok {
		return status.Errorf(codes.NotFound, "object %s is not on this node", id)
	}
	if off > uint64(len(data)) {
		return status.Errorf(codes.OutOfRange, "offset %d past the %d-byte object", off, len(data))
	}
	first := &nodepb.NativeFetchChunk{DataSize: uint64(len(data)), Metadata: meta}
	data = data[off:]
	n := min(len(data), fetchChunk)
	first.Data, data = data[:n], data[n:]
	if err := st.Send(first); err != nil {
		return err
	}
	for len(data) > 0 {
		n := min(len(data), fetchChunk)
		if err := st.Send(&nodepb.NativeFetchChunk{Data: data[:n]}); err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}

// sendInPlace streams a held object from off on straight from the store's
// memory (Send encodes the message before it returns, so the slice is not
// kept).
func sendInPlace(src objectSource, off int64, st nodepb.NativeObjects_FetchServer) error {
	size := src.DataSize()
	for first := true; first || off < size; first = false {
		n := min(size-off, fetchChunk)
		err := src.View(off, n, func(b []byte) error {
			c := &nodepb.NativeFetchChunk{Data: b}
			if first {
				c.DataSize, c.Metadata = uint64(size), src.Metadata()
			}
			return st.Send(c)
		})
		if err != nil {
			return err
		}
		off += n
	}
	return nil
}

package nodeserver

import (
	"errors"
	"io"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/internal/nodewire"
	"github.com/gray-cluster/gray/objectstore"
	pb "github.com/gray-cluster/gray/proto/nodepb"
)

// MessageSize bounds one object message; stored chunks are cut to it.
const MessageSize = 1 << 20

// PeerRedirectMin is the smallest object the head sends a provider that
// can pull from peers to the providers holding it rather than relaying it.
const PeerRedirectMin = 1 << 20

// InlineResultMax is the largest result a provider sends inline on its
// control channel instead of over a stream of its own.
const InlineResultMax = 64 << 10

// PullObject streams an object to a provider once it is sealed.
func (s *Server) PullObject(r *pb.PullRequest, stream pb.Head_PullObjectServer) error {
	node, err := peerNode(stream.Context())
	if err != nil {
		return err
	}
	id, err := ids.ObjectFromBytes(r.ObjectId)
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	obj, err := s.cfg.Store.Wait(stream.Context(), id)
	if err != nil || obj == nil {
		if stream.Context().Err() != nil {
			return stream.Context().Err()
		}
		return stream.Send(&pb.ObjectChunk{ObjectId: r.ObjectId, Missing: true})
	}
	if r.PeersOk && obj.Size >= PeerRedirectMin {
		if locs := s.locate(node, []ids.ObjectID{id}); len(locs) > 0 {
			return stream.Send(&pb.ObjectChunk{ObjectId: r.ObjectId, TotalSize: obj.Size, Peers: locs[0].Holders})
		}
	}
	if r.Offset != 0 || r.Length != 0 {
		n := r.Length
		if n == 0 || r.Offset+n > obj.Size {
			n = obj.Size - r.Offset
		}
		if err := SendRange(obj, r.Offset, n, stream.Send); err != nil {
			return status.Error(codes.InvalidArgument, err.Error())
		}
		s.relayed(node, n)
		if r.Offset+n == obj.Size {
			s.dir.add(id, node)
		}
		return nil
	}
	if err := SendObject(obj, stream.Send); err != nil {
		return err
	}
	s.relayed(node, obj.Size)
	s.dir.add(id, node)
	return nil
}

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
	ErrMissing   = errors.New("nodeserver: object missing")
	ErrOversized = errors.New("nodeserver: object larger than announced")
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

// PushObject stores a result a provider produced.
func (s *Server) PushObject(stream pb.Head_PushObjectServer) error {
	node, err := peerNode(stream.Context())
	if err != nil {
		return err
	}
	limit := s.cfg.Store.Capacity()
	if s.cfg.Store.SpillDir() != "" {
		limit = 0 // larger than memory goes to disk
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	sent := false
	recv := func() (*pb.ObjectChunk, error) {
		if !sent {
			sent = true
			return first, nil
		}
		return stream.Recv()
	}
	var obj *objectstore.Object
	if first.Ranged {
		r, err := ReceiveRange(recv, limit)
		if err != nil {
			return status.Errorf(codes.InvalidArgument, "push: %v", err)
		}
		if obj, err = s.parts.add(r, s.cfg.Now()); err != nil {
			return status.Errorf(codes.InvalidArgument, "push: %v", err)
		}
		if obj == nil { // more pieces to come
			return stream.SendAndClose(&pb.PushReply{})
		}
	} else if obj, err = ReceiveObject(recv, limit); err != nil {
		return status.Errorf(codes.InvalidArgument, "push: %v", err)
	}
	s.cfg.Store.Seal(obj)
	s.dir.add(obj.ID, node)
	s.mu.Lock()
	nc := s.remotes[node]
	s.mu.Unlock()
	if nc != nil {
		nc.r.resultArrived(obj.ID)
	}
	return stream.SendAndClose(&pb.PushReply{})
}

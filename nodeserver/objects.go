package nodeserver

import (
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/objectstore"
	"github.com/gray-cluster/gray/objstream"
	pb "github.com/gray-cluster/gray/proto/nodepb"
)

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
		if err := objstream.SendRange(obj, r.Offset, n, stream.Send); err != nil {
			return status.Error(codes.InvalidArgument, err.Error())
		}
		s.relayed(node, n)
		if r.Offset+n == obj.Size {
			s.dir.add(id, node)
		}
		return nil
	}
	if err := objstream.SendObject(obj, stream.Send); err != nil {
		return err
	}
	s.relayed(node, obj.Size)
	s.dir.add(id, node)
	return nil
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
		r, err := objstream.ReceiveRange(recv, limit)
		if err != nil {
			return status.Errorf(codes.InvalidArgument, "push: %v", err)
		}
		if obj, err = s.parts.Add(r, s.cfg.Now()); err != nil {
			return status.Errorf(codes.InvalidArgument, "push: %v", err)
		}
		if obj == nil { // more pieces to come
			return stream.SendAndClose(&pb.PushReply{})
		}
	} else if obj, err = objstream.ReceiveObject(recv, limit); err != nil {
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

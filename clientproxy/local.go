package clientproxy

import (
	"context"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/gray-cluster/gray/proto/rayclientpb"
)

// local answers the calls the proxy serves itself: ClusterInfo PING always,
// the KV calls while the session has no server yet.
func (p *Proxy) local(ctx context.Context, method string, req []byte, ready bool) (proto.Message, bool, error) {
	name := method[strings.LastIndex(method, "/")+1:]
	if name == "ClusterInfo" {
		var r pb.ClusterInfoRequest
		if err := proto.Unmarshal(req, &r); err != nil {
			return nil, true, status.Error(codes.InvalidArgument, err.Error())
		}
		if r.GetType() == pb.ClusterInfoType_PING {
			return &pb.ClusterInfoResponse{Type: r.GetType(), ResponseType: &pb.ClusterInfoResponse_Json{Json: "{}"}}, true, nil
		}
		return nil, false, nil
	}
	if ready || p.cfg.KV == nil || !strings.HasPrefix(name, "KV") {
		return nil, false, nil
	}
	resp, err := p.kv(ctx, name, req)
	if resp == nil && err == nil {
		return nil, false, nil
	}
	if err != nil {
		err = status.Error(codes.Internal, err.Error())
	}
	return resp, true, err
}

func (p *Proxy) kv(ctx context.Context, name string, req []byte) (proto.Message, error) {
	kv := p.cfg.KV
	switch name {
	case "KVPut":
		var r pb.KVPutRequest
		if err := proto.Unmarshal(req, &r); err != nil {
			return nil, err
		}
		existed, err := kv.Put(ctx, r.GetNamespace(), r.GetKey(), r.GetValue(), r.GetOverwrite())
		return &pb.KVPutResponse{AlreadyExists: existed}, err
	case "KVGet":
		var r pb.KVGetRequest
		if err := proto.Unmarshal(req, &r); err != nil {
			return nil, err
		}
		v, ok, err := kv.Get(ctx, r.GetNamespace(), r.GetKey())
		if !ok {
			return &pb.KVGetResponse{}, err
		}
		return &pb.KVGetResponse{Value: v}, err
	case "KVExists":
		var r pb.KVExistsRequest
		if err := proto.Unmarshal(req, &r); err != nil {
			return nil, err
		}
		ok, err := kv.Exists(ctx, r.GetNamespace(), r.GetKey())
		return &pb.KVExistsResponse{Exists: ok}, err
	case "KVDel":
		var r pb.KVDelRequest
		if err := proto.Unmarshal(req, &r); err != nil {
			return nil, err
		}
		n, err := kv.Del(ctx, r.GetNamespace(), r.GetKey(), r.GetDelByPrefix())
		return &pb.KVDelResponse{DeletedNum: int32(n)}, err
	case "KVList":
		var r pb.KVListRequest
		if err := proto.Unmarshal(req, &r); err != nil {
			return nil, err
		}
		keys, err := kv.Keys(ctx, r.GetNamespace(), r.GetPrefix())
		return &pb.KVListResponse{Keys: keys}, err
	}
	return nil, nil
}

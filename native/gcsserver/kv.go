package gcsserver

import (
	"context"

	"github.com/gray-cluster/gray/proto/ray/raypb"
)

// kvMissMessage is the stock GCS's text for a missing key.
const kvMissMessage = "Failed to find the key"

type kvService struct {
	raypb.UnimplementedInternalKVGcsServiceServer
	s *Server
}

func (x *kvService) InternalKVGet(_ context.Context, req *raypb.InternalKVGetRequest) (*raypb.InternalKVGetReply, error) {
	v, ok := x.s.cfg.KV.Get(req.GetNamespace(), req.GetKey())
	if !ok {
		return &raypb.InternalKVGetReply{Status: errStatus(codeNotFound, kvMissMessage)}, nil
	}
	return &raypb.InternalKVGetReply{Status: okStatus(), Value: v}, nil
}

func (x *kvService) InternalKVMultiGet(_ context.Context, req *raypb.InternalKVMultiGetRequest) (*raypb.InternalKVMultiGetReply, error) {
	out := &raypb.InternalKVMultiGetReply{Status: okStatus()}
	for _, k := range req.GetKeys() {
		if v, ok := x.s.cfg.KV.Get(req.GetNamespace(), k); ok {
			out.Results = append(out.Results, &raypb.MapFieldEntry{Key: k, Value: v})
		}
	}
	return out, nil
}

func (x *kvService) InternalKVPut(_ context.Context, req *raypb.InternalKVPutRequest) (*raypb.InternalKVPutReply, error) {
	existed := x.s.cfg.KV.Put(req.GetNamespace(), req.GetKey(), req.GetValue(), req.GetOverwrite())
	return &raypb.InternalKVPutReply{Status: okStatus(), Added: !existed}, nil
}

func (x *kvService) InternalKVDel(_ context.Context, req *raypb.InternalKVDelRequest) (*raypb.InternalKVDelReply, error) {
	n := x.s.cfg.KV.Del(req.GetNamespace(), req.GetKey(), req.GetDelByPrefix())
	return &raypb.InternalKVDelReply{Status: okStatus(), DeletedNum: int32(n)}, nil
}

func (x *kvService) InternalKVExists(_ context.Context, req *raypb.InternalKVExistsRequest) (*raypb.InternalKVExistsReply, error) {
	return &raypb.InternalKVExistsReply{Status: okStatus(), Exists: x.s.cfg.KV.Exists(req.GetNamespace(), req.GetKey())}, nil
}

func (x *kvService) InternalKVKeys(_ context.Context, req *raypb.InternalKVKeysRequest) (*raypb.InternalKVKeysReply, error) {
	return &raypb.InternalKVKeysReply{Status: okStatus(), Results: x.s.cfg.KV.Keys(req.GetNamespace(), req.GetPrefix())}, nil
}

func (x *kvService) GetInternalConfig(context.Context, *raypb.GetInternalConfigRequest) (*raypb.GetInternalConfigReply, error) {
	return &raypb.GetInternalConfigReply{Status: okStatus(), Config: x.s.cfg.SystemConfig}, nil
}

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

// storeStatus is the status of a KV call the store failed.
func storeStatus(err error) *raypb.GcsStatus { return errStatus(codeIOError, "%v", err) }

func (x *kvService) InternalKVGet(ctx context.Context, req *raypb.InternalKVGetRequest) (*raypb.InternalKVGetReply, error) {
	v, ok, err := x.s.cfg.KV.Get(ctx, req.GetNamespace(), req.GetKey())
	switch {
	case err != nil:
		return &raypb.InternalKVGetReply{Status: storeStatus(err)}, nil
	case !ok:
		return &raypb.InternalKVGetReply{Status: errStatus(codeNotFound, kvMissMessage)}, nil
	}
	return &raypb.InternalKVGetReply{Status: okStatus(), Value: v}, nil
}

func (x *kvService) InternalKVMultiGet(ctx context.Context, req *raypb.InternalKVMultiGetRequest) (*raypb.InternalKVMultiGetReply, error) {
	out := &raypb.InternalKVMultiGetReply{Status: okStatus()}
	for _, k := range req.GetKeys() {
		v, ok, err := x.s.cfg.KV.Get(ctx, req.GetNamespace(), k)
		if err != nil {
			return &raypb.InternalKVMultiGetReply{Status: storeStatus(err)}, nil
		}
		if ok {
			out.Results = append(out.Results, &raypb.MapFieldEntry{Key: k, Value: v})
		}
	}
	return out, nil
}

func (x *kvService) InternalKVPut(ctx context.Context, req *raypb.InternalKVPutRequest) (*raypb.InternalKVPutReply, error) {
	existed, err := x.s.cfg.KV.Put(ctx, req.GetNamespace(), req.GetKey(), req.GetValue(), req.GetOverwrite())
	if err != nil {
		return &raypb.InternalKVPutReply{Status: storeStatus(err)}, nil
	}
	return &raypb.InternalKVPutReply{Status: okStatus(), Added: !existed}, nil
}

func (x *kvService) InternalKVDel(ctx context.Context, req *raypb.InternalKVDelRequest) (*raypb.InternalKVDelReply, error) {
	n, err := x.s.cfg.KV.Del(ctx, req.GetNamespace(), req.GetKey(), req.GetDelByPrefix())
	if err != nil {
		return &raypb.InternalKVDelReply{Status: storeStatus(err)}, nil
	}
	return &raypb.InternalKVDelReply{Status: okStatus(), DeletedNum: int32(n)}, nil
}

func (x *kvService) InternalKVExists(ctx context.Context, req *raypb.InternalKVExistsRequest) (*raypb.InternalKVExistsReply, error) {
	ok, err := x.s.cfg.KV.Exists(ctx, req.GetNamespace(), req.GetKey())
	if err != nil {
		return &raypb.InternalKVExistsReply{Status: storeStatus(err)}, nil
	}
	return &raypb.InternalKVExistsReply{Status: okStatus(), Exists: ok}, nil
}

func (x *kvService) InternalKVKeys(ctx context.Context, req *raypb.InternalKVKeysRequest) (*raypb.InternalKVKeysReply, error) {
	keys, err := x.s.cfg.KV.Keys(ctx, req.GetNamespace(), req.GetPrefix())
	if err != nil {
		return &raypb.InternalKVKeysReply{Status: storeStatus(err)}, nil
	}
	return &raypb.InternalKVKeysReply{Status: okStatus(), Results: keys}, nil
}

func (x *kvService) GetInternalConfig(context.Context, *raypb.GetInternalConfigRequest) (*raypb.GetInternalConfigReply, error) {
	return &raypb.GetInternalConfigReply{Status: okStatus(), Config: x.s.cfg.SystemConfig}, nil
}

// Package clientproxy serves ray:// sessions the way stock Ray's proxier
// does: one stock `ray.util.client.server --mode specific-server` process
// per client_id, whose driver joins the head's native GCS, with every
// RayletDriver, Datapath and Logstream call of that session relayed to it
// as raw gRPC frames.
package clientproxy

import (
	"fmt"

	"google.golang.org/protobuf/proto"
)

// rawCodec passes gRPC frames through undecoded; messages the proxy answers
// itself are proto messages and are marshalled as usual.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) ([]byte, error) {
	switch m := v.(type) {
	case *[]byte:
		return *m, nil
	case []byte:
		return m, nil
	case proto.Message:
		return proto.Marshal(m)
	}
	return nil, fmt.Errorf("clientproxy: cannot marshal %T", v)
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	switch m := v.(type) {
	case *[]byte:
		*m = append((*m)[:0], data...)
		return nil
	case proto.Message:
		return proto.Unmarshal(data, m)
	}
	return fmt.Errorf("clientproxy: cannot unmarshal into %T", v)
}

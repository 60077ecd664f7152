package gcsserver

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/gray-cluster/gray/proto/ray/commonpb"
	"github.com/gray-cluster/gray/proto/ray/raypb"
)

// connPool caches one client connection per "ip:port" (raylets and core
// workers). Every outgoing call carries the ray_cluster_id metadata.
type connPool struct {
	dial  func(addr string) (*grpc.ClientConn, error)
	cidHx string

	mu     sync.Mutex
	conns  map[string]*grpc.ClientConn
	closed bool
}

func newConnPool(dial func(string) (*grpc.ClientConn, error), cidHx string) *connPool {
	return &connPool{dial: dial, cidHx: cidHx, conns: map[string]*grpc.ClientConn{}}
}

func (p *connPool) get(addr string) (*grpc.ClientConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, ErrClosed
	}
	if c, ok := p.conns[addr]; ok {
		return c, nil
	}
	c, err := p.dial(addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	p.conns[addr] = c
	return c, nil
}

// drop closes and forgets the connection to addr (a dead raylet/worker).
func (p *connPool) drop(addr string) {
	p.mu.Lock()
	c := p.conns[addr]
	delete(p.conns, addr)
	p.mu.Unlock()
	if c != nil {
		_ = c.Close()
	}
}

func (p *connPool) close() {
	p.mu.Lock()
	p.closed = true
	conns := p.conns
	p.conns = map[string]*grpc.ClientConn{}
	p.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

// outCtx adds the cluster id metadata to an outgoing call's context.
func (p *connPool) outCtx(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, clusterIDKey, p.cidHx)
}

func (p *connPool) raylet(addr string) (raypb.NodeManagerServiceClient, error) {
	c, err := p.get(addr)
	if err != nil {
		return nil, err
	}
	return raypb.NewNodeManagerServiceClient(c), nil
}

func (p *connPool) worker(addr string) (raypb.CoreWorkerServiceClient, error) {
	c, err := p.get(addr)
	if err != nil {
		return nil, err
	}
	return raypb.NewCoreWorkerServiceClient(c), nil
}

func hostPort(ip string, port int32) string {
	return net.JoinHostPort(ip, strconv.Itoa(int(port)))
}

func addrOf(a *commonpb.Address) string {
	if a == nil {
		return ""
	}
	return hostPort(a.GetIpAddress(), a.GetPort())
}

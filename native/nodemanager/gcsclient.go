package nodemanager

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	commonpb "github.com/gray-cluster/gray/proto/ray/commonpb"
	raypb "github.com/gray-cluster/gray/proto/ray/raypb"
)

// gcsClient holds the GCS services the raylet calls.
type gcsClient struct {
	conn   *grpc.ClientConn
	node   raypb.NodeInfoGcsServiceClient
	job    raypb.JobInfoGcsServiceClient
	worker raypb.WorkerInfoGcsServiceClient
	obs    raypb.ObservabilityPubSubServiceClient
	kv     raypb.InternalKVGcsServiceClient
	res    raypb.NodeResourceInfoGcsServiceClient
}

func newGCSClient(addr, clusterIDHex string, dial DialFunc) (*gcsClient, error) {
	opts := dialOptions(dial)
	if clusterIDHex != "" {
		opts = append(opts, grpc.WithUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, o ...grpc.CallOption) error {
			return invoker(metadata.AppendToOutgoingContext(ctx, "ray_cluster_id", clusterIDHex), method, req, reply, cc, o...)
		}))
	}
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("nodemanager: GCS client: %w", err)
	}
	return &gcsClient{
		conn:   conn,
		node:   raypb.NewNodeInfoGcsServiceClient(conn),
		job:    raypb.NewJobInfoGcsServiceClient(conn),
		worker: raypb.NewWorkerInfoGcsServiceClient(conn),
		obs:    raypb.NewObservabilityPubSubServiceClient(conn),
		kv:     raypb.NewInternalKVGcsServiceClient(conn),
		res:    raypb.NewNodeResourceInfoGcsServiceClient(conn),
	}, nil
}

func (g *gcsClient) close() { g.conn.Close() }

// statusErr turns a non-OK GcsStatus into an error.
func statusErr(what string, s *raypb.GcsStatus) error {
	if s == nil || s.GetCode() == 0 {
		return nil
	}
	return fmt.Errorf("%s: GCS status %d: %s", what, s.GetCode(), s.GetMessage())
}

func (g *gcsClient) registerNode(ctx context.Context, info *raypb.GcsNodeInfo) error {
	rep, err := g.node.RegisterNode(ctx, &raypb.RegisterNodeRequest{NodeInfo: info}, grpc.WaitForReady(true))
	if err != nil {
		return err
	}
	return statusErr("RegisterNode", rep.GetStatus())
}

func (g *gcsClient) unregisterNode(ctx context.Context, nodeID []byte) error {
	rep, err := g.node.UnregisterNode(ctx, &raypb.UnregisterNodeRequest{NodeId: nodeID,
		NodeDeathInfo: &commonpb.NodeDeathInfo{Reason: commonpb.NodeDeathInfo_EXPECTED_TERMINATION, ReasonMessage: "raylet closed"}})
	if err != nil {
		return err
	}
	return statusErr("UnregisterNode", rep.GetStatus())
}

func (g *gcsClient) addJob(ctx context.Context, data *raypb.JobTableData) error {
	rep, err := g.job.AddJob(ctx, &raypb.AddJobRequest{Data: data})
	if err != nil {
		return err
	}
	return statusErr("AddJob", rep.GetStatus())
}

func (g *gcsClient) markJobFinished(ctx context.Context, jobID []byte) error {
	rep, err := g.job.MarkJobFinished(ctx, &raypb.MarkJobFinishedRequest{JobId: jobID})
	if err != nil {
		return err
	}
	return statusErr("MarkJobFinished", rep.GetStatus())
}

func (g *gcsClient) reportWorkerFailure(ctx context.Context, data *raypb.WorkerTableData) error {
	rep, err := g.worker.ReportWorkerFailure(ctx, &raypb.ReportWorkerFailureRequest{WorkerFailure: data})
	if err != nil {
		return err
	}
	return statusErr("ReportWorkerFailure", rep.GetStatus())
}

func (g *gcsClient) publish(ctx context.Context, msgs []*raypb.PubMessage) error {
	rep, err := g.obs.GcsPublish(ctx, &raypb.GcsPublishRequest{PubMessages: msgs})
	if err != nil {
		return err
	}
	return statusErr("GcsPublish", rep.GetStatus())
}

func (g *gcsClient) reportJobError(ctx context.Context, e *raypb.ErrorTableData) error {
	rep, err := g.obs.ReportJobError(ctx, &raypb.ReportJobErrorRequest{JobError: e})
	if err != nil {
		return err
	}
	return statusErr("ReportJobError", rep.GetStatus())
}

// errKVMissing is a key the GCS internal KV does not hold.
var errKVMissing = errors.New("not in the GCS internal KV")

// kvGet reads one key of the GCS internal KV (namespace "" = none, as the
// driver stores runtime_env packages).
func (g *gcsClient) kvGet(ctx context.Context, namespace, key []byte) ([]byte, error) {
	rep, err := g.kv.InternalKVGet(ctx, &raypb.InternalKVGetRequest{Namespace: namespace, Key: key},
		grpc.MaxCallRecvMsgSize(maxPackageBytes+1<<20))
	if err != nil {
		return nil, err
	}
	if c := rep.GetStatus().GetCode(); c == gcsStatusNotFound {
		return nil, fmt.Errorf("%q: %w", key, errKVMissing)
	}
	if err := statusErr("InternalKVGet", rep.GetStatus()); err != nil {
		return nil, err
	}
	return rep.GetValue(), nil
}

// gcsStatusNotFound is Ray's StatusCode::NotFound.
const gcsStatusNotFound = 17

// clientPool caches gRPC connections to core workers by address.
type clientPool struct {
	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
	dial  DialFunc
}

func newClientPool(dial DialFunc) *clientPool {
	return &clientPool{conns: map[string]*grpc.ClientConn{}, dial: dial}
}

// fetchStreamWindow is the gRPC flow-control window of one stream this
// raylet's clients receive on.
const fetchStreamWindow = 16 << 20

// DialFunc opens a connection to host:port; a raylet on a provider reaches
// the head and other nodes through gray's tunnel with one.
type DialFunc func(ctx context.Context, addr string) (net.Conn, error)

// dialOptions are the gRPC options of every client this raylet makes.
func dialOptions(dial DialFunc) []grpc.DialOption {
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()),
		// Object streams (NativeObjects.Fetch) cross the pool's tunnel,
		// whose round trip is far above loopback's: start with windows
		// that keep a 64 MiB transfer moving instead of waiting for
		// gRPC's estimator to grow them from 64 KiB.
		grpc.WithInitialWindowSize(fetchStreamWindow),
		grpc.WithInitialConnWindowSize(4 * fetchStreamWindow)}
	if dial != nil {
		opts = append(opts, grpc.WithContextDialer(dial))
	}
	return opts
}

func (p *clientPool) get(addr string) (raypb.CoreWorkerServiceClient, error) {
	c, err := p.conn(addr)
	if err != nil {
		return nil, err
	}
	return raypb.NewCoreWorkerServiceClient(c), nil
}

// conn is the cached connection to addr (a core worker or a raylet).
func (p *clientPool) conn(addr string) (*grpc.ClientConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		return nil, ErrClosed
	}
	c, ok := p.conns[addr]
	if !ok {
		var err error
		c, err = grpc.NewClient(addr, dialOptions(p.dial)...)
		if err != nil {
			return nil, fmt.Errorf("nodemanager: client %s: %w", addr, err)
		}
		p.conns[addr] = c
	}
	return c, nil
}

// drop closes the connection to a worker that is gone.
func (p *clientPool) drop(addr string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.conns[addr]; ok {
		c.Close()
		delete(p.conns, addr)
	}
}

func (p *clientPool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

package transport

import (
	"context"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/peer"
)

// gRPC between nodes runs one HTTP/2 connection per stream of a Transport:
// grpc-go dials a stream once per subchannel and multiplexes its RPCs over
// it. The gRPC layer itself uses insecure credentials, because QUIC already
// encrypts and authenticates both ends; handlers learn who called with
// PeerFromContext.

// WithTransport makes a gRPC client dial through t. grpc-go cannot bundle
// options, so it must be combined with insecure transport credentials;
// DialOptions and NewClient do that.
func WithTransport(t Transport) grpc.DialOption {
	return grpc.WithContextDialer(t.Dial)
}

// DialOptions returns what a gRPC client needs to reach a node through t:
// WithTransport(t) and insecure credentials.
func DialOptions(t Transport) []grpc.DialOption {
	return []grpc.DialOption{WithTransport(t), grpc.WithTransportCredentials(insecure.NewCredentials())}
}

// NewClient returns a gRPC client for the node listening at addr on t. The
// address goes to t.Dial untouched (no DNS resolution by grpc). Like
// grpc.NewClient, it does not connect until the first RPC.
func NewClient(t Transport, addr string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	return grpc.NewClient("passthrough:///"+addr, append(DialOptions(t), opts...)...)
}

// PeerFromContext returns the identity of the node that made the gRPC call
// being handled in ctx (on a client, pass the peer.Peer from grpc.Peer the
// same way through peer.NewContext). It reports false if the call did not
// come through a Transport.
func PeerFromContext(ctx context.Context) (PeerInfo, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return PeerInfo{}, false
	}
	if a, ok := p.Addr.(peerer); ok {
		return a.Peer(), true
	}
	return PeerInfo{}, false
}

// Serve runs s on l until ctx is done, then stops s gracefully: the listener
// closes at once and Serve returns when the RPCs in flight have finished. It
// returns nil after such a stop, or the error that ended s.Serve.
func Serve(ctx context.Context, s *grpc.Server, l net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(l) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		s.GracefulStop()
		<-errc
		return nil
	}
}

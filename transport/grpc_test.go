package transport

import (
	"context"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
)

// TestGRPC runs the stock health service over each transport and checks that
// handlers see who called.
func TestGRPC(t *testing.T) {
	t.Parallel()
	for _, im := range impls {
		t.Run(im.name, func(t *testing.T) {
			t.Parallel()
			e := im.new(t)
			ctx := testCtx(t)

			var mu sync.Mutex
			var callers []PeerInfo
			capture := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
				p, ok := PeerFromContext(ctx)
				if !ok {
					t.Error("PeerFromContext found no peer in a handler")
				}
				mu.Lock()
				callers = append(callers, p)
				mu.Unlock()
				return h(ctx, req)
			}
			s := grpc.NewServer(grpc.ChainUnaryInterceptor(capture))
			hs := health.NewServer()
			healthpb.RegisterHealthServer(s, hs)

			l, err := e.server.Listen(ctx, e.listenAddr)
			if err != nil {
				t.Fatal(err)
			}
			serveCtx, stop := context.WithCancel(ctx)
			served := make(chan error, 1)
			go func() { served <- Serve(serveCtx, s, l) }()

			cc, err := NewClient(e.client, l.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			client := healthpb.NewHealthClient(cc)
			for range 3 {
				var p peer.Peer
				resp, err := client.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p))
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				if resp.Status != healthpb.HealthCheckResponse_SERVING {
					t.Fatalf("status %v, want SERVING", resp.Status)
				}
				if sp, ok := PeerFromContext(peer.NewContext(ctx, &p)); !ok || sp.NodeID != e.serverID {
					t.Errorf("client sees server %+v, want NodeID %q", sp, e.serverID)
				}
			}
			hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
			if resp, err := client.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil ||
				resp.Status != healthpb.HealthCheckResponse_NOT_SERVING {
				t.Fatalf("Check after SetServingStatus = %v, %v", resp, err)
			}

			mu.Lock()
			for _, p := range callers {
				if p.NodeID != e.clientID {
					t.Errorf("handler saw caller %+v, want NodeID %q", p, e.clientID)
				}
			}
			mu.Unlock()

			// GracefulStop closes the listener first, then waits for the
			// client's transport to go; it must not hang on our draining.
			stop()
			_ = cc.Close()
			select {
			case err := <-served:
				if err != nil {
					t.Errorf("Serve = %v", err)
				}
			case <-ctx.Done():
				t.Fatal("Serve did not return after its context was cancelled")
			}
		})
	}
}

func TestPeerFromContextWithoutPeer(t *testing.T) {
	t.Parallel()
	if _, ok := PeerFromContext(t.Context()); ok {
		t.Error("PeerFromContext found a peer in a bare context")
	}
}

package clientproxy_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/gray-cluster/gray/clientproxy"
	pb "github.com/gray-cluster/gray/proto/rayclientpb"
)

// A session whose server cannot start gets a failed init with the reason;
// PING is answered without a server; the proxy keeps serving.
func TestServerThatFailsToStart(t *testing.T) {
	p := clientproxy.New(clientproxy.Config{Addr: "127.0.0.1:0", GCSAddress: "127.0.0.1:1",
		Python: "/bin/false", LogDir: t.TempDir(), StartTimeout: 20 * time.Second})
	addr, err := p.Listen()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	conn, err := grpc.NewClient(addr.String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, id := range []string{"c1", "c2"} {
		cctx := metadata.AppendToOutgoingContext(ctx, "client_id", id)
		ping, err := pb.NewRayletDriverClient(conn).ClusterInfo(cctx, &pb.ClusterInfoRequest{Type: pb.ClusterInfoType_PING})
		if err != nil || ping.GetJson() != "{}" {
			t.Fatalf("ping: %v %v", ping, err)
		}
		st, err := pb.NewRayletDataStreamerClient(conn).Datapath(cctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&pb.DataRequest{ReqId: 1, Type: &pb.DataRequest_Init{Init: &pb.InitRequest{}}}); err != nil {
			t.Fatal(err)
		}
		resp, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if init := resp.GetInit(); init == nil || init.GetOk() || !strings.Contains(init.GetMsg(), "did not start") || resp.GetReqId() != 1 {
			t.Fatalf("init response: %v", resp)
		}
		if n := len(p.Sessions()); n != 0 {
			t.Fatalf("%d sessions left", n)
		}
	}
}

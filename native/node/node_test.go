package node

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/gray-cluster/gray/gcs"
	"github.com/gray-cluster/gray/internal/testlog"
	raypb "github.com/gray-cluster/gray/proto/ray/raypb"
)

// A native node lays out what a stock driver reads before it connects, and
// its raylet is registered in its GCS with the sockets that exist.
func TestNodeLayoutAndRegistration(t *testing.T) {
	// Short: unix socket paths stay under 108 bytes.
	tmp, err := os.MkdirTemp("/tmp", "gn")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(tmp) })
	kv := gcs.NewMemKV()
	var n *Node
	n, err = New(Config{
		NodeIP: "127.0.0.1", TempDir: tmp, Python: "python3", PythonVersion: "3.11.7",
		Resources: map[string]float64{"CPU": 2}, ObjectStoreMemory: 64 << 20, KV: kv,
		Logger: testlog.New(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := n.Start(ctx); err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			n.Close()
		}
	}()

	name, ok, _ := kv.Get(context.Background(), []byte("session"), []byte("session_name"))
	if !ok || filepath.Join(tmp, string(name)) != n.SessionDir() {
		t.Fatalf("session_name %q, session dir %s", name, n.SessionDir())
	}
	var meta map[string]any
	raw, _, _ := kv.Get(context.Background(), []byte("cluster"), []byte("CLUSTER_METADATA"))
	if err := json.Unmarshal(raw, &meta); err != nil || meta["ray_version"] != RayVersion || meta["python_version"] != "3.11.7" {
		t.Fatalf("CLUSTER_METADATA %s: %v", raw, err)
	}
	if b, _ := os.ReadFile(filepath.Join(tmp, "ray_current_cluster")); string(b) != n.GCSAddress() {
		t.Fatalf("ray_current_cluster %q, GCS at %s", b, n.GCSAddress())
	}

	conn, err := grpc.NewClient(n.GCSAddress(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cid, err := raypb.NewNodeInfoGcsServiceClient(conn).GetClusterId(ctx, &raypb.GetClusterIdRequest{})
	if err != nil {
		t.Fatal(err)
	}
	md := metadata.AppendToOutgoingContext(ctx, "ray_cluster_id", hex.EncodeToString(cid.GetClusterId()))
	all, err := raypb.NewNodeInfoGcsServiceClient(conn).GetAllNodeInfo(md, &raypb.GetAllNodeInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(all.GetNodeInfoList()) != 1 {
		t.Fatalf("%d nodes", len(all.GetNodeInfoList()))
	}
	info := all.GetNodeInfoList()[0]
	if string(info.GetNodeId()) != string(n.NodeID()) || info.GetState() != raypb.GcsNodeInfo_ALIVE || !info.GetIsHeadNode() {
		t.Fatalf("node %x state %v head %v", info.GetNodeId(), info.GetState(), info.GetIsHeadNode())
	}
	for _, sock := range []string{info.GetRayletSocketName(), info.GetObjectStoreSocketName()} {
		if st, err := os.Stat(sock); err != nil || st.Mode()&os.ModeSocket == 0 {
			t.Fatalf("socket %s: %v", sock, err)
		}
	}
	total := info.GetResourcesTotal()
	if total["CPU"] != 2 || total["node:127.0.0.1"] != 1 || total["node:__internal_head__"] != 1 {
		t.Fatalf("resources %v", total)
	}

	n.Close()
	closed = true
	if _, err := os.Stat(filepath.Join(tmp, "ray_current_cluster")); !os.IsNotExist(err) {
		t.Fatal("ray_current_cluster outlived the node")
	}
}

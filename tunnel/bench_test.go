package tunnel

import (
	"encoding/binary"
	"io"
	"net"
	"testing"
)

// BenchmarkTransfer measures one conn's throughput over QUIC on loopback,
// one way (to a sink that acknowledges the total once it has it all), on
// the head→provider path and the relayed provider→provider path:
//
//	go test ./tunnel -run '^$' -bench Transfer
func BenchmarkTransfer(b *testing.B) {
	for _, path := range []string{"head to provider", "provider to provider"} {
		b.Run(path, func(b *testing.B) {
			c := newCluster(b, "quic", clusterOpts{})
			sink := tcpServer(b, vipB, func(conn *net.TCPConn) {
				n, _ := io.Copy(io.Discard, conn)
				_ = binary.Write(conn, binary.BigEndian, n)
			})
			dial := c.hub.Dial
			if path == "provider to provider" {
				dial = c.provs[nodeA].agent.Dial
			}
			conn, err := dial(b.Context(), sink)
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
			buf := make([]byte, 1<<20)
			b.SetBytes(int64(len(buf)))
			b.ResetTimer()
			for range b.N {
				if _, err := conn.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			if err := conn.(closeWriter).CloseWrite(); err != nil {
				b.Fatal(err)
			}
			var n int64
			if err := binary.Read(conn, binary.BigEndian, &n); err != nil || n != int64(b.N*len(buf)) {
				b.Fatalf("sink got %d bytes (%v), want %d", n, err, b.N*len(buf))
			}
		})
	}
}

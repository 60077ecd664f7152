package transport

import (
	"testing"

	"github.com/gray-cluster/gray/internal/leakcheck"
)

// TestMain fails the package if goroutines of this package, quic-go or grpc
// outlive the tests: every Close here is supposed to wait for its own.
func TestMain(m *testing.M) {
	leakcheck.Main(m, "quic-go/quic-go", "gray/transport.", "google.golang.org/grpc")
}

package plasma

import (
	"testing"

	"github.com/gray-cluster/gray/internal/leakcheck"
)

// Every store goroutine (accept loop, clients, held-open gets, the event
// dispatcher) must end with Close.
func TestMain(m *testing.M) { leakcheck.Main(m, "gray/native/plasma.(*") }

package head

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strconv"

	"github.com/gray-cluster/gray/gcs"
	"github.com/gray-cluster/gray/tunnel"
)

// A standby head's Ray Client port, while another head is active, forwards
// each connection as bytes (TLS stays end to end) to the Ray Client
// address the active head published beside the lease. A stock client knows
// one address; one given the standby's reaches the active head now and,
// after a failover, reconnects to the same address and finds this head
// serving its session. The forward (with its connections) is closed when
// this head takes the lease, before its own Ray Client server binds the
// port.

// errNoLeaderAddr: the active head has not published its address yet.
var errNoLeaderAddr = errors.New("the active head has published no Ray Client address")

// leaderTarget names the forward's target: the dial looks the leader's
// address up for each connection.
const leaderTarget = "active-head:10001"

// startStandbyProxy forwards addr to the lease's leader; it returns the
// forwarder (Close it) and the bound address.
func startStandbyProxy(addr string, lease *gcs.Lease, log *slog.Logger) (*tunnel.Forwarder, string, error) {
	fw := tunnel.NewForwarder(func(ctx context.Context, _ string) (net.Conn, error) {
		target, err := lease.LeaderClientAddr(ctx)
		if err != nil {
			return nil, err
		}
		if target == "" {
			return nil, errNoLeaderAddr
		}
		var d net.Dialer
		return d.DialContext(ctx, "tcp", target)
	}, log)
	bound, err := fw.Forward(context.Background(), addr, leaderTarget)
	if err != nil {
		_ = fw.Close()
		return nil, "", err
	}
	return fw, bound, nil
}

// dialableAddr is addr with an unspecified host replaced by ip, so that
// another machine can dial it.
func dialableAddr(addr net.Addr, ip string) string {
	ta, ok := addr.(*net.TCPAddr)
	if !ok {
		return addr.String()
	}
	host := ta.IP.String()
	if ta.IP == nil || ta.IP.IsUnspecified() {
		host = ip
	}
	return net.JoinHostPort(host, strconv.Itoa(ta.Port))
}

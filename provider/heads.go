package provider

import (
	"context"
	"errors"
	"net"
	"strings"
	"time"

	"github.com/gray-cluster/gray/transport"
)

// A provider may name several heads (Config.HeadAddr "A:PORT,B:PORT"): an
// active head and standbys on the same Redis store, of which at most one
// serves. Every connection to the head dials them all at once and keeps the
// first that answers, so that after the active head dies the control
// channel's reconnect loop finds whichever took over.

// failoverIdleTimeout is the QUIC idle timeout with several heads: a head
// that vanished (kill -9, no stateless reset) is noticed after this long
// instead of the default minute, so that the provider moves to the standby.
const failoverIdleTimeout = 5 * time.Second

// headAddrs splits Config.HeadAddr into its addresses.
func headAddrs(s string) []string {
	var out []string
	for _, a := range strings.Split(s, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

// currentHead is the head the provider last connected to (the first named
// before any).
func (p *Provider) currentHead() string {
	if a, ok := p.head.Load().(string); ok && a != "" {
		return a
	}
	return p.heads[0]
}

// dialHeads returns a dialer for gRPC over t that reaches whichever head
// answers first (the address gRPC passes is ignored).
func (p *Provider) dialHeads(t transport.Transport) func(context.Context, string) (net.Conn, error) {
	return func(ctx context.Context, _ string) (net.Conn, error) {
		if len(p.heads) == 1 {
			return t.Dial(ctx, p.heads[0])
		}
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		type result struct {
			addr string
			conn net.Conn
			err  error
		}
		results := make(chan result, len(p.heads))
		for _, a := range p.heads {
			go func() {
				c, err := t.Dial(ctx, a)
				results <- result{a, c, err}
			}()
		}
		var errs []error
		for range p.heads {
			r := <-results
			if r.err != nil {
				errs = append(errs, r.err)
				continue
			}
			p.head.Store(r.addr)
			cancel()
			go func(left int) { // close the late winners
				for range left {
					if r := <-results; r.conn != nil {
						r.conn.Close()
					}
				}
			}(len(p.heads) - len(errs) - 1)
			return r.conn, nil
		}
		return nil, errors.Join(errs...)
	}
}

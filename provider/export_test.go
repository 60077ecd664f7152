package provider

import "context"

// DialPeer connects to the peer service at addr expecting node there (tests
// of the puller's identity check).
func (p *Provider) DialPeer(ctx context.Context, node, addr string) error {
	_, err := p.peers.client(ctx, node, addr)
	return err
}

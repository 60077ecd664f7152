package head

import (
	"errors"
	"fmt"

	"github.com/gray-cluster/gray/clientproxy"
)

// errNativeSessionsAuth refuses native ray:// sessions under token auth:
// the stock Ray Client servers check no gray tokens.
var errNativeSessionsAuth = errors.New("token auth is not supported with native ray:// sessions")

// startProxy puts the native-sessions proxy on the Ray Client port.
func (h *Head) startProxy() error {
	if h.Native == nil {
		return errors.New("native ray:// sessions need native Ray (the native GCS did not start)")
	}
	p := clientproxy.New(clientproxy.Config{
		Addr: h.cfg.ClientAddr, GCSAddress: h.Native.GCSAddress(), Python: h.cfg.Python,
		LogDir: h.cfg.SessionDir, KV: h.KV, Logger: h.log,
	})
	addr, err := p.Listen()
	if err != nil {
		return fmt.Errorf("native ray:// sessions: %w", err)
	}
	h.Proxy, h.addr = p, addr
	return nil
}

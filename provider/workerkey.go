package provider

import (
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"

	"github.com/gray-cluster/gray/auth"
)

// workerKey is the key this node signs its workers' credentials with (see
// auth.NodeWorkerKey): derived from the join secret, and kept in the state
// dir for restarts that come without a token. nil when neither is there
// (the head then refuses the workers' nested calls in token mode).
func (p *Provider) workerKey() []byte {
	path := filepath.Join(p.cfg.StateDir, "worker.key")
	if p.cfg.Token != "" {
		if secret, _, err := ParseToken(p.cfg.Token); err == nil {
			key := auth.NodeWorkerKey(secret, p.nodeID.Hex())
			if err := os.WriteFile(path, []byte(hex.EncodeToString(key)+"\n"), 0o600); err != nil {
				p.log.Warn("cannot keep the worker key", "err", err)
			}
			return key
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	key, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil {
		return nil
	}
	return key
}

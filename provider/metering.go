package provider

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"time"

	"github.com/gray-cluster/gray/billing/metering"
	"github.com/gray-cluster/gray/internal/ids"
	pb "github.com/gray-cluster/gray/proto/nodepb"
)

// meterKey loads the node's ed25519 metering key, creating it once.
func meterKey(dir string) (ed25519.PrivateKey, error) {
	path := filepath.Join(dir, "meter-key")
	if seed, err := os.ReadFile(path); err == nil && len(seed) == ed25519.SeedSize {
		return ed25519.NewKeyFromSeed(seed), nil
	}
	seed := make([]byte, ed25519.SeedSize)
	if _, err := rand.Read(seed); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, seed, 0o600); err != nil {
		return nil, fmt.Errorf("provider: metering key: %w", err)
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

// lease starts metering a grant. GPUs are metered under their verified
// model ("GPU:H100") when verification labelled the node, so a provider's
// model-specific price applies (and falls back to its "GPU" price).
func (p *Provider) lease(lease string, job ids.JobID, res map[string]float64) {
	if model := p.cfg.Labels["gray.io/gpu-model"]; model != "" && p.cfg.Labels["gray.io/gpu-verified"] == "true" && res["GPU"] > 0 {
		res = maps.Clone(res)
		res["GPU:"+model] = res["GPU"]
		delete(res, "GPU")
	}
	p.log.Debug("lease", "lease", lease, "resources", res)
	if err := p.meter.Grant(lease, job.Hex(), res, time.Now()); err != nil {
		p.log.Warn("metering grant", "lease", lease, "err", err)
	}
}

// leaseEnd cuts, signs and sends the records of a finished grant.
func (p *Provider) leaseEnd(lease string) {
	recs := p.meter.Release(lease, time.Now())
	p.log.Debug("lease end", "lease", lease, "records", len(recs))
	p.sendUsage(recs)
}

func (p *Provider) sendUsage(recs []metering.UsageRecord) {
	if len(recs) == 0 {
		return
	}
	u := &pb.Usage{}
	for _, rec := range recs {
		b, err := json.Marshal(metering.Sign(rec, p.meterKey))
		if err != nil {
			continue
		}
		u.Records = append(u.Records, b)
	}
	p.sendEvent(&pb.NodeMessage{Msg: &pb.NodeMessage_Usage{Usage: u}})
}

// flushUsage bills long leases (actors) periodically, so a crash loses at
// most one period.
func (p *Provider) flushUsage(every time.Duration) {
	defer p.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return
		case now := <-t.C:
			p.sendUsage(p.meter.Flush(now))
		}
	}
}

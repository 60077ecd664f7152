package provider

import (
	"context"
	"errors"
	"sort"
	"sync"
	"sync/atomic"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/objstream"
	pb "github.com/gray-cluster/gray/proto/nodepb"
)

// maxHints bounds how many objects' holder lists (and transfer records) a
// provider remembers; the least recently used go first.
const maxHints = 1 << 14

// holder is a provider that holds a copy of an object, as the head named it.
type holder struct {
	node, addr string
}

// TransferStats counts the object bytes a provider pulled: directly from
// other providers, relayed through the head, and served to other providers
// from its own cache; Fallbacks counts pulls that tried a holder and had to
// use the head for some or all of the object.
type TransferStats struct {
	Direct, Relayed, Served int64
	DirectPulls, Fallbacks  int64
}

// transferStats are the running counters behind TransferStats, and the
// per-object split of the most recent pulls.
type transferStats struct {
	direct, relayed, served atomic.Int64
	directPulls, fallbacks  atomic.Int64

	recent *lru.Cache[ids.ObjectID, ObjectTransfer]
}

// ObjectTransfer is how one object reached this provider.
type ObjectTransfer struct {
	Direct, Relayed int64
	// From is the node id of the holder it was pulled from directly.
	From string
}

func (s *transferStats) record(id ids.ObjectID, t ObjectTransfer) {
	s.direct.Add(t.Direct)
	s.relayed.Add(t.Relayed)
	s.recent.Add(id, t)
}

// Transfers returns the provider's transfer counters.
func (p *Provider) Transfers() TransferStats {
	s := &p.objects.stats
	return TransferStats{
		Direct: s.direct.Load(), Relayed: s.relayed.Load(), Served: p.objects.served.Load(),
		DirectPulls: s.directPulls.Load(), Fallbacks: s.fallbacks.Load(),
	}
}

// ObjectTransfer reports how a recently pulled object reached this provider.
func (p *Provider) ObjectTransfer(id ids.ObjectID) (ObjectTransfer, bool) {
	return p.objects.stats.recent.Peek(id)
}

// hint files the holders the head named for objects a task or actor needs.
func (o *objects) hint(locs []*pb.PeerLocation) {
	if len(locs) == 0 {
		return
	}
	for _, l := range locs {
		id, err := ids.ObjectFromBytes(l.ObjectId)
		if err != nil {
			continue
		}
		var hs []holder
		for _, h := range l.Holders {
			if h.Address != "" && h.NodeId != o.p.nodeID.Hex() {
				hs = append(hs, holder{node: h.NodeId, addr: h.Address})
			}
		}
		if len(hs) == 0 {
			continue
		}
		o.hints.Add(id, hs)
	}
}

// takeHints returns and forgets the holders named for id.
func (o *objects) takeHints(id ids.ObjectID) []holder {
	hs, _ := o.hints.Peek(id)
	o.hints.Remove(id)
	return hs
}

// rangeFunc pulls [off, off+n) of id over stripe i of some source.
type rangeFunc func(ctx context.Context, i int, id ids.ObjectID, off, n int64) (*objstream.Range, error)

// pullOne pulls an object: from the holders the head named, directly, and
// from the head for whatever they could not give (all of it when none
// could). It reports direct pulls to the head.
func (o *objects) pullOne(id ids.ObjectID) error {
	ctx := o.p.ctx
	var parts []*objstream.Range
	var t ObjectTransfer
	hints := o.takeHints(id)
	if len(hints) == 0 && o.p.peers != nil {
		// No holder named in advance (a get from a worker, or a dependency
		// that was not ready when the work was sent): the head names them
		// once the object is ready, or sends the first piece.
		first, peers, err := o.askHead(ctx, id)
		if err != nil {
			return err
		}
		if first != nil {
			parts = []*objstream.Range{first}
		}
		hints = peers
	}
	if o.p.peers != nil && len(parts) == 0 {
		for _, h := range hints {
			c, err := o.p.peers.client(ctx, h.node, h.addr)
			if err != nil {
				o.p.log.Debug("holder unreachable", "object", id.Hex(), "peer", h.node, "err", err)
				continue
			}
			got, err := pullStriped(ctx, c.pullRange, len(c.conns), id, nil)
			t.Direct = bytesIn(got)
			if t.Direct > 0 {
				t.From = h.node
			}
			if err == nil {
				parts = got
				break
			}
			if !errors.Is(err, objstream.ErrMissing) {
				o.p.peers.fail(c, err)
			}
			o.p.log.Info("direct pull failed; falling back", "object", id.Hex(), "peer", h.node, "have", t.Direct, "err", err)
			if len(got) > 0 {
				parts = got // the head sends the rest
				break
			}
		}
	}
	if complete := len(parts) > 0 && len(gaps(parts)) == 0; !complete {
		got, err := pullStriped(ctx, o.pullRange, o.p.stripes(), id, parts)
		t.Relayed = bytesIn(got) - t.Direct
		if err != nil {
			return err
		}
		parts = got
	}
	obj, err := objstream.Assemble(parts)
	if err != nil {
		return err
	}
	o.remember(obj)
	o.stats.record(id, t)
	switch {
	case t.Direct > 0 && t.Relayed == 0:
		o.stats.directPulls.Add(1)
	case len(hints) > 0:
		o.stats.fallbacks.Add(1)
	}
	if t.Direct > 0 {
		o.p.log.Debug("pulled object from a peer", "object", id.Hex(), "from", t.From, "direct", t.Direct, "relayed", t.Relayed)
		o.p.sendEvent(&pb.NodeMessage{Msg: &pb.NodeMessage_PeerTransfer{PeerTransfer: &pb.PeerTransfer{
			ObjectId: id.Bytes(), DirectBytes: t.Direct, RelayedBytes: t.Relayed, FromNode: t.From,
		}}})
	}
	return nil
}

// askHead pulls the first piece of id from the head, allowing it to answer
// with the providers that hold the object instead.
func (o *objects) askHead(ctx context.Context, id ids.ObjectID) (*objstream.Range, []holder, error) {
	stream, err := pb.NewHeadClient(o.p.stripe(0)).PullObject(ctx, &pb.PullRequest{
		ObjectId: id.Bytes(), Length: FirstPieceBytes, PeersOk: true,
	})
	if err != nil {
		return nil, nil, err
	}
	m, err := stream.Recv()
	if err != nil {
		return nil, nil, err
	}
	if len(m.Peers) > 0 {
		var hs []holder
		for _, h := range m.Peers {
			if h.Address != "" && h.NodeId != o.p.nodeID.Hex() {
				hs = append(hs, holder{node: h.NodeId, addr: h.Address})
			}
		}
		return nil, hs, nil
	}
	sent := false
	r, err := objstream.ReceiveRange(func() (*pb.ObjectChunk, error) {
		if !sent {
			sent = true
			return m, nil
		}
		return stream.Recv()
	}, 0)
	return r, nil, err
}

func bytesIn(parts []*objstream.Range) int64 {
	var n int64
	for _, p := range parts {
		n += int64(len(p.Data))
	}
	return n
}

// span is a byte range [off, off+n) of an object.
type span struct{ off, n int64 }

// gaps lists what parts (of one object) leave uncovered, in order.
func gaps(parts []*objstream.Range) []span {
	if len(parts) == 0 {
		return nil
	}
	sort.Slice(parts, func(i, j int) bool { return parts[i].Offset < parts[j].Offset })
	var out []span
	var pos int64
	for _, p := range parts {
		if p.Offset > pos {
			out = append(out, span{pos, p.Offset - pos})
		}
		pos = max(pos, p.Offset+int64(len(p.Data)))
	}
	if total := parts[0].Total; pos < total {
		out = append(out, span{pos, total - pos})
	}
	return out
}

// MinRangeBytes is the smallest range a striped transfer is cut into: a
// few-MiB object is not worth a stream per bulk connection.
const MinRangeBytes = 256 << 10

// rangeSize splits n bytes over at most k streams, no range smaller than
// MinRangeBytes (unless n is).
func rangeSize(n int64, k int) int64 {
	k = max(k, 1)
	return max((n+int64(k)-1)/int64(k), min(n, MinRangeBytes), 1)
}

// pullStriped completes have (the parts of id already here; none: start
// with a first piece, which tells the size) with ranges from get, striped
// over k streams in parallel. It returns every part it has, also on error,
// so another source can fill the gaps.
func pullStriped(ctx context.Context, get rangeFunc, k int, id ids.ObjectID, have []*objstream.Range) ([]*objstream.Range, error) {
	if len(have) == 0 {
		first, err := get(ctx, 0, id, 0, FirstPieceBytes)
		if err != nil {
			return nil, err
		}
		have = []*objstream.Range{first}
	}
	todo := gaps(have)
	var left int64
	for _, g := range todo {
		left += g.n
	}
	if left == 0 {
		return have, nil
	}
	size := rangeSize(left, k)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		i        int
	)
	for _, g := range todo {
		for off := g.off; off < g.off+g.n; off += size {
			n := min(size, g.off+g.n-off)
			wg.Add(1)
			go func(i int, off, n int64) {
				defer wg.Done()
				r, err := get(ctx, i, id, off, n)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err != nil:
					if firstErr == nil {
						firstErr = err
					}
				case r.Offset != off || int64(len(r.Data)) != n:
					if firstErr == nil {
						firstErr = objstream.ErrBadRange
					}
				default:
					have = append(have, r)
				}
			}(i, off, n)
			i++
		}
	}
	wg.Wait()
	return have, firstErr
}

package nodemanager

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/gray-cluster/gray/native/plasma"
	commonpb "github.com/gray-cluster/gray/proto/ray/commonpb"
	raypb "github.com/gray-cluster/gray/proto/ray/raypb"
)

// Objects a core worker asks for that this node lacks are pulled from a
// node that holds a copy: the raylet asks the object's owner where copies
// are (GetObjectLocationsOwner), fetches it from that node's raylet over
// gray's NativeObjects service, and puts it in the local plasma store,
// where the waiting plasma Get finds it.

// fetchChunk is the size of the data chunks of a fetch stream.
const fetchChunk = 1 << 20

// pullGiveUp ends a pull that found no copy for this long (a core worker
// still waiting asks again, which starts a new pull).
const pullGiveUp = 10 * time.Minute

// copier is the part of the store that moves whole objects between nodes.
type copier interface {
	Read(id ObjectID) (data, metadata []byte, ok bool)
	Put(id ObjectID, data, metadata []byte, owner *commonpb.Address) error
}

func (p plasmaStore) Read(id ObjectID) ([]byte, []byte, bool) { return p.s.Read(plasma.ObjectID(id)) }

func (p plasmaStore) Put(id ObjectID, data, metadata []byte, owner *commonpb.Address) error {
	err := p.s.Put(plasma.ObjectID(id), data, metadata, plasma.Owner{
		NodeID: owner.GetNodeId(), WorkerID: owner.GetWorkerId(), IP: owner.GetIpAddress(), Port: owner.GetPort()})
	if errors.Is(err, plasma.ErrObjectExists) {
		return nil
	}
	return err
}

// puller runs at most one pull per object.
type puller struct {
	r      *Raylet
	mu     sync.Mutex
	active map[ObjectID]bool
}

func newPuller(r *Raylet) *puller { return &puller{r: r, active: map[ObjectID]bool{}} }

// want starts pulls for the objects of m that are not here.
func (p *puller) want(m objectsWithOwners) {
	cp, ok := p.r.cfg.Store.(copier)
	if !ok {
		return
	}
	for i, raw := range m.IDs {
		id, ok := objectIDFrom(raw)
		if !ok || i >= len(m.Owners) || p.r.cfg.Store.Contains(id) {
			continue
		}
		owner := m.Owners[i].proto()
		if len(owner.GetWorkerId()) == 0 {
			continue
		}
		p.mu.Lock()
		if p.active[id] {
			p.mu.Unlock()
			continue
		}
		p.active[id] = true
		p.mu.Unlock()
		go func() {
			defer func() {
				p.mu.Lock()
				delete(p.active, id)
				p.mu.Unlock()
			}()
			p.pull(cp, id, owner)
		}()
	}
}

// pull retries until the object is here, its owner says it is gone or
// cannot be reached, or the raylet closes.
func (p *puller) pull(cp copier, id ObjectID, owner *commonpb.Address) {
	r := p.r
	wait := 50 * time.Millisecond
	start := time.Now()
	// What a broken transfer wrote so far: the next attempt resumes there
	// (from the same holder or another).
	var part partial
	defer part.abort()
	for attempt := 0; ; attempt++ {
		if r.ctx.Err() != nil || r.cfg.Store.Contains(id) || time.Since(start) > pullGiveUp {
			return
		}
		done, err := p.pullOnce(cp, id, owner, &part)
		if done {
			if err != nil {
				r.log.Debug("pull given up", "object", id.String(), "err", err)
			}
			return
		}
		if err != nil && attempt%20 == 0 {
			r.log.Debug("pull not done yet", "object", id.String(), "err", err)
		}
		select {
		case <-r.ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(wait*2, time.Second)
	}
}

// errNoCopy: the owner knows no other node with a copy (yet).
var errNoCopy = errors.New("no other node holds a copy yet")

// pullOnce makes one attempt; done means stop trying.
func (p *puller) pullOnce(cp copier, id ObjectID, owner *commonpb.Address, part *partial) (done bool, err error) {
	r := p.r
	ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
	defer cancel()
	cw, err := r.workers.get(addrString(owner))
	if err != nil {
		return true, err
	}
	rep, err := cw.GetObjectLocationsOwner(ctx, &raypb.GetObjectLocationsOwnerRequest{IntendedWorkerId: owner.GetWorkerId(), ObjectIds: [][]byte{id[:]}})
	if err != nil {
		// The owner is gone: the core worker that waits finds out itself
		// (it raises OwnerDiedError).
		return true, err
	}
	infos := rep.GetObjectLocationInfos()
	if len(infos) == 0 {
		return false, errNoCopy
	}
	info := infos[0]
	if info.GetRefRemoved() {
		return true, fmt.Errorf("owner freed %s", id)
	}
	holders := append([][]byte(nil), info.GetNodeIds()...)
	if len(info.GetSpilledNodeId()) > 0 {
		holders = append(holders, info.GetSpilledNodeId())
	}
	nodes := map[string]*remoteNode{}
	for _, n := range r.view.snapshot() {
		nodes[string(n.id)] = n
	}
	err = errNoCopy
	for _, h := range holders {
		if bytes.Equal(h, r.cfg.NodeID) {
			continue
		}
		n, ok := nodes[string(h)]
		if !ok {
			continue
		}
		if err = p.fetch(ctx, cp, id, owner, n.addr, part); err == nil {
			r.log.Debug("object pulled", "object", id.String(), "from", addrString(n.addr))
			return true, nil
		}
	}
	return false, err
}

func (a fbAddress) proto() *commonpb.Address {
	return &commonpb.Address{NodeId: a.NodeID, IpAddress: a.IP, Port: a.Port, WorkerId: a.WorkerID}
}

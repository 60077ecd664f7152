package nodemanager

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gray-cluster/gray/native/plasma"
	nodepb "github.com/gray-cluster/gray/proto/nodepb"
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
	for attempt := 0; ; attempt++ {
		if r.ctx.Err() != nil || r.cfg.Store.Contains(id) || time.Since(start) > pullGiveUp {
			return
		}
		done, err := p.pullOnce(cp, id, owner)
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
func (p *puller) pullOnce(cp copier, id ObjectID, owner *commonpb.Address) (done bool, err error) {
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
		if err = p.fetch(ctx, cp, id, owner, n.addr); err == nil {
			r.log.Debug("object pulled", "object", id.String(), "from", addrString(n.addr))
			return true, nil
		}
	}
	return false, err
}

// fetch copies id from the raylet at from into the local store: written
// in place as the chunks arrive when the store can (plasma), else gathered
// and put whole.
func (p *puller) fetch(ctx context.Context, cp copier, id ObjectID, owner, from *commonpb.Address) error {
	conn, err := p.r.workers.conn(addrString(from))
	if err != nil {
		return err
	}
	// Ending early (the object got here meanwhile, a failed write) cancels
	// the stream, so the sender lets go of its copy.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := nodepb.NewNativeObjectsClient(conn).Fetch(ctx, &nodepb.NativeFetchRequest{ObjectId: id[:]})
	if err != nil {
		return err
	}
	first, err := st.Recv()
	if err != nil {
		if err == io.EOF {
			err = fmt.Errorf("fetch %s from %s: empty stream", id, addrString(from))
		}
		return err
	}
	size := first.GetDataSize()
	var sink objectSink
	if ip, ok := cp.(inPlaceCopier); ok {
		sink, err = ip.Create(id, size, first.GetMetadata(), owner)
		if errors.Is(err, plasma.ErrObjectExists) {
			return nil // another pull or a local put got it meanwhile
		}
		if err != nil {
			return err
		}
	} else {
		sink = &gatherSink{cp: cp, id: id, owner: owner, meta: first.GetMetadata(), data: make([]byte, 0, size)}
	}
	err = func() error {
		for c := first; ; {
			if _, err := sink.Write(c.GetData()); err != nil {
				return err
			}
			c, err = st.Recv()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
		}
	}()
	if err != nil {
		sink.Abort()
		return fmt.Errorf("fetch %s from %s: %w", id, addrString(from), err)
	}
	if err := sink.Seal(); err != nil {
		return fmt.Errorf("fetch %s from %s: %w", id, addrString(from), err)
	}
	return nil
}

// objectSink receives a fetched object's data in order.
type objectSink interface {
	io.Writer
	Seal() error
	Abort()
}

// inPlaceCopier is a store that takes a fetched object's bytes in place
// (plasma) and serves them without a whole copy.
type inPlaceCopier interface {
	Create(id ObjectID, dataSize uint64, metadata []byte, owner *commonpb.Address) (objectSink, error)
	OpenReader(id ObjectID) (objectSource, bool)
}

// objectSource is a held object served in place.
type objectSource interface {
	DataSize() int64
	Metadata() []byte
	View(off, n int64, fn func([]byte) error) error
	Close()
}

// gatherSink collects the data and puts the whole object at Seal.
type gatherSink struct {
	cp    copier
	id    ObjectID
	owner *commonpb.Address
	meta  []byte
	data  []byte
}

func (g *gatherSink) Write(b []byte) (int, error) {
	if len(g.data)+len(b) > cap(g.data) {
		return 0, fmt.Errorf("more data than the announced %d bytes", cap(g.data))
	}
	g.data = append(g.data, b...)
	return len(b), nil
}

func (g *gatherSink) Seal() error {
	if len(g.data) != cap(g.data) {
		return fmt.Errorf("short stream: %d of %d bytes", len(g.data), cap(g.data))
	}
	return g.cp.Put(g.id, g.data, g.meta, g.owner)
}

func (g *gatherSink) Abort() {}

func (p plasmaStore) Create(id ObjectID, dataSize uint64, metadata []byte, owner *commonpb.Address) (objectSink, error) {
	w, err := p.s.Create(plasma.ObjectID(id), int64(dataSize), metadata, plasma.Owner{
		NodeID: owner.GetNodeId(), WorkerID: owner.GetWorkerId(), IP: owner.GetIpAddress(), Port: owner.GetPort()})
	if err != nil {
		return nil, err
	}
	return w, nil
}

func (p plasmaStore) OpenReader(id ObjectID) (objectSource, bool) {
	r, ok := p.s.OpenReader(plasma.ObjectID(id))
	if !ok {
		return nil, false
	}
	return r, true
}

// objectService serves NativeObjects.Fetch from the local store.
type objectService struct {
	nodepb.UnimplementedNativeObjectsServer
	r *Raylet
}

func (s *objectService) Fetch(req *nodepb.NativeFetchRequest, st nodepb.NativeObjects_FetchServer) error {
	id, ok := objectIDFrom(req.GetObjectId())
	cp, can := s.r.cfg.Store.(copier)
	if !ok || !can {
		return status.Error(codes.InvalidArgument, "bad object id")
	}
	if ip, ok := cp.(inPlaceCopier); ok {
		if src, ok := ip.OpenReader(id); ok {
			defer src.Close()
			return sendInPlace(src, st)
		}
	}
	data, meta, ok := cp.Read(id)
	if !ok {
		return status.Errorf(codes.NotFound, "object %s is not on this node", id)
	}
	first := &nodepb.NativeFetchChunk{DataSize: uint64(len(data)), Metadata: meta}
	n := min(len(data), fetchChunk)
	first.Data, data = data[:n], data[n:]
	if err := st.Send(first); err != nil {
		return err
	}
	for len(data) > 0 {
		n := min(len(data), fetchChunk)
		if err := st.Send(&nodepb.NativeFetchChunk{Data: data[:n]}); err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}

// sendInPlace streams a held object straight from the store's memory (Send
// encodes the message before it returns, so the slice is not kept).
func sendInPlace(src objectSource, st nodepb.NativeObjects_FetchServer) error {
	size := src.DataSize()
	first := true
	for off := int64(0); first || off < size; {
		n := min(size-off, fetchChunk)
		err := src.View(off, n, func(b []byte) error {
			c := &nodepb.NativeFetchChunk{Data: b}
			if first {
				c.DataSize, c.Metadata = uint64(size), src.Metadata()
			}
			return st.Send(c)
		})
		if err != nil {
			return err
		}
		first, off = false, off+n
	}
	return nil
}

func (a fbAddress) proto() *commonpb.Address {
	return &commonpb.Address{NodeId: a.NodeID, IpAddress: a.IP, Port: a.Port, WorkerId: a.WorkerID}
}

package linkemu

import (
	"container/heap"
	"sync"
	"time"
)

// packet is one UDP datagram waiting in a delay line.
type packet struct {
	due  time.Duration
	seq  uint64 // arrival order, breaks ties between equal due times
	data []byte
	buf  *[]byte    // pooled backing array of data, or nil
	pool *sync.Pool // where buf goes back
	sess *udpSession
}

// Datagrams live in pooled buffers of two sizes, one for acknowledgements and
// the like, one for full packets up to a typical MTU; larger ones get their
// own. A packet counts against MaxInFlightBytes by its buffer's size.
const (
	smallBuf    = 256
	mtuBuf      = 2048
	maxDatagram = 64 << 10
)

var (
	smallBufs = sync.Pool{New: func() any { b := make([]byte, smallBuf); return &b }}
	mtuBufs   = sync.Pool{New: func() any { b := make([]byte, mtuBuf); return &b }}
)

// newPacket copies data into a packet.
func newPacket(data []byte, due time.Duration, s *udpSession) *packet {
	p := &packet{due: due, sess: s}
	switch n := len(data); {
	case n <= smallBuf:
		p.pool = &smallBufs
	case n <= mtuBuf:
		p.pool = &mtuBufs
	}
	if p.pool != nil {
		p.buf = p.pool.Get().(*[]byte)
		p.data = (*p.buf)[:len(data)]
	} else {
		p.data = make([]byte, len(data))
	}
	copy(p.data, data)
	return p
}

// size is the memory the packet holds.
func (p *packet) size() int { return cap(p.data) }

func (p *packet) release() {
	if p.buf != nil {
		p.pool.Put(p.buf)
		p.buf = nil
	}
	p.data, p.sess = nil, nil
}

// pktHeap orders packets by due time, then arrival.
type pktHeap []*packet

func (h pktHeap) Len() int { return len(h) }
func (h pktHeap) Less(i, j int) bool {
	if h[i].due != h[j].due {
		return h[i].due < h[j].due
	}
	return h[i].seq < h[j].seq
}
func (h pktHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *pktHeap) Push(x any)   { *h = append(*h, x.(*packet)) }
func (h *pktHeap) Pop() any {
	old := *h
	p := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return p
}

// delayLine holds one direction's packets until they are due. One goroutine
// (run) delivers them, sleeping on a single timer set to the earliest due
// time.
type delayLine struct {
	max  int // bytes
	wake chan struct{}

	mu   sync.Mutex
	h    pktHeap
	seq  uint64
	held int // bytes in h
}

func newDelayLine(maxBytes int) *delayLine {
	return &delayLine{max: maxBytes, wake: make(chan struct{}, 1)}
}

// push queues p; false (p not queued) if the line holds too much already.
func (d *delayLine) push(p *packet) bool {
	d.mu.Lock()
	if d.held+p.size() > d.max {
		d.mu.Unlock()
		return false
	}
	d.seq++
	p.seq = d.seq
	heap.Push(&d.h, p)
	d.held += p.size()
	first := d.h[0] == p
	d.mu.Unlock()
	if first { // the scheduler's timer is set for a later packet, if any
		select {
		case d.wake <- struct{}{}:
		default:
		}
	}
	return true
}

// run delivers packets as they come due, until done is closed.
func (d *delayLine) run(done <-chan struct{}, clk clock, deliver func(*packet)) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var batch []*packet
	for {
		select {
		case <-done:
			return
		default:
		}
		d.mu.Lock()
		now := clk.now()
		for len(d.h) > 0 && d.h[0].due <= now {
			p := heap.Pop(&d.h).(*packet)
			d.held -= p.size()
			batch = append(batch, p)
		}
		var wait time.Duration // 0: nothing queued
		if len(d.h) > 0 {
			wait = d.h[0].due - now
		}
		d.mu.Unlock()

		if len(batch) > 0 {
			for i, p := range batch {
				deliver(p)
				batch[i] = nil
			}
			batch = batch[:0]
			continue // delivering took time: look again before sleeping
		}
		if wait > 0 {
			timer.Reset(wait)
		}
		select {
		case <-timer.C:
		case <-d.wake:
			timer.Stop()
		case <-done:
			return
		}
	}
}

// drain releases every queued packet; for after run has returned.
func (d *delayLine) drain() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, p := range d.h {
		p.release()
	}
	d.h, d.held = nil, 0
}

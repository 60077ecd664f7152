package plasma

import "sync"

// dispatcher delivers events to subscribers in order from one goroutine, so
// that the store never calls out while holding its lock and a slow
// subscriber never stalls a client.
type dispatcher struct {
	mu      sync.Mutex
	cond    *sync.Cond
	queue   []Event
	subs    map[int]func(Event)
	nextSub int
	busy    int // subscription being called, 0 = none
	closed  bool
	done    chan struct{}
}

func newDispatcher() *dispatcher {
	d := &dispatcher{subs: map[int]func(Event){}, done: make(chan struct{})}
	d.cond = sync.NewCond(&d.mu)
	go d.run()
	return d
}

// post queues ev (cheap; safe under the store's lock).
func (d *dispatcher) post(ev Event) {
	d.mu.Lock()
	if !d.closed && len(d.subs) > 0 {
		d.queue = append(d.queue, ev)
		d.cond.Broadcast()
	}
	d.mu.Unlock()
}

func (d *dispatcher) subscribe(fn func(Event)) func() {
	d.mu.Lock()
	d.nextSub++
	id := d.nextSub
	d.subs[id] = fn
	d.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			d.mu.Lock()
			delete(d.subs, id)
			for d.busy == id {
				d.cond.Wait()
			}
			d.mu.Unlock()
		})
	}
}

func (d *dispatcher) run() {
	defer close(d.done)
	d.mu.Lock()
	defer d.mu.Unlock()
	for {
		for len(d.queue) == 0 && !d.closed {
			d.cond.Wait()
		}
		if len(d.queue) == 0 {
			return
		}
		ev := d.queue[0]
		d.queue = d.queue[1:]
		ids := make([]int, 0, len(d.subs))
		for id := range d.subs {
			ids = append(ids, id)
		}
		for _, id := range ids {
			fn, ok := d.subs[id]
			if !ok {
				continue
			}
			d.busy = id
			d.mu.Unlock()
			fn(ev)
			d.mu.Lock()
			d.busy = 0
			d.cond.Broadcast()
		}
	}
}

// close delivers what is queued, then stops the goroutine.
func (d *dispatcher) close() {
	d.mu.Lock()
	d.closed = true
	d.cond.Broadcast()
	d.mu.Unlock()
	<-d.done
}

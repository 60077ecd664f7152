package plasma

import (
	"time"

	fb "github.com/gray-cluster/gray/native/fbs/plasmafb"
)

// get answers a PlasmaGetRequest once every id is sealed or timeoutMs has
// passed (0: answer now; negative: wait without limit). A request that has
// to wait is served from its own goroutine, so the connection keeps
// reading (and notices a hang-up).
func (c *conn) get(ids []ObjectID, timeoutMs int64) {
	if timeoutMs == 0 || c.allSealed(ids) {
		c.finishGet(ids)
		return
	}
	c.s.wg.Add(1)
	go func() {
		defer c.s.wg.Done()
		var deadline <-chan time.Time
		if timeoutMs > 0 {
			t := time.NewTimer(time.Duration(timeoutMs) * time.Millisecond)
			defer t.Stop()
			deadline = t.C
		}
		if c.waitSealed(ids, deadline) {
			c.finishGet(ids)
		}
	}()
}

// waitSealed waits until every id is sealed or deadline fires (true), or
// the client or store goes (false).
func (c *conn) waitSealed(ids []ObjectID, deadline <-chan time.Time) bool {
	for {
		c.s.mu.Lock()
		wake, closed := c.s.sealed, c.s.closed
		c.s.mu.Unlock()
		if closed {
			return false
		}
		if c.allSealed(ids) {
			return true
		}
		select {
		case <-wake:
		case <-deadline:
			return true
		case <-c.ctx.Done():
			return false
		}
	}
}

func (c *conn) allSealed(ids []ObjectID) bool {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	for _, id := range ids {
		if o := c.s.objects[id]; o == nil || !o.contained() {
			return false
		}
	}
	return true
}

// finishGet takes a reference to every present object (restoring spilled
// ones first) and sends the reply.
func (c *conn) finishGet(ids []ObjectID) {
	s := c.s
	s.mu.Lock()
	for {
		if s.closed || c.gone {
			s.mu.Unlock()
			return
		}
		// Hold what is in memory now, so that restoring the rest cannot
		// evict it.
		for _, id := range ids {
			if o := s.objects[id]; o != nil && o.contained() && o.inMemory() {
				s.holdLocked(c, o)
			}
		}
		wait := s.restoreLocked(ids)
		if wait == nil {
			break
		}
		s.mu.Unlock()
		select {
		case <-wait:
		case <-c.ctx.Done():
			return
		}
		s.mu.Lock()
	}
	specs := make([]spec, len(ids))
	any := false
	for i, id := range ids {
		o := s.objects[id]
		if o == nil || !o.contained() || !o.inMemory() {
			continue
		}
		s.holdLocked(c, o)
		specs[i] = o.spec()
		any = true
	}
	s.mu.Unlock()
	body := encodeGetReply(ids, specs, c.storeFd(), c.mmapSize())
	if err := c.reply(fb.MessageTypePlasmaGetReply, body, any); err != nil {
		c.log.Debug("plasma get reply failed", "err", err)
		c.nc.Close()
	}
}

package raylet

import (
	"cmp"
	"slices"
)

// dispatchQueue holds the tasks waiting for resources, grouped by request
// shape (Ray's scheduling classes). Within a class tasks are FIFO; across
// classes the oldest head goes first. A dispatch pass stops looking at a
// class at its first task that does not fit (every later one has the same
// shape and cannot fit either while resources only shrink), so a pass costs
// O(grants × classes) however deep the queue is.
type dispatchQueue struct {
	classes map[string]*taskClass
	seq     uint64
}

type taskClass struct {
	tasks []queued
}

type queued struct {
	t   *task
	seq uint64
}

// push appends t to its class.
func (q *dispatchQueue) push(t *task) {
	if q.classes == nil {
		q.classes = map[string]*taskClass{}
	}
	key := t.shapeKey()
	c := q.classes[key]
	if c == nil {
		c = &taskClass{}
		q.classes[key] = c
	}
	q.seq++
	c.tasks = append(c.tasks, queued{t: t, seq: q.seq})
}

// pass offers queued tasks to try in order (oldest class head first). try
// reports whether it took the task; a class whose head is refused is not
// offered again in this pass. Cancelled tasks are dropped on the way.
func (q *dispatchQueue) pass(try func(*task) bool) {
	blocked := make(map[*taskClass]bool, len(q.classes))
	for {
		var best *taskClass
		var bestKey string
		for key, c := range q.classes {
			for len(c.tasks) > 0 && c.tasks[0].t.cancelled {
				c.pop()
			}
			if len(c.tasks) == 0 {
				delete(q.classes, key)
				continue
			}
			if blocked[c] {
				continue
			}
			if best == nil || c.tasks[0].seq < best.tasks[0].seq {
				best, bestKey = c, key
			}
		}
		if best == nil {
			return
		}
		if !try(best.tasks[0].t) {
			blocked[best] = true
			continue
		}
		best.pop()
		if len(best.tasks) == 0 {
			delete(q.classes, bestKey)
		}
	}
}

// len counts the queued tasks (cancelled ones included until dropped).
func (q *dispatchQueue) len() int {
	n := 0
	for _, c := range q.classes {
		n += len(c.tasks)
	}
	return n
}

func (c *taskClass) pop() {
	c.tasks[0] = queued{}
	c.tasks = c.tasks[1:]
}

// remove takes the queued tasks match selects out of the queue, oldest
// first.
func (q *dispatchQueue) remove(match func(*task) bool) []*task {
	var out []queued
	for key, c := range q.classes {
		rest := c.tasks[:0]
		for _, e := range c.tasks {
			if match(e.t) {
				out = append(out, e)
				continue
			}
			rest = append(rest, e)
		}
		clear(c.tasks[len(rest):])
		c.tasks = rest
		if len(rest) == 0 {
			delete(q.classes, key)
		}
	}
	slices.SortFunc(out, func(a, b queued) int { return cmp.Compare(a.seq, b.seq) })
	tasks := make([]*task, len(out))
	for i, e := range out {
		tasks[i] = e.t
	}
	return tasks
}

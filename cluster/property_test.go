package cluster

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/gray-cluster/gray/gcs"
	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/taskspec"
)

// propTask is the model's view of one submitted task.
type propTask struct {
	spec       *taskspec.TaskSpec
	maxRetries int // as submitted by the client
	// on is the member running the current attempt (nil: none).
	on *fakeMember
	// lastRetries is the MaxRetries the current (or last) attempt carried.
	lastRetries int
	attempts    int
	done        bool   // finished normally on its node
	sealed      string // error class its returns were sealed with
}

type propModel struct {
	t     *testing.T
	h     *harness
	rnd   *rand.Rand
	log   []string
	state map[*fakeMember]gcs.NodeState
	byNum map[int]*fakeMember // current member of each node number
	tasks []*propTask
	byID  map[ids.TaskID]*propTask
}

func (m *propModel) fail(format string, args ...any) {
	m.t.Helper()
	m.t.Fatalf("%s\nsteps:\n  %s", fmt.Sprintf(format, args...), strings.Join(m.log, "\n  "))
}

func (m *propModel) newMember(n int, cpus float64) *fakeMember {
	f := newFake(n, cpu(cpus))
	f.check = func(kind string) {
		if st := m.state[f]; st != gcs.NodeAlive {
			m.fail("%s sent to node %d in state %s", kind, n, st)
		}
	}
	m.byNum[n] = f
	m.state[f] = gcs.NodeAlive
	m.h.c.Add(f, gcs.NodeInfo{Total: cpu(cpus)})
	return f
}

// members lists the current members in a given state (any if st is "").
func (m *propModel) members(st gcs.NodeState) []int {
	var out []int
	for n, f := range m.byNum {
		if st == "" && m.state[f] != gcs.NodeDead || m.state[f] == st {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// absorb records the submits members received since the last call.
func (m *propModel) absorb() {
	for _, n := range slices.Sorted(maps.Keys(m.byNum)) {
		f := m.byNum[n]
		for {
			var o op
			select {
			case o = <-f.ch:
			default:
			}
			if o.Kind == "" {
				break
			}
			if o.Kind != "submit" {
				continue
			}
			pt := m.byID[o.Task]
			if pt == nil {
				m.fail("node %d got an unknown task", n)
			}
			switch {
			case pt.on != nil:
				m.fail("task %s submitted to node %d while its attempt runs on %s", o.Task.Hex()[:8], n, short(pt.on.id))
			case pt.sealed != "":
				m.fail("task %s submitted after it was sealed with %s", o.Task.Hex()[:8], pt.sealed)
			case pt.done:
				m.fail("finished task %s submitted again", o.Task.Hex()[:8])
			}
			if pt.attempts > 0 {
				want := pt.lastRetries - 1
				if pt.lastRetries < 0 {
					want = -1
				}
				if o.MaxRetries != want {
					m.fail("task %s retried with MaxRetries %d, want %d", o.Task.Hex()[:8], o.MaxRetries, want)
				}
			} else if o.MaxRetries != pt.maxRetries {
				m.fail("task %s first submitted with MaxRetries %d, want %d", o.Task.Hex()[:8], o.MaxRetries, pt.maxRetries)
			}
			pt.on, pt.lastRetries = f, o.MaxRetries
			pt.attempts++
			if pt.maxRetries >= 0 && pt.attempts > pt.maxRetries+1 {
				m.fail("task %s ran %d attempts with %d retries", o.Task.Hex()[:8], pt.attempts, pt.maxRetries)
			}
		}
	}
	for _, pt := range m.tasks {
		if pt.sealed != "" {
			continue
		}
		name, _ := m.h.sealedError(pt.spec.ReturnIDs()[0])
		if name == "" {
			continue
		}
		if pt.on != nil {
			m.fail("task %s sealed with %s while its attempt runs on %s", pt.spec.TaskID.Hex()[:8], name, short(pt.on.id))
		}
		pt.sealed = name
	}
}

// parked counts the tasks waiting at the head.
func (m *propModel) parked() map[ids.TaskID]int {
	m.h.c.mu.Lock()
	defer m.h.c.mu.Unlock()
	out := map[ids.TaskID]int{}
	for _, w := range m.h.c.pending {
		if w.task != nil {
			out[w.task.TaskID]++
		}
	}
	return out
}

// check asserts each task is in exactly one place: running on a member that
// is not dead, parked once, finished, or sealed.
func (m *propModel) check() {
	parked := m.parked()
	for _, pt := range m.tasks {
		where := 0
		if pt.on != nil {
			where++
			if m.state[pt.on] == gcs.NodeDead {
				m.fail("task %s still counted on dead node %s", pt.spec.TaskID.Hex()[:8], short(pt.on.id))
			}
		}
		if n := parked[pt.spec.TaskID]; n > 0 {
			where += n
		}
		if pt.done {
			where++
		}
		if pt.sealed != "" {
			where++
		}
		if where != 1 {
			m.fail("task %s is in %d places (on=%v parked=%d done=%v sealed=%q)",
				pt.spec.TaskID.Hex()[:8], where, pt.on != nil, parked[pt.spec.TaskID], pt.done, pt.sealed)
		}
	}
}

func (m *propModel) step() {
	r := m.rnd
	switch k := r.IntN(20); {
	case k < 3: // a node joins (a new one, or a dead one's provider again)
		n := r.IntN(6)
		if f := m.byNum[n]; f != nil && m.state[f] != gcs.NodeDead {
			return
		}
		cpus := []float64{1, 2, 4, 8}[r.IntN(4)]
		m.log = append(m.log, fmt.Sprintf("add node %d cpu %v", n, cpus))
		m.newMember(n, cpus)
	case k < 5: // suspect / alive
		live := m.members("")
		if len(live) == 0 {
			return
		}
		n := live[r.IntN(len(live))]
		st := gcs.NodeSuspect
		if r.IntN(2) == 0 {
			st = gcs.NodeAlive
		}
		m.log = append(m.log, fmt.Sprintf("node %d %s", n, st))
		m.state[m.byNum[n]] = st
		m.h.c.SetState(m.byNum[n].id, st)
	case k < 7: // a node dies with its running tasks
		live := m.members("")
		if len(live) == 0 {
			return
		}
		n := live[r.IntN(len(live))]
		f := m.byNum[n]
		var lost []*taskspec.TaskSpec
		var lostPT []*propTask
		left := map[*propTask]int{} // retries the lost attempt had left
		for _, pt := range m.tasks {
			if pt.on == f {
				lost = append(lost, pt.spec)
				lostPT = append(lostPT, pt)
				left[pt] = pt.lastRetries
				pt.on = nil
			}
		}
		m.log = append(m.log, fmt.Sprintf("node %d dies with %d tasks", n, len(lost)))
		m.state[f] = gcs.NodeDead
		m.h.c.NodeDead(f.id, "killed", Lost{Tasks: lost})
		m.absorb()
		parked := m.parked()
		for _, pt := range lostPT {
			id := pt.spec.TaskID.Hex()[:8]
			if left[pt] == 0 {
				if pt.sealed != "ray.exceptions.NodeDiedError" {
					m.fail("task %s without retries lost with node %d: sealed %q, want NodeDiedError", id, n, pt.sealed)
				}
				continue
			}
			if pt.sealed != "" {
				m.fail("task %s with %d retries left sealed with %s", id, left[pt], pt.sealed)
			}
			if pt.on == nil && parked[pt.spec.TaskID] == 0 {
				m.fail("task %s with retries lost with node %d neither resubmitted nor parked", id, n)
			}
		}
	case k < 9: // a running task finishes
		var running []*propTask
		for _, pt := range m.tasks {
			if pt.on != nil {
				running = append(running, pt)
			}
		}
		if len(running) == 0 {
			return
		}
		pt := running[r.IntN(len(running))]
		m.log = append(m.log, fmt.Sprintf("task %s finishes", pt.spec.TaskID.Hex()[:8]))
		pt.on, pt.done = nil, true
	case k < 12: // the head retries parked work
		m.log = append(m.log, "retry pending")
		m.h.c.retryPending()
	default: // a client submits a task
		res := cpu([]float64{0.5, 1, 2, 4, 8, 16}[r.IntN(6)])
		retries := r.IntN(5) - 1
		var s taskspec.Scheduling
		switch r.IntN(3) {
		case 1:
			s.Kind = "SPREAD"
		case 2:
			s = affinity(nodeID(r.IntN(6)), true)
		}
		spec := m.h.task("p", res, retries, s)
		pt := &propTask{spec: spec, maxRetries: retries}
		m.tasks = append(m.tasks, pt)
		m.byID[spec.TaskID] = pt
		m.log = append(m.log, fmt.Sprintf("submit %s cpu %v retries %d %q", spec.TaskID.Hex()[:8], res["CPU"], retries, s.Kind))
		_ = m.h.c.Submit(spec)
	}
	m.absorb()
	m.check()
}

// TestPropertyRecovery drives random node joins, state changes, deaths and
// task submissions: every attempt of a task goes to exactly one node that is
// alive when it gets it, a task's returns are sealed with an error only when
// no attempt runs and never before the retries are spent, and once a node
// that fits everything joins nothing is left waiting.
func TestPropertyRecovery(t *testing.T) {
	seeds := 300
	if testing.Short() {
		seeds = 30
	}
	for seed := range seeds {
		h := newHarness(t)
		m := &propModel{
			t: t, h: h, rnd: rand.New(rand.NewPCG(uint64(seed), 7)),
			state: map[*fakeMember]gcs.NodeState{}, byNum: map[int]*fakeMember{}, byID: map[ids.TaskID]*propTask{},
		}
		m.log = append(m.log, fmt.Sprintf("seed %d", seed))
		for range 80 {
			m.step()
		}
		// Settle: every node alive again, and one that fits anything.
		for _, n := range m.members(gcs.NodeSuspect) {
			m.state[m.byNum[n]] = gcs.NodeAlive
			h.c.SetState(m.byNum[n].id, gcs.NodeAlive)
		}
		m.newMember(9, 64)
		h.c.retryPending()
		m.absorb()
		m.check()
		if n := h.pendingLen(); n != 0 {
			m.fail("%d tasks still parked after a node that fits everything joined", n)
		}
		for _, pt := range m.tasks {
			if pt.sealed != "" && pt.sealed != "ray.exceptions.NodeDiedError" {
				m.fail("task %s sealed with %s", pt.spec.TaskID.Hex()[:8], pt.sealed)
			}
		}
	}
}

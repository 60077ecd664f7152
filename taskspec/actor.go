package taskspec

import "github.com/gray-cluster/gray/internal/ids"

// ActorSpec describes an actor to create.
type ActorSpec struct {
	ActorID  ids.ActorID
	JobID    ids.JobID
	Name     string // class name
	ClassID  ids.ObjectID
	Args     [][]byte
	Deps     []ids.ObjectID
	Pins     []ids.ObjectID
	SelfRefs map[string]string
	Baseline []byte
	// Resources are held for the actor's lifetime.
	Resources      map[string]float64
	MaxConcurrency int
	// MaxRestarts and MaxTaskRetries follow Ray: -1 means unlimited.
	MaxRestarts    int
	MaxTaskRetries int
	Env            RuntimeEnv
	PlacementGroup string
	BundleIndex    int
	// ConcurrencyGroups maps group names to their thread/coroutine limits.
	ConcurrencyGroups map[string]int
	Scheduling        Scheduling
}

// ActorCall is one method call.
type ActorCall struct {
	TaskID     ids.TaskID
	ActorID    ids.ActorID
	JobID      ids.JobID
	Method     string
	Args       [][]byte
	Deps       []ids.ObjectID
	Pins       []ids.ObjectID
	NumReturns int
	// ConcurrencyGroup overrides the method's declared group.
	ConcurrencyGroup string

	// Attempts counts the retries it has had (worker crashes, node deaths).
	Attempts int
}

// ReturnIDs are the ids of the call's return objects.
func (c *ActorCall) ReturnIDs() []ids.ObjectID { return c.TaskID.ReturnIDs(c.NumReturns) }

// ActorState is an actor's lifecycle state, named as in Ray's actor table.
type ActorState string

// Actor states.
const (
	ActorPending    ActorState = "PENDING_CREATION"
	ActorAlive      ActorState = "ALIVE"
	ActorRestarting ActorState = "RESTARTING"
	ActorDead       ActorState = "DEAD"
)

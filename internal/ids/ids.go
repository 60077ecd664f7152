// Package ids mints and formats Ray-shaped identifiers: 4-byte JobIDs, 16-byte
// ActorIDs, 24-byte TaskIDs, 28-byte ObjectIDs and 28-byte NodeIDs, laid out
// the way Ray's own ids are so that stock clients accept and decode them.
package ids

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
)

// Sizes of Ray's binary ids.
const (
	JobIDSize    = 4
	ActorIDSize  = 16
	TaskIDSize   = 24
	ObjectIDSize = 28
	NodeIDSize   = 28
)

// ErrBadID is returned when bytes do not have the shape of the requested id.
var ErrBadID = errors.New("malformed id")

// JobID identifies one client session (a Ray job).
type JobID [JobIDSize]byte

// ActorID is 12 unique bytes followed by the JobID.
type ActorID [ActorIDSize]byte

// TaskID is 8 unique bytes followed by an ActorID (nil actor for normal tasks).
type TaskID [TaskIDSize]byte

// ObjectID is a TaskID followed by a little-endian 4-byte return index.
type ObjectID [ObjectIDSize]byte

// NodeID identifies one raylet.
type NodeID [NodeIDSize]byte

func random(b []byte) {
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("ids: crypto/rand failed: %v", err))
	}
}

// JobFromInt builds the JobID Ray derives from a job counter: Ray's
// JobID::FromInt copies the uint32 in host (little-endian) order, so job 1 is
// "01000000".
func JobFromInt(n uint32) JobID {
	var j JobID
	binary.LittleEndian.PutUint32(j[:], n)
	return j
}

// Int is the job counter the id was made from (the inverse of JobFromInt).
func (j JobID) Int() uint32 { return binary.LittleEndian.Uint32(j[:]) }

// NewActorID mints an actor id for a job.
func NewActorID(job JobID) ActorID {
	var a ActorID
	random(a[:12])
	copy(a[12:], job[:])
	return a
}

// NilActorFor is the actor id Ray uses inside the TaskIDs of normal tasks.
func NilActorFor(job JobID) ActorID {
	var a ActorID
	for i := 0; i < 12; i++ {
		a[i] = 0xff
	}
	copy(a[12:], job[:])
	return a
}

// NewTaskID mints a task id for a normal task (actor nil) or an actor task.
func NewTaskID(actor ActorID) TaskID {
	var t TaskID
	random(t[:8])
	copy(t[8:], actor[:])
	return t
}

// Job returns the job the actor belongs to.
func (a ActorID) Job() JobID {
	var j JobID
	copy(j[:], a[12:])
	return j
}

// Job returns the job the task belongs to.
func (t TaskID) Job() JobID {
	var j JobID
	copy(j[:], t[20:])
	return j
}

// ReturnID is the id of the task's i-th return value (1-based, as in Ray).
func (t TaskID) ReturnID(i int) ObjectID {
	var o ObjectID
	copy(o[:], t[:])
	binary.LittleEndian.PutUint32(o[24:], uint32(i))
	return o
}

// ReturnIDs are the ids of the task's first n return values.
func (t TaskID) ReturnIDs(n int) []ObjectID {
	out := make([]ObjectID, n)
	for i := range out {
		out[i] = t.ReturnID(i + 1)
	}
	return out
}

// Task returns the id of the task that created the object.
func (o ObjectID) Task() TaskID {
	var t TaskID
	copy(t[:], o[:24])
	return t
}

// NewNodeID mints a node id.
func NewNodeID() NodeID {
	var n NodeID
	random(n[:])
	return n
}

// ObjectFromBytes validates and converts wire bytes.
func ObjectFromBytes(b []byte) (ObjectID, error) {
	var o ObjectID
	if len(b) != ObjectIDSize {
		return o, fmt.Errorf("%w: object id has %d bytes, want %d", ErrBadID, len(b), ObjectIDSize)
	}
	copy(o[:], b)
	return o, nil
}

// ActorFromBytes validates and converts wire bytes.
func ActorFromBytes(b []byte) (ActorID, error) {
	var a ActorID
	if len(b) != ActorIDSize {
		return a, fmt.Errorf("%w: actor id has %d bytes, want %d", ErrBadID, len(b), ActorIDSize)
	}
	copy(a[:], b)
	return a, nil
}

func (j JobID) Hex() string    { return hex.EncodeToString(j[:]) }
func (a ActorID) Hex() string  { return hex.EncodeToString(a[:]) }
func (t TaskID) Hex() string   { return hex.EncodeToString(t[:]) }
func (o ObjectID) Hex() string { return hex.EncodeToString(o[:]) }
func (n NodeID) Hex() string   { return hex.EncodeToString(n[:]) }

func (o ObjectID) String() string { return "ObjectRef(" + o.Hex() + ")" }

// TaskFromBytes validates and converts wire bytes.
func TaskFromBytes(b []byte) (TaskID, error) {
	var t TaskID
	if len(b) != TaskIDSize {
		return t, fmt.Errorf("%w: task id has %d bytes, want %d", ErrBadID, len(b), TaskIDSize)
	}
	copy(t[:], b)
	return t, nil
}

// JobFromBytes validates and converts wire bytes.
func JobFromBytes(b []byte) (JobID, error) {
	var j JobID
	if len(b) != JobIDSize {
		return j, fmt.Errorf("%w: job id has %d bytes, want %d", ErrBadID, len(b), JobIDSize)
	}
	copy(j[:], b)
	return j, nil
}

// NodeFromBytes validates and converts wire bytes.
func NodeFromBytes(b []byte) (NodeID, error) {
	var n NodeID
	if len(b) != NodeIDSize {
		return n, fmt.Errorf("%w: node id has %d bytes, want %d", ErrBadID, len(b), NodeIDSize)
	}
	copy(n[:], b)
	return n, nil
}

// NodeFromHex parses a hex node id.
func NodeFromHex(s string) (NodeID, error) {
	b, err := hex.DecodeString(s)
	if err != nil {
		return NodeID{}, fmt.Errorf("%w: node id: %v", ErrBadID, err)
	}
	return NodeFromBytes(b)
}

// Bytes returns the id's bytes.
func (j JobID) Bytes() []byte { return j[:] }

// Bytes returns the id's bytes.
func (a ActorID) Bytes() []byte { return a[:] }

// Bytes returns the id's bytes.
func (t TaskID) Bytes() []byte { return t[:] }

// Bytes returns the id's bytes.
func (o ObjectID) Bytes() []byte { return o[:] }

// Bytes returns the id's bytes.
func (n NodeID) Bytes() []byte { return n[:] }

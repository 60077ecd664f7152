package ids

import (
	"bytes"
	"encoding/hex"
	"errors"
	"math/rand"
	"testing"
	"testing/quick"
)

func TestSizes(t *testing.T) {
	tests := []struct {
		name string
		got  int
		want int
	}{
		// Ray 2.60: JobID 4, ActorID 16, TaskID 24, ObjectID 28, NodeID 28.
		{"JobID", len(JobID{}), 4},
		{"ActorID", len(ActorID{}), 16},
		{"TaskID", len(TaskID{}), 24},
		{"ObjectID", len(ObjectID{}), 28},
		{"NodeID", len(NodeID{}), 28},
		{"JobID hex", len(JobFromInt(1).Hex()), 8},
		{"ObjectID hex", len(ObjectID{}.Hex()), 56},
	}
	for _, tc := range tests {
		if tc.got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, tc.got, tc.want)
		}
	}
}

func TestJobFromIntMatchesRay(t *testing.T) {
	// Values printed by ray 2.60's ray.JobID.from_int(n).hex().
	tests := []struct {
		n    uint32
		want string
	}{
		{1, "01000000"},
		{2, "02000000"},
		{258, "02010000"},
		{0xdeadbeef, "efbeadde"},
	}
	for _, tc := range tests {
		j := JobFromInt(tc.n)
		if j.Hex() != tc.want {
			t.Errorf("JobFromInt(%d) = %s, want %s", tc.n, j.Hex(), tc.want)
		}
		if j.Int() != tc.n {
			t.Errorf("JobFromInt(%d).Int() = %d", tc.n, j.Int())
		}
	}
	if err := quick.Check(func(n uint32) bool { return JobFromInt(n).Int() == n }, nil); err != nil {
		t.Error(err)
	}
}

func TestJobEmbedding(t *testing.T) {
	rng := rand.New(rand.NewSource(3))
	for i := 0; i < 200; i++ {
		job := JobFromInt(rng.Uint32())
		actor := NewActorID(job)
		if actor.Job() != job {
			t.Fatalf("NewActorID(%s).Job() = %s", job.Hex(), actor.Job().Hex())
		}
		nilActor := NilActorFor(job)
		if want := "ffffffffffffffffffffffff" + job.Hex(); nilActor.Hex() != want {
			t.Fatalf("NilActorFor(%s) = %s, want %s (Ray's ActorID::NilFromJob)", job.Hex(), nilActor.Hex(), want)
		}
		for _, a := range []ActorID{actor, nilActor} {
			task := NewTaskID(a)
			if task.Job() != job {
				t.Fatalf("task %s: Job() = %s, want %s", task.Hex(), task.Job().Hex(), job.Hex())
			}
			if !bytes.Equal(task[8:], a[:]) {
				t.Fatalf("task %s does not end with its actor %s", task.Hex(), a.Hex())
			}
		}
	}
}

func TestMintedIDsDiffer(t *testing.T) {
	job := JobFromInt(1)
	seen := map[string]bool{}
	for i := 0; i < 1000; i++ {
		for _, h := range []string{NewActorID(job).Hex(), NewTaskID(NilActorFor(job)).Hex(), NewNodeID().Hex()} {
			if seen[h] {
				t.Fatalf("id %s minted twice", h)
			}
			seen[h] = true
		}
	}
}

func TestReturnIDRoundTrip(t *testing.T) {
	f := func(task TaskID, i uint16) bool {
		idx := int(i) + 1
		o := task.ReturnID(idx)
		if o.Task() != task {
			return false
		}
		// The index is little-endian after the task id, as in Ray's
		// ObjectID::FromIndex.
		return o[24] == byte(idx) && o[25] == byte(idx>>8) && o[26] == 0 && o[27] == 0
	}
	if err := quick.Check(f, &quick.Config{Rand: rand.New(rand.NewSource(1))}); err != nil {
		t.Error(err)
	}
	task := NewTaskID(NilActorFor(JobFromInt(5)))
	if task.ReturnID(1) == task.ReturnID(2) {
		t.Error("return ids 1 and 2 are equal")
	}
	if got := task.ReturnID(1).Task().Job(); got != JobFromInt(5) {
		t.Errorf("job of a return id = %s", got.Hex())
	}
}

func TestFromBytes(t *testing.T) {
	for _, n := range []int{0, 1, 16, 24, 27, 28, 29, 56} {
		raw := make([]byte, n)
		for i := range raw {
			raw[i] = byte(i + 1)
		}
		o, err := ObjectFromBytes(raw)
		if n == ObjectIDSize {
			if err != nil || !bytes.Equal(o[:], raw) {
				t.Errorf("ObjectFromBytes(%d bytes) = %x, %v", n, o, err)
			}
		} else if !errors.Is(err, ErrBadID) {
			t.Errorf("ObjectFromBytes(%d bytes) error = %v, want ErrBadID", n, err)
		}
		a, err := ActorFromBytes(raw)
		if n == ActorIDSize {
			if err != nil || !bytes.Equal(a[:], raw) {
				t.Errorf("ActorFromBytes(%d bytes) = %x, %v", n, a, err)
			}
		} else if !errors.Is(err, ErrBadID) {
			t.Errorf("ActorFromBytes(%d bytes) error = %v, want ErrBadID", n, err)
		}
	}
	// The result does not alias the input.
	raw := bytes.Repeat([]byte{7}, ObjectIDSize)
	o, _ := ObjectFromBytes(raw)
	raw[0] = 9
	if o[0] != 7 {
		t.Error("ObjectFromBytes aliases its input")
	}
}

func TestHexAndString(t *testing.T) {
	var o ObjectID
	for i := range o {
		o[i] = byte(i)
	}
	if got, _ := hex.DecodeString(o.Hex()); !bytes.Equal(got, o[:]) {
		t.Errorf("Hex does not round-trip: %s", o.Hex())
	}
	if want := "ObjectRef(" + o.Hex() + ")"; o.String() != want {
		t.Errorf("String = %s, want %s", o.String(), want)
	}
}

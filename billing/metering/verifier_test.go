package metering

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type holders map[[2]string]bool

func (h holders) check(node, lease string) bool { return h[[2]string{node, lease}] }

func nodeRec(node, lease string, seq uint64) UsageRecord {
	return UsageRecord{ID: RecordID(node, lease, seq), NodeID: node, JobID: "job", LeaseID: lease,
		Resource: "CPU", Amount: 1, Start: t0, End: t0.Add(time.Minute), Seq: seq}
}

func newTestVerifier(t *testing.T) (*Verifier, map[string]ed25519.PrivateKey) {
	t.Helper()
	v := NewVerifier()
	privs := map[string]ed25519.PrivateKey{}
	for _, n := range []string{"n1", "n2"} {
		pub, priv := key(n)
		if err := v.AddNode(n, pub); err != nil {
			t.Fatal(err)
		}
		privs[n] = priv
	}
	return v, privs
}

func TestVerifierAccept(t *testing.T) {
	v, privs := newTestVerifier(t)
	_, strangerPriv := key("n3")
	leases := holders{{"n1", "L1"}: true, {"n2", "L2"}: true}.check

	steps := []struct {
		name   string
		sr     SignedRecord
		leases LeaseChecker
		want   error
	}{
		{"first record", Sign(nodeRec("n1", "L1", 1), privs["n1"]), leases, nil},
		{"replay", Sign(nodeRec("n1", "L1", 1), privs["n1"]), leases, ErrDuplicate},
		{"next seq", Sign(nodeRec("n1", "L1", 2), privs["n1"]), leases, nil},
		{"unknown node", Sign(nodeRec("n3", "L1", 1), strangerPriv), leases, ErrUnknownNode},
		{"forged: n1's record signed by n2", Sign(nodeRec("n1", "L1", 3), privs["n2"]), leases, ErrBadSignature},
		{"forged replay still bad signature", Sign(nodeRec("n1", "L1", 1), privs["n2"]), leases, ErrBadSignature},
		{"not lease holder", Sign(nodeRec("n2", "L1", 1), privs["n2"]), leases, ErrNotLeaseHolder},
		{"nil checker", Sign(nodeRec("n2", "L2", 1), privs["n2"]), nil, ErrNotLeaseHolder},
		{"after failures it can still be accepted", Sign(nodeRec("n2", "L2", 1), privs["n2"]), leases, nil},
		{"bad record", Sign(UsageRecord{NodeID: "n1"}, privs["n1"]), leases, ErrBadRecord},
	}
	for _, s := range steps {
		err := v.Accept(s.sr, s.leases)
		if !errors.Is(err, s.want) || (s.want == nil) != (err == nil) {
			t.Fatalf("%s: Accept() = %v, want %v", s.name, err, s.want)
		}
	}
	if !v.Seen(RecordID("n1", "L1", 2)) || v.Seen(RecordID("n1", "L1", 3)) || v.Seen(RecordID("n2", "L1", 1)) {
		t.Error("seen set holds a rejected record or misses an accepted one")
	}

	v.RemoveNode("n1")
	if err := v.Accept(Sign(nodeRec("n1", "L1", 9), privs["n1"]), leases); !errors.Is(err, ErrUnknownNode) {
		t.Errorf("after RemoveNode: %v, want ErrUnknownNode", err)
	}
	v.MarkSeen(RecordID("n2", "L2", 5))
	if err := v.Accept(Sign(nodeRec("n2", "L2", 5), privs["n2"]), leases); !errors.Is(err, ErrDuplicate) {
		t.Errorf("after MarkSeen: %v, want ErrDuplicate", err)
	}
}

func TestVerifierAddNode(t *testing.T) {
	v := NewVerifier()
	pub, _ := key("n")
	for _, tt := range []struct {
		node string
		pub  ed25519.PublicKey
		want error
	}{
		{"n", pub, nil},
		{"", pub, ErrBadKey},
		{"n", pub[:5], ErrBadKey},
		{"n", nil, ErrBadKey},
	} {
		if err := v.AddNode(tt.node, tt.pub); !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
			t.Errorf("AddNode(%q, %d bytes) = %v, want %v", tt.node, len(tt.pub), err, tt.want)
		}
	}
	// The verifier keeps its own copy of the key.
	pub2, priv2 := key("m")
	if err := v.AddNode("m", pub2); err != nil {
		t.Fatal(err)
	}
	pub2[0] ^= 1
	if err := v.Accept(Sign(nodeRec("m", "L", 1), priv2), func(string, string) bool { return true }); err != nil {
		t.Errorf("Accept after caller mutated its key slice: %v", err)
	}
}

// Many goroutines sending the same records: each ID is accepted exactly once.
func TestVerifierConcurrentReplays(t *testing.T) {
	v, privs := newTestVerifier(t)
	const records, senders = 50, 8
	var recs []SignedRecord
	for i := range records {
		recs = append(recs, Sign(nodeRec("n1", fmt.Sprint("L", i%5), uint64(i)), privs["n1"]))
	}
	var accepted [records]atomic.Int32
	var wg sync.WaitGroup
	for s := range senders {
		wg.Go(func() {
			for i := range records {
				j := (i + s*7) % records
				err := v.Accept(recs[j], func(string, string) bool { return true })
				switch {
				case err == nil:
					accepted[j].Add(1)
				case !errors.Is(err, ErrDuplicate):
					t.Errorf("record %d: %v", j, err)
				}
			}
		})
	}
	wg.Wait()
	for i := range accepted {
		if n := accepted[i].Load(); n != 1 {
			t.Errorf("record %d accepted %d times", i, n)
		}
	}
}

//go:build linux

package gcs

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The crash test's child: TestStoreCrash runs this test binary again with
// these variables set; the child applies the seeded batches one by one and
// writes each committed batch's number to fd 3, until it is killed.
const (
	crashStoreEnv = "GRAY_GCS_CRASH_STORE" // "bolt:PATH" or "redis:URL"
	crashSeedEnv  = "GRAY_GCS_CRASH_SEED"
)

// crashBatches is the seeded sequence of batches, the same in the child
// and the parent: bigger ones than the property test's, so that a kill
// often lands inside a commit.
func crashBatches(seed uint64, n int) [][]Op {
	r := rand.New(rand.NewPCG(seed, 0xc4a5))
	out := make([][]Op, n)
	for i := range out {
		out[i] = genBatch(r, 24, false)
	}
	return out
}

const crashMaxBatches = 400

func openCrashStore(spec string) (Store, error) {
	if path, ok := strings.CutPrefix(spec, "bolt:"); ok {
		return OpenBoltStore(path)
	}
	return OpenRedisStore(context.Background(), strings.TrimPrefix(spec, "redis:"))
}

func TestStoreCrashChild(t *testing.T) {
	spec := os.Getenv(crashStoreEnv)
	if spec == "" {
		t.Skip("the child of TestStoreCrash")
	}
	seed, err := strconv.ParseUint(os.Getenv(crashSeedEnv), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	s, err := openCrashStore(spec)
	if err != nil {
		t.Fatal(err)
	}
	report := os.NewFile(3, "report")
	for i, ops := range crashBatches(seed, crashMaxBatches) {
		if _, err := s.Apply(bg, ops...); err != nil {
			t.Fatalf("batch %d: %v", i, err)
		}
		if _, err := fmt.Fprintln(report, i+1); err != nil {
			t.Fatal(err)
		}
	}
	t.Fatal("not killed after every batch") // the parent kills long before
}

// A child process applies random batches to a bolt file or a Redis
// namespace and reports each commit; it is SIGKILLed after a random number
// of reports. Reopened, the store equals the model after the last reported
// batch, or after the one in flight: never anything in between.
func TestStoreCrash(t *testing.T) {
	if os.Getenv(crashStoreEnv) != "" {
		t.Skip("in the child")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, backend := range []string{"bolt", "redis"} {
		t.Run(backend, func(t *testing.T) {
			r := rand.New(rand.NewPCG(uint64(len(backend)), 77))
			inFlight := 0
			for round := range 10 {
				seed := uint64(round*1000 + len(backend))
				var spec string
				if backend == "bolt" {
					spec = "bolt:" + filepath.Join(t.TempDir(), StoreFile)
				} else {
					spec = "redis:" + redisNamespaceURL(t)
				}
				killAt := r.IntN(40)
				delay := time.Duration(r.IntN(4000)) * time.Microsecond
				last := runCrashChild(t, exe, spec, seed, killAt, delay)
				batches := crashBatches(seed, last+1)
				before := model{}
				for _, ops := range batches[:last] {
					before.apply(ops)
				}
				after := before.clone()
				after.apply(batches[last])

				s, err := openCrashStore(spec)
				if err != nil {
					t.Fatalf("round %d: reopen after the kill: %v", round, err)
				}
				errBefore := diffTables(s, before)
				errAfter := diffTables(s, after)
				if errBefore != nil && errAfter != nil {
					s.Close()
					t.Fatalf("round %d (killed after %d reports): the store is neither the state after batch %d (%v) nor after %d (%v)",
						round, killAt, last, errBefore, last+1, errAfter)
				}
				if errBefore != nil {
					inFlight++
					before = after
				}
				// The store still works after the crash.
				ops := []Op{Put("kv", []byte("after-crash"), []byte("ok"))}
				if _, err := s.Apply(bg, ops...); err != nil {
					t.Fatalf("round %d: write after the crash: %v", round, err)
				}
				before.apply(ops)
				if err := diffTables(s, before); err != nil {
					t.Fatalf("round %d: after a write after the crash: %v", round, err)
				}
				s.Close()
			}
			t.Logf("%s: 10 kills, %d of them with the batch in flight committed", backend, inFlight)
		})
	}
}

// runCrashChild starts the child, kills it delay after it has reported
// killAt commits (a random point in a later batch, not a handshake), and
// returns the number of the last commit it reported.
func runCrashChild(t *testing.T, exe, spec string, seed uint64, killAt int, delay time.Duration) int {
	t.Helper()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	var stderr syncBuf
	cmd := exec.Command(exe, "-test.run=^TestStoreCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashStoreEnv+"="+spec, crashSeedEnv+"="+strconv.FormatUint(seed, 10))
	cmd.ExtraFiles = []*os.File{pw}
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	last := 0
	var kill *time.Timer
	defer func() {
		if kill != nil {
			kill.Stop()
		}
	}()
	sc := bufio.NewScanner(pr)
	for {
		if kill == nil && last >= killAt {
			kill = time.AfterFunc(delay, func() { cmd.Process.Kill() })
		}
		if !sc.Scan() {
			break
		}
		n, err := strconv.Atoi(sc.Text())
		if err != nil || n != last+1 {
			t.Fatalf("child reported %q after %d", sc.Text(), last)
		}
		last = n
	}
	err = cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child was not killed but ended: %v; output:\n%s", err, stderr.String())
	}
	if last >= crashMaxBatches {
		t.Fatalf("child applied every batch before the kill")
	}
	return last
}

// syncBuf collects a child's output.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

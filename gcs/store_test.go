package gcs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/gray-cluster/gray/internal/testredis"
)

func TestMain(m *testing.M) { testredis.Main(m) }

// opener opens a new handle on one store; every handle it opens sees the
// same tables (for memory, the same handle again).
type opener func() (Store, error)

// backends are the stores the behavioural tests run against; each makes a
// fresh, empty one.
var backends = []struct {
	name    string
	durable bool
	store   func(t *testing.T) opener
}{
	{"memory", false, memStore},
	{"bolt", true, boltStore},
	{"redis", true, redisStore},
}

func memStore(*testing.T) opener {
	s := NewMemStore()
	return func() (Store, error) {
		s.mu.Lock()
		s.closed = false // a "reopen" of memory keeps its tables
		s.mu.Unlock()
		return s, nil
	}
}

func boltStore(t *testing.T) opener {
	path := filepath.Join(t.TempDir(), StoreFile)
	return func() (Store, error) { return OpenBoltStore(path) }
}

var redisNamespaces atomic.Int64

// redisStore is a fresh namespace on the test Redis server.
func redisStore(t *testing.T) opener {
	url := redisNamespaceURL(t)
	return func() (Store, error) { return OpenRedisStore(context.Background(), url) }
}

func redisNamespaceURL(t *testing.T) string {
	return fmt.Sprintf("%s?namespace=test-%d-%s", testredis.URL(t), redisNamespaces.Add(1),
		strings.ReplaceAll(t.Name(), "/", "-"))
}

func mustOpen(t *testing.T, open opener) Store {
	t.Helper()
	s, err := open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func forEachBackend(t *testing.T, test func(t *testing.T, open opener)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { test(t, b.store(t)) })
	}
}

var bg = context.Background()

// model is the specification of a Store: tables of key → value.
type model map[string]map[string]string

func (m model) clone() model {
	out := model{}
	for t, kv := range m {
		out[t] = maps.Clone(kv)
	}
	return out
}

// apply applies ops and returns the results Apply must report.
func (m model) apply(ops []Op) []int {
	res := make([]int, len(ops))
	for i, op := range ops {
		t := m[op.Table]
		if t == nil {
			t = map[string]string{}
			m[op.Table] = t
		}
		k := string(op.Key)
		_, existed := t[k]
		if existed {
			res[i] = 1
		}
		switch op.Kind {
		case OpPut:
			t[k] = string(op.Value)
		case OpInsert:
			if !existed {
				t[k] = string(op.Value)
			}
		case OpDelete:
			delete(t, k)
		case OpDeletePrefix:
			res[i] = 0
			for key := range t {
				if strings.HasPrefix(key, k) {
					delete(t, key)
					res[i]++
				}
			}
		}
	}
	return res
}

// modelTables and modelKeys are what the generator draws from: keys share
// prefixes and hold 0x00 and 0xff bytes, to exercise prefix ranges.
var (
	modelTables = []string{"kv", "jobs", "t.a-1"}
	modelKeys   = []string{"a", "ab", "abc", "abd", "b", "b\x00", "b\x00\x01", "b\xff", "b\xff\xff", "\xff", "\xff\x00", "zz"}
)

// genBatch draws a batch of 1..max ops; with bad set, one op is invalid.
func genBatch(r *rand.Rand, maxOps int, bad bool) []Op {
	n := 1 + r.IntN(maxOps)
	ops := make([]Op, n)
	for i := range ops {
		table := modelTables[r.IntN(len(modelTables))]
		key := []byte(modelKeys[r.IntN(len(modelKeys))])
		switch k := r.IntN(10); {
		case k < 4:
			ops[i] = Put(table, key, genValue(r))
		case k < 6:
			ops[i] = Insert(table, key, genValue(r))
		case k < 8:
			ops[i] = Delete(table, key)
		default:
			ops[i] = DeletePrefix(table, key[:r.IntN(len(key)+1)])
		}
	}
	if bad {
		i := r.IntN(n)
		switch r.IntN(4) {
		case 0:
			ops[i].Table = "Bad Table"
		case 1:
			ops[i].Table = "_meta"
		case 2:
			ops[i] = Put(ops[i].Table, nil, []byte("v"))
		default:
			ops[i].Kind = 99
		}
	}
	return ops
}

func genValue(r *rand.Rand) []byte {
	switch r.IntN(8) {
	case 0:
		return nil // stored as present and empty
	case 1:
		return bytes.Repeat([]byte{byte(r.IntN(256))}, 1+r.IntN(64<<10))
	}
	return fmt.Appendf(nil, "v%d\x00\xff", r.IntN(1000))
}

// checkTables compares every table of s with m, through Scan, Keys (by
// every prefix the generator uses) and Get.
func checkTables(t *testing.T, s Store, m model, where string) {
	t.Helper()
	if err := diffTables(s, m); err != nil {
		t.Fatalf("%s: %v", where, err)
	}
}

// diffTables says how s differs from m (nil when it does not).
func diffTables(s Store, m model) error {
	for _, table := range modelTables {
		want := m[table]
		got := map[string]string{}
		var order []string
		err := s.Scan(bg, table, nil, func(k, v []byte) error {
			got[string(k)] = string(v)
			order = append(order, string(k))
			return nil
		})
		if err != nil {
			return fmt.Errorf("Scan(%s): %w", table, err)
		}
		if !maps.Equal(got, want) && !(len(got) == 0 && len(want) == 0) {
			return fmt.Errorf("table %s = %s, want %s", table, show(got), show(want))
		}
		if !slices.IsSorted(order) {
			return fmt.Errorf("Scan(%s) out of order: %q", table, order)
		}
		for _, p := range append([]string{""}, modelKeys...) {
			keys, err := s.Keys(bg, table, []byte(p))
			if err != nil {
				return fmt.Errorf("Keys(%s, %q): %w", table, p, err)
			}
			var wantKeys []string
			for k := range want {
				if strings.HasPrefix(k, p) {
					wantKeys = append(wantKeys, k)
				}
			}
			slices.Sort(wantKeys)
			if gotKeys := strs(keys); !slices.Equal(gotKeys, wantKeys) {
				return fmt.Errorf("Keys(%s, %q) = %q, want %q", table, p, gotKeys, wantKeys)
			}
		}
		for _, k := range modelKeys {
			v, ok, err := s.Get(bg, table, []byte(k))
			wv, wok := want[k]
			if err != nil || ok != wok || string(v) != wv || (ok && v == nil) {
				return fmt.Errorf("Get(%s, %q) = %d bytes, %v, %v; want %d bytes, %v", table, k, len(v), ok, err, len(wv), wok)
			}
		}
	}
	return nil
}

func show(m map[string]string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		v := m[k]
		if len(v) > 12 {
			v = fmt.Sprintf("%.12q…(%d bytes)", v, len(v))
		}
		parts = append(parts, fmt.Sprintf("%q=%q", k, v))
	}
	return "{" + strings.Join(parts, " ") + "}"
}

// Random batches of puts, inserts, deletes and prefix deletes over three
// tables, some invalid, some reopening the store: after every step the
// results and the tables agree with the model, and an invalid batch
// changed nothing.
func TestStoreProperty(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			for _, seed := range []uint64{1, 2} {
				t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
					runStoreProperty(t, b.store(t), seed, 400)
				})
			}
		})
	}
}

func runStoreProperty(t *testing.T, open opener, seed uint64, steps int) {
	r := rand.New(rand.NewPCG(seed, 0x5701e))
	s, err := open()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close() }()
	m := model{}
	outcomes := map[string]int{}
	for step := range steps {
		where := fmt.Sprintf("seed %d step %d", seed, step)
		if r.IntN(40) == 0 {
			if err := s.Close(); err != nil {
				t.Fatalf("%s: Close: %v", where, err)
			}
			_, isRedis := s.(*RedisStore) // a closed go-redis client has its own error
			if _, _, err := s.Get(bg, "kv", []byte("a")); err == nil || (!isRedis && !errors.Is(err, ErrClosed)) {
				t.Fatalf("%s: Get after Close: %v", where, err)
			}
			if _, err := s.Apply(bg, Put("kv", []byte("a"), nil)); err == nil || (!isRedis && !errors.Is(err, ErrClosed)) {
				t.Fatalf("%s: Apply after Close: %v", where, err)
			}
			if s, err = open(); err != nil {
				t.Fatalf("%s: reopen: %v", where, err)
			}
			outcomes["reopen"]++
			checkTables(t, s, m, where+" after reopen")
			continue
		}
		bad := r.IntN(10) == 0
		ops := genBatch(r, 6, bad)
		res, err := s.Apply(bg, ops...)
		if bad {
			if err == nil || !(errors.Is(err, ErrBadTable) || errors.Is(err, ErrBadKey) || errors.Is(err, ErrBadOp)) {
				t.Fatalf("%s: invalid batch %v: err %v", where, ops, err)
			}
			outcomes["invalid"]++
		} else {
			if err != nil {
				t.Fatalf("%s: Apply: %v", where, err)
			}
			want := m.apply(ops)
			if !slices.Equal(res, want) {
				t.Fatalf("%s: Apply(%v) = %v, want %v", where, ops, res, want)
			}
			for i, op := range ops {
				outcomes[fmt.Sprintf("kind %d result>0 %v", op.Kind, want[i] > 0)]++
			}
		}
		checkTables(t, s, m, where)
	}
	for _, o := range []string{"reopen", "invalid", "kind 1 result>0 true", "kind 1 result>0 false",
		"kind 2 result>0 true", "kind 2 result>0 false", "kind 3 result>0 true", "kind 3 result>0 false",
		"kind 4 result>0 true", "kind 4 result>0 false"} {
		if outcomes[o] == 0 {
			t.Errorf("outcome %q never happened: %v", o, outcomes)
		}
	}
}

// Many goroutines write at once (the bolt store commits them in groups):
// every write lands, each reports what it found, and none is lost.
func TestStoreConcurrentWriters(t *testing.T) {
	forEachBackend(t, func(t *testing.T, open opener) {
		s := mustOpen(t, open)
		const writers, each = 8, 50
		errs := make(chan error, writers)
		for w := range writers {
			go func() {
				for i := range each {
					k := fmt.Appendf(nil, "w%d/%03d", w, i)
					res, err := s.Apply(bg, Insert("kv", k, k), Put("jobs", []byte("last"), k))
					if err != nil || res[0] != 0 {
						errs <- fmt.Errorf("writer %d op %d: %v, %v", w, i, res, err)
						return
					}
				}
				errs <- nil
			}()
		}
		for range writers {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		for w := range writers {
			keys, err := s.Keys(bg, "kv", fmt.Appendf(nil, "w%d/", w))
			if err != nil || len(keys) != each {
				t.Fatalf("writer %d: %d keys, %v", w, len(keys), err)
			}
		}
	})
}

// Each table's name and key are checked before anything is written.
func TestStoreBadInput(t *testing.T) {
	forEachBackend(t, func(t *testing.T, open opener) {
		s := mustOpen(t, open)
		for _, tc := range []struct {
			op   Op
			want error
		}{
			{Put("", []byte("k"), nil), ErrBadTable},
			{Put("UPPER", []byte("k"), nil), ErrBadTable},
			{Put("_meta", []byte("k"), nil), ErrBadTable},
			{Put(strings.Repeat("t", 65), []byte("k"), nil), ErrBadTable},
			{Put("kv", nil, []byte("v")), ErrBadKey},
			{Delete("kv", []byte{}), ErrBadKey},
			{Put("kv", make([]byte, MaxKeySize+1), nil), ErrBadKey},
			{Op{Kind: 0, Table: "kv", Key: []byte("k")}, ErrBadOp},
		} {
			if _, err := s.Apply(bg, Put("kv", []byte("ok"), []byte("1")), tc.op); !errors.Is(err, tc.want) {
				t.Errorf("Apply(%+v) = %v, want %v", tc.op, err, tc.want)
			}
		}
		if _, ok, err := s.Get(bg, "kv", []byte("ok")); ok || err != nil {
			t.Errorf("a refused batch wrote its valid op: %v, %v", ok, err)
		}
		if _, _, err := s.Get(bg, "Bad", []byte("k")); !errors.Is(err, ErrBadTable) {
			t.Errorf("Get of a bad table: %v", err)
		}
	})
}

func TestLexRange(t *testing.T) {
	for _, tc := range []struct{ prefix, lo, hi string }{
		{"", "-", "+"},
		{"ab", "[ab", "(ac"},
		{"a\xff", "[a\xff", "(b"},
		{"\xff\xff", "[\xff\xff", "+"},
		{"a\x00", "[a\x00", "(a\x01"},
	} {
		lo, hi := lexRange([]byte(tc.prefix))
		if lo != tc.lo || hi != tc.hi {
			t.Errorf("lexRange(%q) = %q, %q; want %q, %q", tc.prefix, lo, hi, tc.lo, tc.hi)
		}
	}
}

// A store written by another schema version, or whose keys someone else
// overwrote with other types, is ErrCorrupt, and a batch on it writes
// nothing.
func TestStoreCorrupt(t *testing.T) {
	t.Run("bolt", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), StoreFile)
		db, err := bolt.Open(path, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		err = db.Update(func(tx *bolt.Tx) error {
			b, err := tx.CreateBucket(boltMeta)
			if err != nil {
				return err
			}
			return b.Put([]byte("version"), []byte("99"))
		})
		db.Close()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := OpenBoltStore(path); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("open of a version-99 file: %v", err)
		}
	})
	t.Run("redis", func(t *testing.T) {
		url := redisNamespaceURL(t)
		s := mustOpen(t, func() (Store, error) { return OpenRedisStore(bg, url) })
		rs := s.(*RedisStore)
		if err := rs.c.Set(bg, rs.valuesKey("kv"), "not a hash", 0).Err(); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Apply(bg, Put("jobs", []byte("k"), []byte("v")), Put("kv", []byte("k"), []byte("v"))); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("Apply over a string key: %v", err)
		}
		if _, ok, err := s.Get(bg, "jobs", []byte("k")); ok || err != nil {
			t.Fatalf("the failed batch wrote its first op: %v, %v", ok, err)
		}
		if err := rs.c.HSet(bg, rs.prefix+"meta", "version", "99").Err(); err != nil {
			t.Fatal(err)
		}
		if _, err := OpenRedisStore(bg, url); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("open of a version-99 namespace: %v", err)
		}
	})
}

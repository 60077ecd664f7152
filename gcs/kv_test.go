package gcs

import (
	"bytes"
	"fmt"
	"math/rand"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
)

func b(s string) []byte { return []byte(s) }

// tkv is a KV whose calls fail the test on a store error, so that the
// tests below read as the KV's semantics.
type tkv struct {
	t  testing.TB
	kv KV
}

func (k tkv) Get(ns, key []byte) ([]byte, bool) {
	v, ok, err := k.kv.Get(bg, ns, key)
	k.must(err)
	return v, ok
}

func (k tkv) Put(ns, key, value []byte, overwrite bool) bool {
	existed, err := k.kv.Put(bg, ns, key, value, overwrite)
	k.must(err)
	return existed
}

func (k tkv) Del(ns, key []byte, byPrefix bool) int {
	n, err := k.kv.Del(bg, ns, key, byPrefix)
	k.must(err)
	return n
}

func (k tkv) Exists(ns, key []byte) bool {
	ok, err := k.kv.Exists(bg, ns, key)
	k.must(err)
	return ok
}

func (k tkv) Keys(ns, prefix []byte) [][]byte {
	keys, err := k.kv.Keys(bg, ns, prefix)
	k.must(err)
	return keys
}

func (k tkv) must(err error) {
	if err != nil {
		k.t.Helper()
		k.t.Error(err) // Error, not Fatal: some callers run in goroutines
		runtime.Goexit()
	}
}

// forEachKV runs test over every backend; newKV makes a fresh, empty KV.
func forEachKV(t *testing.T, test func(t *testing.T, newKV func(testing.TB) tkv)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			test(t, func(tb testing.TB) tkv {
				s, err := b.store(t)()
				if err != nil {
					tb.Fatal(err)
				}
				tb.Cleanup(func() { s.Close() })
				return tkv{tb, NewStoreKV(s)}
			})
		})
	}
}

func TestKVPutSemantics(t *testing.T) {
	forEachKV(t, func(t *testing.T, newKV func(testing.TB) tkv) {
		tests := []struct {
			name      string
			first     string
			second    string
			overwrite bool
			wantExist bool
			wantValue string
		}{
			{"overwrite replaces", "v1", "v2", true, true, "v2"},
			{"no overwrite keeps the old value", "v1", "v2", false, true, "v1"},
			{"empty value can be overwritten", "", "v2", true, true, "v2"},
			{"empty value is kept", "", "v2", false, true, ""},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				kv := newKV(t)
				if kv.Put(nil, b("k"), b(tc.first), false) {
					t.Fatal("first Put reported an existing key")
				}
				if got := kv.Put(nil, b("k"), b(tc.second), tc.overwrite); got != tc.wantExist {
					t.Fatalf("second Put = %v, want %v", got, tc.wantExist)
				}
				v, ok := kv.Get(nil, b("k"))
				if !ok || string(v) != tc.wantValue {
					t.Fatalf("Get = %q, %v; want %q, true", v, ok, tc.wantValue)
				}
			})
		}
	})
}

func TestKVEmptyValueIsPresent(t *testing.T) {
	forEachKV(t, func(t *testing.T, newKV func(testing.TB) tkv) {
		kv := newKV(t)
		kv.Put(nil, b("k"), nil, true)
		v, ok := kv.Get(nil, b("k"))
		if !ok || v == nil || len(v) != 0 {
			t.Fatalf("Get of an empty value = %#v, %v; want non-nil empty, true", v, ok)
		}
		if v, ok := kv.Get(nil, b("missing")); ok || v != nil {
			t.Fatalf("Get of a missing key = %#v, %v; want nil, false", v, ok)
		}
		if !kv.Exists(nil, b("k")) || kv.Exists(nil, b("missing")) {
			t.Fatal("Exists disagrees with Get")
		}
	})
}

func TestKVNamespacesIsolated(t *testing.T) {
	forEachKV(t, func(t *testing.T, newKV func(testing.TB) tkv) {
		kv := newKV(t)
		kv.Put(b("ns1"), b("k"), b("one"), true)
		kv.Put(b("ns2"), b("k"), b("two"), true)
		kv.Put(nil, b("k"), b("default"), true)
		for _, tc := range []struct {
			ns   []byte
			want string
		}{{b("ns1"), "one"}, {b("ns2"), "two"}, {nil, "default"}, {[]byte{}, "default"}} {
			if v, _ := kv.Get(tc.ns, b("k")); string(v) != tc.want {
				t.Errorf("Get(ns=%q) = %q, want %q", tc.ns, v, tc.want)
			}
		}
		if n := kv.Del(b("ns1"), b(""), true); n != 1 {
			t.Fatalf("Del by empty prefix in ns1 = %d, want 1", n)
		}
		if !kv.Exists(b("ns2"), b("k")) || !kv.Exists(nil, b("k")) {
			t.Fatal("deleting in one namespace touched another")
		}
		if keys := kv.Keys(b("ns3"), nil); len(keys) != 0 {
			t.Fatalf("Keys of an unused namespace = %q", keys)
		}
		if n := kv.Del(b("ns3"), b("k"), false); n != 0 {
			t.Fatalf("Del in an unused namespace = %d", n)
		}
	})
}

func TestKVDelAndKeys(t *testing.T) {
	forEachKV(t, func(t *testing.T, newKV func(testing.TB) tkv) {
		keys := []string{"pre/b", "pre/a", "pre", "prefix", "other", "pre/a/x"}
		tests := []struct {
			key      string
			byPrefix bool
			wantN    int
			wantLeft []string
		}{
			{"pre/a", false, 1, []string{"other", "pre", "pre/a/x", "pre/b", "prefix"}},
			{"pre/", true, 3, []string{"other", "pre", "prefix"}},
			{"pre", true, 5, []string{"other"}},
			{"pre", false, 1, []string{"other", "pre/a", "pre/a/x", "pre/b", "prefix"}},
			{"nope", true, 0, []string{"other", "pre", "pre/a", "pre/a/x", "pre/b", "prefix"}},
			{"", true, 6, nil},
		}
		for _, tc := range tests {
			t.Run(fmt.Sprintf("%s/%v", tc.key, tc.byPrefix), func(t *testing.T) {
				kv := newKV(t)
				for _, k := range keys {
					kv.Put(b("ns"), b(k), b("v"), true)
				}
				if n := kv.Del(b("ns"), b(tc.key), tc.byPrefix); n != tc.wantN {
					t.Errorf("Del = %d, want %d", n, tc.wantN)
				}
				if got := strs(kv.Keys(b("ns"), nil)); !slices.Equal(got, tc.wantLeft) {
					t.Errorf("Keys = %q, want %q", got, tc.wantLeft)
				}
			})
		}
		kv := newKV(t)
		for _, k := range keys {
			kv.Put(nil, b(k), b("v"), true)
		}
		if got, want := strs(kv.Keys(nil, b("pre/"))), []string{"pre/a", "pre/a/x", "pre/b"}; !slices.Equal(got, want) {
			t.Errorf("Keys(pre/) = %q, want %q", got, want)
		}
	})
}

func TestKVCopiesValues(t *testing.T) {
	forEachKV(t, func(t *testing.T, newKV func(testing.TB) tkv) {
		kv := newKV(t)
		in := b("value")
		kv.Put(nil, b("k"), in, true)
		in[0] = 'X'
		out, _ := kv.Get(nil, b("k"))
		if string(out) != "value" {
			t.Fatalf("mutating the Put argument changed the stored value: %q", out)
		}
		out[0] = 'Y'
		if again, _ := kv.Get(nil, b("k")); string(again) != "value" {
			t.Fatalf("mutating a Get result changed the stored value: %q", again)
		}
		key := b("k2")
		kv.Put(nil, key, b("v"), true)
		key[0] = 'z'
		if !kv.Exists(nil, b("k2")) {
			t.Fatal("mutating the key argument moved the entry")
		}
		ks := kv.Keys(nil, nil)
		ks[0][0] = '!'
		if got := strs(kv.Keys(nil, nil)); !slices.Equal(got, []string{"k", "k2"}) {
			t.Fatalf("mutating Keys' result changed the keys: %q", got)
		}
	})
}

// TestKVModel checks MemKV against a map of maps with random operations.
func TestKVModel(t *testing.T) {
	forEachKV(t, func(t *testing.T, newKV func(testing.TB) tkv) {
		rng := rand.New(rand.NewSource(7))
		namespaces := []string{"", "a", "b"}
		keyspace := []string{"", "x", "x/1", "x/2", "x/1/y", "y", "yy"}
		for round := 0; round < 20; round++ {
			kv := newKV(t)
			model := map[string]map[string]string{}
			for step := 0; step < 300; step++ {
				ns := namespaces[rng.Intn(len(namespaces))]
				key := keyspace[rng.Intn(len(keyspace))]
				m := model[ns]
				if m == nil {
					m = map[string]string{}
					model[ns] = m
				}
				where := fmt.Sprintf("round %d step %d ns=%q key=%q", round, step, ns, key)
				switch rng.Intn(5) {
				case 0, 1:
					val := fmt.Sprint(rng.Intn(1000))
					overwrite := rng.Intn(2) == 0
					_, existed := m[key]
					if got := kv.Put(b(ns), b(key), b(val), overwrite); got != existed {
						t.Fatalf("%s: Put = %v, want %v", where, got, existed)
					}
					if !existed || overwrite {
						m[key] = val
					}
				case 2:
					byPrefix := rng.Intn(2) == 0
					want := 0
					for k := range m {
						if k == key || (byPrefix && strings.HasPrefix(k, key)) {
							delete(m, k)
							want++
						}
					}
					if got := kv.Del(b(ns), b(key), byPrefix); got != want {
						t.Fatalf("%s: Del(byPrefix=%v) = %d, want %d", where, byPrefix, got, want)
					}
				case 3:
					var want []string
					for k := range m {
						if strings.HasPrefix(k, key) {
							want = append(want, k)
						}
					}
					sort.Strings(want)
					if got := strs(kv.Keys(b(ns), b(key))); !slices.Equal(got, want) {
						t.Fatalf("%s: Keys = %q, want %q", where, got, want)
					}
				case 4:
					want, wantOK := m[key]
					got, ok := kv.Get(b(ns), b(key))
					if ok != wantOK || string(got) != want || kv.Exists(b(ns), b(key)) != wantOK {
						t.Fatalf("%s: Get = %q, %v; want %q, %v", where, got, ok, want, wantOK)
					}
				}
			}
		}
	})
}

func TestKVConcurrent(t *testing.T) {
	forEachKV(t, func(t *testing.T, newKV func(testing.TB) tkv) {
		kv := newKV(t)
		var wg sync.WaitGroup
		for w := 0; w < 8; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				for i := 0; i < 200; i++ {
					k := b(fmt.Sprintf("w%d/%d", w, i))
					kv.Put(nil, k, k, false)
					if v, ok := kv.Get(nil, k); !ok || !bytes.Equal(v, k) {
						t.Errorf("Get(%s) = %q, %v", k, v, ok)
					}
					kv.Keys(nil, b(fmt.Sprintf("w%d/", w)))
				}
			}(w)
		}
		wg.Wait()
		for w := 0; w < 8; w++ {
			if n := len(kv.Keys(nil, b(fmt.Sprintf("w%d/", w)))); n != 200 {
				t.Errorf("writer %d: %d keys, want 200", w, n)
			}
			if n := kv.Del(nil, b(fmt.Sprintf("w%d/", w)), true); n != 200 {
				t.Errorf("writer %d: Del = %d, want 200", w, n)
			}
		}
	})
}

func strs(bs [][]byte) []string {
	var out []string
	for _, x := range bs {
		out = append(out, string(x))
	}
	return out
}

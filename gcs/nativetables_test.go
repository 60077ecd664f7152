package gcs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
)

type nativeModel map[string]map[string][][]byte // table -> key -> parts

func loadNative(t *testing.T, s Store) nativeModel {
	t.Helper()
	nt := NewNativeTables(s)
	m := nativeModel{}
	for _, table := range []string{NativeActorsTable, NativeJobsTable, NativeNodesTable} {
		m[table] = map[string][][]byte{}
		var prev []byte
		err := nt.Load(context.Background(), table, func(key []byte, parts [][]byte) error {
			if prev != nil && bytes.Compare(prev, key) >= 0 {
				return fmt.Errorf("keys out of order: %x then %x", prev, key)
			}
			prev = append([]byte(nil), key...)
			m[table][string(key)] = parts
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return m
}

func equalNative(t *testing.T, want, got nativeModel) {
	t.Helper()
	for _, table := range []string{NativeActorsTable, NativeJobsTable, NativeNodesTable} {
		w, g := want[table], got[table]
		if !maps.EqualFunc(w, g, func(a, b [][]byte) bool { return slices.EqualFunc(a, b, bytes.Equal) }) {
			t.Fatalf("%s: reopened store holds %d entries, want %d (%v vs %v)", table, len(g), len(w), slices.Sorted(maps.Keys(g)), slices.Sorted(maps.Keys(w)))
		}
	}
}

func randParts(r *rand.Rand) [][]byte {
	parts := make([][]byte, r.IntN(3))
	for i := range parts {
		parts[i] = make([]byte, r.IntN(300))
		for j := range parts[i] {
			parts[i][j] = byte(r.Uint32())
		}
	}
	return parts
}

// TestNativeTablesReopenEqualsLastCommitted: random puts and deletes of the
// native actor, job and node tables, the store crashing at a random write;
// a reopened store holds exactly what was committed.
func TestNativeTablesReopenEqualsLastCommitted(t *testing.T) {
	forEachBackend(t, func(t *testing.T, open opener) {
		ctx := context.Background()
		r := rand.New(rand.NewPCG(uint64(len(t.Name())), 11))
		tables := []string{NativeActorsTable, NativeJobsTable, NativeNodesTable}
		want := nativeModel{}
		for _, table := range tables {
			want[table] = map[string][][]byte{}
		}
		var cid []byte
		for round := 0; round < 8; round++ {
			s := mustOpen(t, open)
			equalNative(t, want, loadNative(t, s))
			id, err := NewNativeTables(s).ClusterID(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if cid != nil && !bytes.Equal(id, cid) {
				t.Fatalf("cluster id changed across a reopen: %x, then %x", cid, id)
			}
			cid = id
			cs := &crashStore{Store: s, crashAt: 1 + r.IntN(60)}
			nt := NewNativeTables(cs)
			for i := 0; i < 60; i++ {
				table := tables[r.IntN(len(tables))]
				key := []byte{byte(r.IntN(20)), 1, 2}
				if r.IntN(4) == 0 {
					err := nt.Delete(ctx, table, key)
					if errors.Is(err, errCrashed) {
						break
					} else if err != nil {
						t.Fatal(err)
					}
					delete(want[table], string(key))
					continue
				}
				parts := randParts(r)
				err := nt.Put(ctx, table, key, parts...)
				if errors.Is(err, errCrashed) {
					break
				} else if err != nil {
					t.Fatal(err)
				}
				want[table][string(key)] = parts
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
		}
	})
}

func TestNativeTablesRejectOtherTablesAndCorruptRecords(t *testing.T) {
	ctx := context.Background()
	s := NewMemStore()
	nt := NewNativeTables(s)
	if err := nt.Put(ctx, ActorsTable, []byte("k")); !errors.Is(err, ErrBadTable) {
		t.Fatalf("Put into a non-native table: %v, want ErrBadTable", err)
	}
	for _, bad := range [][]byte{{}, {9}, {nativeRecordVersion, 2, 1}, {nativeRecordVersion, 1, 0, 7}} {
		if _, err := s.Apply(ctx, Put(NativeJobsTable, []byte("k"), bad)); err != nil {
			t.Fatal(err)
		}
		err := nt.Load(ctx, NativeJobsTable, func([]byte, [][]byte) error { return nil })
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("record %x: %v, want ErrCorrupt", bad, err)
		}
	}
}

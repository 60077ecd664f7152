package gcsserver

import (
	"context"
	"slices"
	"testing"

	"github.com/gray-cluster/gray/gcs"
)

// A KV kept across a head restart holds the previous run's exports: the
// server drops them at Start (their jobs cannot come back) and keeps the
// rest of the KV.
func TestStartDropsExportsOfPreviousRun(t *testing.T) {
	kv := gcs.NewMemKV()
	ctx := context.Background()
	fun := []byte(functionTableNamespace)
	for _, k := range []string{"RemoteFunction:01000000:aa", "ActorClass:01000000:bb", "FunctionsToRun:02000000:cc",
		"IsolatedExports:02000000:dd", "Other:01000000:kept"} {
		if _, err := kv.Put(ctx, fun, []byte(k), []byte("x"), true); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := kv.Put(ctx, []byte("user"), []byte("RemoteFunction:01000000:aa"), []byte("y"), true); err != nil {
		t.Fatal(err)
	}
	newEnv(t, func(c *Config) { c.KV = kv })
	keys, err := kv.Keys(ctx, fun, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := strs(keys); !slices.Equal(got, []string{"Other:01000000:kept"}) {
		t.Fatalf("fun keys after Start = %q, want only the non-export key", got)
	}
	if ok, _ := kv.Exists(ctx, []byte("user"), []byte("RemoteFunction:01000000:aa")); !ok {
		t.Fatal("Start dropped a key of another namespace")
	}
}

func strs(bs [][]byte) []string {
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = string(b)
	}
	return out
}

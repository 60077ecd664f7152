package gcs

import (
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/gray-cluster/gray/internal/testredis"
)

// BenchmarkKV measures the internal KV's Put (durable when it returns) and
// Get on each backend, from one goroutine and from many (the bolt store
// group-commits concurrent writers). "bbolt-db.Batch" is bbolt's own
// coalescing, for comparison: it waits up to MaxBatchDelay (10ms) for more
// writers before each commit.
func BenchmarkKV(b *testing.B) {
	value := make([]byte, 256)
	for _, be := range backends {
		b.Run(be.name, func(b *testing.B) {
			kv := NewStoreKV(benchStore(b, be.name))
			b.Run("Put", func(b *testing.B) {
				for i := range b.N {
					if _, err := kv.Put(bg, []byte("ns"), fmt.Appendf(nil, "k%d", i), value, true); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("PutParallel", func(b *testing.B) {
				var n atomic.Int64
				b.SetParallelism(8)
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if _, err := kv.Put(bg, []byte("ns"), fmt.Appendf(nil, "p%d", n.Add(1)), value, true); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
			b.Run("Get", func(b *testing.B) {
				for i := range b.N {
					if _, ok, err := kv.Get(bg, []byte("ns"), fmt.Appendf(nil, "k%d", i%1000)); err != nil || !ok {
						b.Fatal(ok, err)
					}
				}
			})
		})
	}
	b.Run("bbolt-db.Batch/PutParallel", func(b *testing.B) {
		db, err := bolt.Open(filepath.Join(b.TempDir(), "batch.db"), 0o600, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer db.Close()
		var n atomic.Int64
		b.SetParallelism(8)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				k := fmt.Appendf(nil, "p%d", n.Add(1))
				err := db.Batch(func(tx *bolt.Tx) error {
					bk, err := tx.CreateBucketIfNotExists([]byte("kv"))
					if err != nil {
						return err
					}
					return bk.Put(k, value)
				})
				if err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

func benchStore(b *testing.B, name string) Store {
	var (
		s   Store
		err error
	)
	switch name {
	case "memory":
		s = NewMemStore()
	case "bolt":
		s, err = OpenBoltStore(filepath.Join(b.TempDir(), StoreFile))
	case "redis":
		s, err = OpenRedisStore(bg, fmt.Sprintf("%s?namespace=bench-%d", testredis.URL(b), redisNamespaces.Add(1)))
	}
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

package e2e

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
)

// BenchmarkClient measures put and get through the Go client against three
// real kvd processes (fsync on), 256-byte values.
func BenchmarkClient(b *testing.B) {
	cl := startCluster(b, 3)
	c := newClient(b, cl.endpoints()...)
	ctx := context.Background()
	val := make([]byte, 256)
	for _, ks := range []string{"accounts/eu/%d/k", "sessions/%d"} {
		b.Run("put/"+ks[:8], func(b *testing.B) {
			for i := 0; b.Loop(); i++ {
				if _, err := c.Put(ctx, fmt.Sprintf(ks, i%10000), val); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("get/"+ks[:8], func(b *testing.B) {
			for i := range 1000 {
				c.Put(ctx, fmt.Sprintf(ks, i), val)
			}
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				if _, err := c.Get(ctx, fmt.Sprintf(ks, i%1000)); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("put-parallel/"+ks[:8], func(b *testing.B) {
			var n atomic.Int64
			b.SetParallelism(16)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := c.Put(ctx, fmt.Sprintf(ks, n.Add(1)%10000), val); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}

package node_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/capkv/capkv/client"
	"github.com/capkv/capkv/internal/nodetest"
)

// BenchmarkCPPut measures replicated cp writes through the client against an
// in-process 3-node cluster (fsync on), 64 concurrent writers.
func BenchmarkCPPut(b *testing.B) {
	cl, err := nodetest.Start(nodetest.Options{Nodes: 3})
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	c, err := client.New(context.Background(), client.Config{Endpoints: cl.Endpoints()})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	val := make([]byte, 256)
	ctx := context.Background()
	for i := range 64 { // elect leaders, warm the leader cache
		if _, err := c.Put(ctx, fmt.Sprintf("accounts/eu/%d/k", i), val); err != nil {
			b.Fatal(err)
		}
	}
	var n atomic.Int64
	b.SetParallelism(32)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.Put(ctx, fmt.Sprintf("accounts/eu/%d/k", n.Add(1)%10000), val); err != nil {
				b.Fatal(err)
			}
		}
	})
}

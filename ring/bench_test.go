package ring

import (
	"fmt"
	"testing"

	"github.com/capkv/capkv/consistency"
)

func benchTopology(nodes int) Topology {
	half := nodes / 2
	all := append(makeNodes(nodes-half, "eu"), makeNodes(half, "us")...)
	return Topology{Nodes: all, Keyspaces: []KeyspaceConfig{
		{Name: "accounts", Mode: consistency.CP, Template: "accounts/{region}/{account}/...", Partitions: 1024},
		{Name: "sessions", Mode: consistency.AP, Partitions: 1024},
		{Name: "ids", Mode: consistency.CP, Template: "ids/{id}/...",
			Ranges: []Range{{0, 999999, 0}, {1000000, 1999999, 1}, {2000000, 2999999, 2}, {3000000, 3999999, 3}}},
	}}
}

func benchLocate(b *testing.B, keys []string) {
	r := mustNew(b, benchTopology(16), Options{})
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, err := r.Locate(keys[i%len(keys)]); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkLocate(b *testing.B) {
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = fmt.Sprintf("accounts/%s/%d/balance", []string{"eu", "us"}[i%2], i*7919)
	}
	benchLocate(b, keys)
}

func BenchmarkLocateNoLocality(b *testing.B) {
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = fmt.Sprintf("sessions/%x/data", i*7919)
	}
	benchLocate(b, keys)
}

func BenchmarkLocateRange(b *testing.B) {
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = fmt.Sprintf("ids/%d/doc", i*3900)
	}
	benchLocate(b, keys)
}

func BenchmarkNew(b *testing.B) {
	for _, n := range []int{3, 64} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			topo := benchTopology(n)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := New(topo, Options{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

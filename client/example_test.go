package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"os"
	"path/filepath"

	"github.com/capkv/capkv/client"
	"github.com/capkv/capkv/consistency"
	"github.com/capkv/capkv/internal/node"
	"github.com/capkv/capkv/ring"
)

// startLocalCluster runs three in-process nodes on loopback (what `kvd dev`
// does) and returns their endpoints and a function that stops them.
func startLocalCluster() ([]string, func()) {
	dir, err := os.MkdirTemp("", "capkv-example-")
	if err != nil {
		log.Fatal(err)
	}
	var lis []net.Listener
	var peers []ring.Node
	for i := range 3 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			log.Fatal(err)
		}
		lis = append(lis, l)
		peers = append(peers, ring.Node{ID: fmt.Sprintf("n%d", i+1), Addr: l.Addr().String(), Region: "eu"})
	}
	keyspaces := []ring.KeyspaceConfig{
		{Name: "accounts", Mode: consistency.CP, Replicas: 3, Partitions: 8, Template: "accounts/{region}/{account}/..."},
		{Name: "sessions", Mode: consistency.AP, Replicas: 3, Partitions: 8, Template: "sessions/{session}/..."},
	}
	var nodes []*node.Node
	var eps []string
	for i, p := range peers {
		cfg := node.DefaultConfig()
		cfg.ID, cfg.Listen, cfg.Region, cfg.DataDir = p.ID, p.Addr, p.Region, filepath.Join(dir, p.ID)
		cfg.Peers, cfg.Keyspaces = peers, keyspaces
		n, err := node.New(cfg)
		if err != nil {
			log.Fatal(err)
		}
		if err := n.Start(lis[i]); err != nil {
			log.Fatal(err)
		}
		nodes = append(nodes, n)
		eps = append(eps, p.Addr)
	}
	return eps, func() {
		for _, n := range nodes {
			n.Close()
		}
		os.RemoveAll(dir)
	}
}

func Example() {
	endpoints, stop := startLocalCluster()
	defer stop()
	ctx := context.Background()

	c, err := client.New(ctx, client.Config{Endpoints: endpoints})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	if _, err := c.Put(ctx, "accounts/eu/42/balance", []byte("100")); err != nil {
		log.Fatal(err)
	}
	it, err := c.Get(ctx, "accounts/eu/42/balance")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s = %s (%s keyspace, level %s, majority reachable: %t)\n", it.Key, it.Value, it.Receipt.Mode, it.Receipt.Level, it.Receipt.MajorityReachable)
	// Output: accounts/eu/42/balance = 100 (cp keyspace, level linearizable, majority reachable: true)
}

func ExampleClient_CAS() {
	endpoints, stop := startLocalCluster()
	defer stop()
	ctx := context.Background()
	c, err := client.New(ctx, client.Config{Endpoints: endpoints})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	key := "accounts/eu/7/balance"
	if _, err := c.CAS(ctx, key, client.IfAbsent(), []byte("10")); err != nil {
		log.Fatal(err)
	}
	_, err = c.CAS(ctx, key, client.IfValue([]byte("99")), []byte("20"))
	fmt.Println("stale expectation refused:", errors.Is(err, client.ErrConflict))
	_, err = c.CAS(ctx, key, client.IfValue([]byte("10")), []byte("20"))
	fmt.Println("matching expectation applied:", err == nil)
	_, err = c.CAS(ctx, "sessions/abc", client.IfAbsent(), []byte("x"))
	fmt.Println("CAS on an ap keyspace:", errors.Is(err, client.ErrWrongMode))
	// Output:
	// stale expectation refused: true
	// matching expectation applied: true
	// CAS on an ap keyspace: true
}

func ExampleClient_Scan() {
	endpoints, stop := startLocalCluster()
	defer stop()
	ctx := context.Background()
	c, err := client.New(ctx, client.Config{Endpoints: endpoints})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	for _, k := range []string{"accounts/eu/42/balance", "accounts/eu/42/tx/1", "accounts/eu/43/balance"} {
		if _, err := c.Put(ctx, k, []byte("v")); err != nil {
			log.Fatal(err)
		}
	}
	items, err := c.Scan(ctx, "accounts/eu/42/")
	if err != nil {
		log.Fatal(err)
	}
	for _, it := range items {
		fmt.Println(it.Key)
	}
	// Output:
	// accounts/eu/42/balance
	// accounts/eu/42/tx/1
}

func ExampleClient_Get_notFound() {
	endpoints, stop := startLocalCluster()
	defer stop()
	ctx := context.Background()
	c, err := client.New(ctx, client.Config{Endpoints: endpoints})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	_, err = c.Get(ctx, "sessions/nobody")
	fmt.Println(errors.Is(err, client.ErrNotFound))
	_, err = c.Get(ctx, "nosuch/key")
	fmt.Println(errors.Is(err, client.ErrUnknownKeyspace))
	// Output:
	// true
	// true
}

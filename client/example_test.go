package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/capkv/capkv/client"
	"github.com/capkv/capkv/internal/nodetest"
)

// startLocalCluster runs three in-process nodes on loopback (what `kvd dev`
// does) and returns their endpoints and a function that stops them.
func startLocalCluster() ([]string, func()) {
	cl, err := nodetest.Start(nodetest.Options{Nodes: 3})
	if err != nil {
		log.Fatal(err)
	}
	return cl.Endpoints(), cl.Close
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

func ExampleClient_Watch() {
	endpoints, stop := startLocalCluster()
	defer stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := client.New(ctx, client.Config{Endpoints: endpoints})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	// Every change to account 42's keys, from the moment Watch returns.
	events, err := c.Watch(ctx, "accounts/eu/42/")
	if err != nil {
		log.Fatal(err)
	}
	c.Put(ctx, "accounts/eu/42/balance", []byte("100"))
	c.Put(ctx, "accounts/eu/43/balance", []byte("not watched"))
	c.Delete(ctx, "accounts/eu/42/balance")
	for e := range events {
		if e.Kind == client.WatchGap {
			continue // a stream was reopened; changes may have been missed
		}
		fmt.Println(e.Kind, e.Key, string(e.Value))
		if e.Kind == client.WatchDelete {
			cancel() // ends the watch; the channel closes
		}
	}
	// Output:
	// PUT accounts/eu/42/balance 100
	// DELETE accounts/eu/42/balance
}

package client_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/capkv/capkv/client"
	"github.com/capkv/capkv/consistency"
	"github.com/capkv/capkv/internal/nodetest"
	"github.com/capkv/capkv/ring"
)

func startCluster(t *testing.T, ks ...ring.KeyspaceConfig) *nodetest.Cluster {
	t.Helper()
	o := nodetest.Options{Nodes: 3}
	if len(ks) > 0 {
		o.Keyspaces = append(nodetest.DefaultKeyspaces(), ks...)
	}
	cl, err := nodetest.Start(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func newClient(t *testing.T, ctx context.Context, cl *nodetest.Cluster) *client.Client {
	t.Helper()
	c, err := client.New(ctx, client.Config{Endpoints: cl.Endpoints()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func siblings(t *testing.T, ctx context.Context, c *client.Client, key string) []string {
	t.Helper()
	it, err := c.Get(ctx, key, client.WithConsistency(consistency.All))
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	var out []string
	for _, s := range it.Siblings {
		out = append(out, string(s.Value))
	}
	return out
}

// Sequential ap writes from one client supersede each other (its session
// context), a fresh client reads the context first, a delete removes what
// the client saw, and only a blind write or another client's unseen write
// becomes a sibling.
func TestSessionContext(t *testing.T) {
	cl := startCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	a, b := newClient(t, ctx, cl), newClient(t, ctx, cl)

	const key = "sessions/s1/k"
	for i := range 30 {
		res, err := a.Put(ctx, key, []byte{byte('a' + i%26)})
		if err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
		if res.Receipt.Siblings != 1 {
			t.Fatalf("put %d: receipt siblings=%d, want 1", i, res.Receipt.Siblings)
		}
	}
	if got := siblings(t, ctx, a, key); len(got) != 1 {
		t.Fatalf("after 30 sequential puts from one client: %d values %q, want 1", len(got), got)
	}
	// b has seen nothing: it reads the context first, so its put replaces.
	if _, err := b.Put(ctx, key, []byte("from-b")); err != nil {
		t.Fatal(err)
	}
	if got := siblings(t, ctx, b, key); len(got) != 1 || got[0] != "from-b" {
		t.Fatalf("after b's put: %q, want [from-b]", got)
	}
	// a's session context predates b's write: a's next put is concurrent
	// with it and both are kept; a's write after that has read (the put
	// left siblings, so a forgets its context) and replaces both.
	res, err := a.Put(ctx, key, []byte("from-a"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Receipt.Siblings != 2 {
		t.Fatalf("a's put beside b's unseen write: siblings=%d, want 2", res.Receipt.Siblings)
	}
	if res, err = a.Put(ctx, key, []byte("again")); err != nil || res.Receipt.Siblings != 1 {
		t.Fatalf("a's next put: %+v, %v; want one value", res, err)
	}
	// A blind write is a sibling.
	if _, err := a.Put(ctx, key, []byte("blind"), client.WithBlindWrite()); err != nil {
		t.Fatal(err)
	}
	if got := siblings(t, ctx, a, key); len(got) != 2 {
		t.Fatalf("after a blind put: %q, want 2 values", got)
	}
	// A delete removes everything the client saw (its Get above).
	del, err := a.Delete(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if !del.Existed || del.Receipt.Siblings != 0 {
		t.Fatalf("delete: existed=%v siblings=%d, want true and 0", del.Existed, del.Receipt.Siblings)
	}
	if _, err := b.Get(ctx, key, client.WithConsistency(consistency.All)); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("get after delete: %v, want ErrNotFound", err)
	}
	// A fresh client's delete (no session) reads first and deletes too.
	if _, err := a.Put(ctx, key, []byte("one")); err != nil {
		t.Fatal(err)
	}
	c := newClient(t, ctx, cl)
	if del, err = c.Delete(ctx, key); err != nil || !del.Existed || del.Receipt.Siblings != 0 {
		t.Fatalf("fresh client's delete: %+v, %v", del, err)
	}
	if _, err := a.Get(ctx, key, client.WithConsistency(consistency.All)); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("get after the fresh client's delete: %v, want ErrNotFound", err)
	}
}

// Blind writes past the keyspace's sibling cap are refused with
// ErrConflict naming the cap; a write that reads first resolves them.
func TestSiblingCapThroughClient(t *testing.T) {
	cl := startCluster(t, ring.KeyspaceConfig{Name: "capped", Mode: consistency.AP, Replicas: 3, Partitions: 2, MaxSiblings: 4})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := newClient(t, ctx, cl)
	const key = "capped/k"
	for i := range 4 {
		res, err := c.Put(ctx, key, []byte{byte('0' + i)}, client.WithBlindWrite())
		if err != nil {
			t.Fatalf("blind put %d: %v", i, err)
		}
		if res.Receipt.Siblings != i+1 {
			t.Fatalf("blind put %d: siblings=%d, want %d", i, res.Receipt.Siblings, i+1)
		}
	}
	_, err := c.Put(ctx, key, []byte("5"), client.WithBlindWrite())
	if !errors.Is(err, client.ErrConflict) {
		t.Fatalf("fifth blind put: %v, want ErrConflict", err)
	}
	t.Logf("refused: %v", err)
	res, err := c.Put(ctx, key, []byte("resolved"))
	if err != nil || res.Receipt.Siblings != 1 {
		t.Fatalf("put that reads first: %+v, %v; want one value", res, err)
	}
	// The session's context is now stale: another client fills the key to
	// the cap. The session's next put would be the fifth value; refused, it
	// is sent again with a fresh read's context and replaces them all.
	other := newClient(t, ctx, cl)
	if _, err := other.Put(ctx, key, []byte("other")); err != nil { // replaces "resolved"
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := other.Put(ctx, key, []byte{byte('a' + i)}, client.WithBlindWrite()); err != nil {
			t.Fatalf("other client's blind put %d: %v", i, err)
		}
	}
	if got := siblings(t, ctx, other, key); len(got) != 4 {
		t.Fatalf("before the session's put: %q, want 4 values", got)
	}
	res, err = c.Put(ctx, key, []byte("after-cap"))
	if err != nil || res.Receipt.Siblings != 1 {
		t.Fatalf("session put at the cap: %+v, %v; want it retried with a read's context and one value", res, err)
	}
}

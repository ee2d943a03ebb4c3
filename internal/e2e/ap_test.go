package e2e

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/client"
	"github.com/capkv/capkv/consistency"
	"github.com/capkv/capkv/internal/dial"
	"github.com/capkv/capkv/replication/ap"
)

// dialNode connects to one node (no client routing) for one call with a
// 3 s deadline; done closes the connection.
func dialNode(t *testing.T, addr string) (*grpc.ClientConn, context.Context, func()) {
	t.Helper()
	cc, err := dial.Conn(addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	return cc, ctx, func() { cancel(); cc.Close() }
}

// rawGet sends a Get straight to one node (no client routing).
func rawGet(t *testing.T, addr, key, level string) (*api.GetResponse, error) {
	t.Helper()
	cc, ctx, done := dialNode(t, addr)
	defer done()
	return api.NewKVClient(cc).Get(ctx, &api.GetRequest{Key: key, Header: &api.RequestHeader{Consistency: level}})
}

// localValues reads one node's own copy of a key (the internal Replica
// service), without any coordination: what that replica really stores.
func localValues(t *testing.T, addr, partition, key string) []string {
	t.Helper()
	cc, ctx, done := dialNode(t, addr)
	defer done()
	resp, err := api.NewReplicaClient(cc).Fetch(ctx, &api.ReplicaFetchRequest{Partition: partition, Key: key})
	if err != nil || !resp.GetFound() {
		return nil
	}
	d, err := consistency.DecodeDVV(resp.GetClock())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, s := range d.Live() {
		out = append(out, string(s.Data))
	}
	sort.Strings(out)
	return out
}

func rawPut(t *testing.T, addr, key, value, level string, causal []byte) (*api.PutResponse, error) {
	t.Helper()
	cc, ctx, done := dialNode(t, addr)
	defer done()
	return api.NewKVClient(cc).Put(ctx, &api.PutRequest{Key: key, Value: []byte(value), Context: causal, Header: &api.RequestHeader{Consistency: level}})
}

// Concurrent writes to an ap key become siblings; a write that carries the
// context of a read that saw them replaces them.
func TestAPSiblingsAndContext(t *testing.T) {
	cl := startCluster(t, 3)
	c := newClient(t, cl.endpoints()...)
	ctx := ctxT(t)
	key := "sessions/alice"
	p, _ := c.Locate(key)
	// Two blind writes coordinated by two different replicas: concurrent.
	a, b := cl.proc(p.Replicas[0]), cl.proc(p.Replicas[1])
	if _, err := rawPut(t, a.addr, key, "from-a", "all", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := rawPut(t, b.addr, key, "from-b", "one", nil); err != nil {
		t.Fatal(err)
	}
	it, err := c.Get(ctx, key, client.WithConsistency("all"))
	if err != nil {
		t.Fatal(err)
	}
	var vals []string
	for _, s := range it.Siblings {
		vals = append(vals, string(s.Value))
	}
	sort.Strings(vals)
	if strings.Join(vals, ",") != "from-a,from-b" || it.Receipt.Siblings != 2 || len(it.Context) == 0 {
		t.Fatalf("siblings %v, receipt %+v", vals, it.Receipt)
	}
	// Resolve them: a write with the context of that read.
	if _, err := c.Put(ctx, key, []byte("merged"), client.WithContext(it.Context), client.WithConsistency("all")); err != nil {
		t.Fatal(err)
	}
	it, err = c.Get(ctx, key, client.WithConsistency("all"))
	if err != nil || string(it.Value) != "merged" || len(it.Siblings) != 1 {
		t.Fatalf("after a write with the context: %+v %v", it, err)
	}
	// A blind write (no context, no read first) does not erase: it becomes a sibling.
	if _, err := c.Put(ctx, key, []byte("blind"), client.WithBlindWrite()); err != nil {
		t.Fatal(err)
	}
	it, _ = c.Get(ctx, key, client.WithConsistency("all"))
	if len(it.Siblings) != 2 {
		t.Fatalf("blind write after merge: %d siblings, want 2", len(it.Siblings))
	}
	// Delete with the context: gone.
	if _, err := c.Delete(ctx, key, client.WithContext(it.Context), client.WithConsistency("all")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(ctx, key, client.WithConsistency("all")); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("after delete with context: %v", err)
	}

	// A keyspace that resolves by last writer wins keeps one value.
	if _, errOut, code := kvctl(t, cl.endpoints(), "", "keyspace", "create", "prefs", "--mode", "ap", "--resolve", "lww", "--template", "prefs/{user}/..."); code != 0 {
		t.Fatal(errOut)
	}
	waitFor(t, 10*time.Second, "keyspace prefs", func() bool {
		_, err := c.Put(ctx, "prefs/bob/theme", []byte("dark"))
		return err == nil
	})
	pp, _ := c.Locate("prefs/bob/theme")
	for _, w := range []struct{ node, value string }{{pp.Replicas[0], "light"}, {pp.Replicas[1], "blue"}} {
		// Each node learns the new keyspace by epoch; retry until this one has.
		waitFor(t, 10*time.Second, "write via "+w.node, func() bool {
			_, err := rawPut(t, cl.proc(w.node).addr, "prefs/bob/theme", w.value, "all", nil)
			return err == nil
		})
	}
	it, err = c.Get(ctx, "prefs/bob/theme", client.WithConsistency("all"))
	if err != nil || string(it.Value) != "blue" || len(it.Siblings) != 1 {
		t.Fatalf("lww keyspace: %+v %v", it, err)
	}
}

// With replicas down, a quorum write goes to a fallback node as a hint
// (sloppy quorum) and is handed to the replicas when they come back.
func TestAPSloppyQuorumAndHintedHandoff(t *testing.T) {
	cl := startCluster(t, 4)
	c := newClient(t, cl.endpoints()...)
	ctx := ctxT(t)
	key := "sessions/carol"
	p, _ := c.Locate(key)
	if _, err := c.Put(ctx, key, []byte("v1"), client.WithConsistency("all")); err != nil {
		t.Fatal(err)
	}
	// Kill two of the three replicas: a quorum of the preference list is gone.
	down := p.Replicas[1:]
	for _, id := range down {
		cl.kill(cl.proc(id))
	}
	coord := cl.proc(p.Replicas[0])
	resp, err := rawPut(t, coord.addr, key, "v2", "quorum", nil)
	if err != nil {
		t.Fatalf("quorum write with 2 of 3 replicas down and a fallback alive: %v", err)
	}
	rc := resp.GetReceipt()
	if !rc.GetSloppyQuorum() || !rc.GetHinted() || rc.GetMajorityReachable() {
		t.Fatalf("receipt %+v: want sloppy quorum with a hint, majority not reachable", rc)
	}
	// Level all cannot be met by hints.
	if _, err := rawPut(t, coord.addr, key, "v3", "all", nil); err == nil {
		t.Fatal("level all succeeded with two replicas down")
	}
	// Level one on the surviving replica is always available.
	if _, err := rawPut(t, coord.addr, "sessions/dave", "x", "one", nil); err != nil {
		t.Fatalf("level one with the coordinator alive: %v", err)
	}
	for _, id := range down {
		cl.start(cl.proc(id))
		cl.waitReady(cl.proc(id))
	}
	// Handoff (hints) and the write the replicas missed reach them without any read.
	// The fallback held a hint for one of them: handoff delivers it without
	// any read. (The other missed it entirely; a read repairs it.)
	pid := p.Partition.String()
	handed := ""
	waitFor(t, 20*time.Second, "hinted handoff to one of "+strings.Join(down, ","), func() bool {
		for _, id := range down {
			if slices.Contains(localValues(t, cl.proc(id).addr, pid, key), "v2") {
				handed = id
				return true
			}
		}
		return false
	})
	t.Logf("hint handed off to %s", handed)
	if _, err := c.Get(ctx, key, client.WithConsistency("all")); err != nil {
		t.Fatal(err)
	}
	for _, id := range down {
		waitFor(t, 10*time.Second, "read repair of "+id, func() bool {
			return slices.Contains(localValues(t, cl.proc(id).addr, pid, key), "v2")
		})
	}
}

// The replicas of an ap partition converge after concurrent writes through
// different coordinators, read at level all.
func TestAPConvergesAcrossCoordinators(t *testing.T) {
	cl := startCluster(t, 3)
	c := newClient(t, cl.endpoints()...)
	for i := range 30 {
		key := fmt.Sprintf("sessions/u%d", i)
		node := cl.procs[i%3]
		if _, err := rawPut(t, node.addr, key, node.id, "quorum", nil); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 30 {
		key := fmt.Sprintf("sessions/u%d", i)
		p, _ := c.Locate(key)
		var seen []string
		for _, id := range p.Replicas {
			waitFor(t, 10*time.Second, "replica "+id+" has "+key, func() bool {
				v := localValues(t, cl.proc(id).addr, p.Partition.String(), key)
				if len(v) != 1 {
					return false
				}
				seen = append(seen, v[0])
				return true
			})
		}
		if len(slices.Compact(seen)) != 1 {
			t.Fatalf("%s: replicas disagree: %v", key, seen)
		}
	}
}

// Replicas that missed writes (down, no hints possible) converge through
// Merkle anti-entropy on demand (kvctl repair), with no read involved.
func TestAPAntiEntropyRepair(t *testing.T) {
	cl := startCluster(t, 3) // every node is a replica: no fallback can hold hints
	c := newClient(t, cl.endpoints()...)
	key := "sessions/erin"
	p, _ := c.Locate(key)
	coord := cl.proc(p.Replicas[0])
	down := p.Replicas[1:]
	for _, id := range down {
		cl.kill(cl.proc(id))
	}
	var keys []string
	for i := range 20 {
		k := fmt.Sprintf("sessions/erin%d", i)
		pk, _ := c.Locate(k)
		if pk.Partition != p.Partition {
			continue
		}
		if _, err := rawPut(t, coord.addr, k, "x", "one", nil); err != nil {
			t.Fatalf("level one with one replica up: %v", err)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		t.Fatal("no key in the partition")
	}
	for _, id := range down {
		cl.start(cl.proc(id))
		cl.waitReady(cl.proc(id))
	}
	pid := p.Partition.String()
	for _, id := range down {
		if v := localValues(t, cl.proc(id).addr, pid, keys[0]); len(v) != 0 {
			t.Fatalf("%s already has %s before the repair: %v", id, keys[0], v)
		}
	}
	out, errOut, code := kvctl(t, []string{coord.addr}, "", "repair", "sessions", "--json", "--timeout", "20s")
	if code != 0 {
		t.Fatalf("repair: %s", errOut)
	}
	t.Logf("repair: %s", strings.TrimSpace(out))
	for _, id := range down {
		for _, k := range keys {
			if v := localValues(t, cl.proc(id).addr, pid, k); len(v) != 1 || v[0] != "x" {
				t.Fatalf("after repair %s has %s = %v", id, k, v)
			}
		}
	}
	// The replicas' Merkle digests are now identical.
	var roots []uint64
	for _, id := range p.Replicas {
		cc, _ := dial.Conn(cl.proc(id).addr)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		d, err := api.NewReplicaClient(cc).Digest(ctx, &api.DigestRequest{Partition: pid})
		cancel()
		cc.Close()
		if err != nil {
			t.Fatal(err)
		}
		roots = append(roots, ap.Root(d.GetLeaves()))
	}
	if roots[0] != roots[1] || roots[1] != roots[2] {
		t.Fatalf("Merkle roots differ after repair: %x", roots)
	}
	if _, errOut, code := kvctl(t, cl.endpoints(), "", "repair", "accounts"); code == 0 || !strings.Contains(errOut, "cp keyspace") {
		t.Errorf("repair of a cp keyspace: exit %d %s", code, errOut)
	}
}

// A delete's tombstone is purged by anti-entropy once every replica holds it
// (and it is older than the grace), never while a replica is unreachable.
func TestAPTombstonePurge(t *testing.T) {
	cl := startClusterWith(t, 3, []string{"--tombstone-grace", "1ms"})
	c := newClient(t, cl.endpoints()...)
	ctx := ctxT(t)
	key := "sessions/gone"
	p, _ := c.Locate(key)
	pid := p.Partition.String()
	if _, err := c.Put(ctx, key, []byte("x"), client.WithConsistency("all")); err != nil {
		t.Fatal(err)
	}
	it, _ := c.Get(ctx, key, client.WithConsistency("all"))
	if _, err := c.Delete(ctx, key, client.WithContext(it.Context), client.WithConsistency("all")); err != nil {
		t.Fatal(err)
	}
	present := func(id string) bool {
		cc, _ := dial.Conn(cl.proc(id).addr)
		defer cc.Close()
		rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		r, err := api.NewReplicaClient(cc).Fetch(rctx, &api.ReplicaFetchRequest{Partition: pid, Key: key})
		return err == nil && r.GetFound()
	}
	// One replica down: the repair cannot run on all, nothing is purged.
	cl.kill(cl.proc(p.Replicas[2]))
	time.Sleep(10 * time.Millisecond)
	kvctl(t, []string{cl.proc(p.Replicas[0]).addr}, "", "repair", "sessions", "--timeout", "10s")
	if !present(p.Replicas[0]) || !present(p.Replicas[1]) {
		t.Fatal("a tombstone was purged while a replica was unreachable")
	}
	cl.start(cl.proc(p.Replicas[2]))
	cl.waitReady(cl.proc(p.Replicas[2]))
	out, errOut, code := kvctl(t, []string{cl.proc(p.Replicas[0]).addr}, "", "repair", "sessions", "--timeout", "10s")
	if code != 0 || !strings.Contains(out, "tombstones purged") {
		t.Fatalf("repair: %s %s", out, errOut)
	}
	for _, id := range p.Replicas {
		if present(id) {
			t.Errorf("%s still holds the tombstone of %s after a full repair (%s)", id, key, strings.TrimSpace(out))
		}
	}
	if _, err := c.Get(ctx, key, client.WithConsistency("all")); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("after purge: %v", err)
	}
}

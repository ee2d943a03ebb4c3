package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/client"
)

func newClient(t testing.TB, eps ...string) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.New(ctx, client.Config{Endpoints: eps})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestClientRoutesToOwner(t *testing.T) {
	cl := startCluster(t, 3)
	// One endpoint is enough: the client learns the rest from the map.
	c := newClient(t, cl.endpoints()[0])
	ctx := ctxT(t)
	owners := map[string]int{}
	for i := range 60 {
		for _, key := range []string{fmt.Sprintf("accounts/eu/%d/balance", i), fmt.Sprintf("sessions/s%d", i)} {
			val := []byte("v-" + key)
			res, err := c.Put(ctx, key, val)
			if err != nil {
				t.Fatalf("put %s: %v", key, err)
			}
			p, err := c.Locate(key)
			if err != nil {
				t.Fatal(err)
			}
			switch p.Keyspace.Mode {
			case "ap": // served by the first replica (until leaderless replication)
				if res.Receipt.ServedBy != p.Replicas[0] || res.Receipt.Forwarded {
					t.Fatalf("put %s: served by %s (forwarded=%t), owner is %s", key, res.Receipt.ServedBy, res.Receipt.Forwarded, p.Replicas[0])
				}
			case "cp": // served by the Raft leader, one of the replicas, after a majority committed
				if !slices.Contains(p.Replicas, res.Receipt.ServedBy) || !res.Receipt.MajorityReachable || res.Receipt.AppliedIndex == 0 {
					t.Fatalf("put %s: receipt %+v, replicas %v", key, res.Receipt, p.Replicas)
				}
			}
			owners[res.Receipt.ServedBy]++
			it, err := c.Get(ctx, key)
			if err != nil {
				t.Fatalf("get %s: %v", key, err)
			}
			if !bytes.Equal(it.Value, val) || it.Version != res.Version {
				t.Fatalf("get %s = %q v%d, want %q v%d", key, it.Value, it.Version, val, res.Version)
			}
			if it.Receipt.Forwarded {
				t.Fatalf("get %s right after a put was forwarded: the client should route to the leader it just saw (%+v)", key, it.Receipt)
			}
		}
	}
	if len(owners) != 3 {
		t.Errorf("120 keys were served by %d nodes (%v); the ring and leader elections should spread them over all 3", len(owners), owners)
	}
	t.Logf("writes per serving node: %v", owners)

	// A request sent to a node that does not own the key is forwarded once.
	key := "accounts/eu/7/balance"
	p, _ := c.Locate(key)
	var other string
	for _, pr := range cl.procs {
		if pr.id != p.Replicas[0] {
			other = pr.addr
			break
		}
	}
	conn, err := grpc.NewClient(other, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	resp, err := api.NewKVClient(conn).Get(ctx, &api.GetRequest{Key: key})
	if err != nil {
		t.Fatal(err)
	}
	if rc := resp.GetReceipt(); !slices.Contains(p.Replicas, rc.ServedBy) {
		t.Fatalf("receipt = %+v", rc)
	}
	// The same through a node that is surely not the leader: forwarded.
	leaderItem, err := c.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	for _, pr := range cl.procs {
		if pr.id == leaderItem.Receipt.ServedBy {
			continue
		}
		fc, err := grpc.NewClient(pr.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := api.NewKVClient(fc).Get(ctx, &api.GetRequest{Key: key})
		fc.Close()
		if err != nil {
			t.Fatal(err)
		}
		if rc := resp.GetReceipt(); !rc.Forwarded || rc.Coordinator != pr.id || rc.ServedBy != leaderItem.Receipt.ServedBy {
			t.Fatalf("get via %s: receipt %+v, leader %s", pr.id, rc, leaderItem.Receipt.ServedBy)
		}
	}

	// Scan: one account's keys, and the whole keyspace across owners, in order.
	for i := range 5 {
		if _, err := c.Put(ctx, fmt.Sprintf("accounts/eu/7/tx/%03d", i), []byte("t")); err != nil {
			t.Fatal(err)
		}
	}
	items, err := c.Scan(ctx, "accounts/eu/7/")
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, it := range items {
		keys = append(keys, it.Key)
	}
	want := "accounts/eu/7/balance accounts/eu/7/tx/000 accounts/eu/7/tx/001 accounts/eu/7/tx/002 accounts/eu/7/tx/003 accounts/eu/7/tx/004"
	if got := strings.Join(keys, " "); got != want {
		t.Fatalf("scan accounts/eu/7/ = %s\nwant %s", got, want)
	}
	all, err := c.Scan(ctx, "sessions/")
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 60 {
		t.Fatalf("scan sessions/ returned %d keys, want 60", len(all))
	}
	for i := 1; i < len(all); i++ {
		if all[i-1].Key >= all[i].Key {
			t.Fatalf("scan out of order at %d: %s >= %s", i, all[i-1].Key, all[i].Key)
		}
	}
	// Paging with a small limit returns the same keys.
	paged, err := c.Scan(ctx, "sessions/", client.WithLimit(7))
	if err != nil || len(paged) != 7 || paged[6].Key != all[6].Key {
		t.Fatalf("scan with limit 7: %d keys, err %v", len(paged), err)
	}

	// Delete, then the key is gone.
	res, err := c.Delete(ctx, key)
	if err != nil || !res.Existed {
		t.Fatalf("delete: %+v %v", res, err)
	}
	if _, err := c.Get(ctx, key); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("get after delete: %v, want ErrNotFound", err)
	}
	if res, err := c.Delete(ctx, key); err != nil || res.Existed {
		t.Fatalf("second delete: %+v %v", res, err)
	}
}

func TestCAS(t *testing.T) {
	cl := startCluster(t, 3)
	c := newClient(t, cl.endpoints()...)
	ctx := ctxT(t)
	key := "accounts/eu/1/balance"
	r1, err := c.CAS(ctx, key, client.IfAbsent(), []byte("100"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CAS(ctx, key, client.IfAbsent(), []byte("999")); !errors.Is(err, client.ErrConflict) {
		t.Fatalf("CAS IfAbsent on existing key: %v, want ErrConflict", err)
	}
	if _, err := c.CAS(ctx, key, client.IfValue([]byte("50")), []byte("999")); !errors.Is(err, client.ErrConflict) {
		t.Fatalf("CAS with wrong value: %v, want ErrConflict", err)
	}
	if _, err := c.CAS(ctx, key, client.IfValue([]byte("100")), []byte("150")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CAS(ctx, key, client.IfVersion(r1.Version), []byte("999")); !errors.Is(err, client.ErrConflict) {
		t.Fatalf("CAS with old version: %v, want ErrConflict", err)
	}
	it, err := c.Get(ctx, key)
	if err != nil || string(it.Value) != "150" {
		t.Fatalf("after CAS: %v %v, want 150", it, err)
	}
	if _, err := c.CAS(ctx, key, client.IfVersion(it.Version), []byte("200")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CAS(ctx, "sessions/x", client.IfAbsent(), []byte("1")); !errors.Is(err, client.ErrWrongMode) {
		t.Fatalf("CAS on ap keyspace: %v, want ErrWrongMode", err)
	}
}

func TestBadInput(t *testing.T) {
	cl := startCluster(t, 3)
	c := newClient(t, cl.endpoints()...)
	ctx := ctxT(t)
	for _, tc := range []struct {
		key   string
		value []byte
		want  error
		msg   string
	}{
		{"nosuch/x", []byte("v"), client.ErrUnknownKeyspace, "nosuch"},
		{"", []byte("v"), client.ErrInvalidArgument, "empty"},
		{"accounts/eu", []byte("v"), client.ErrInvalidArgument, "accounts/{region}/{account}/..."},
		{"accounts/us/1/balance", []byte("v"), client.ErrUnavailable, `"us"`},
		{"accounts/eu/1/" + strings.Repeat("k", 5000), []byte("v"), client.ErrTooLarge, "5014"},
		{"accounts/eu/2/big", bytes.Repeat([]byte("x"), 1<<20+1), client.ErrTooLarge, "1048577"},
	} {
		_, err := c.Put(ctx, tc.key, tc.value)
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("put %.40q: err = %v; want %v mentioning %q", tc.key, err, tc.want, tc.msg)
		}
	}
	if _, err := c.Get(ctx, "accounts/eu/2/big"); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("oversize value was stored (get: %v)", err)
	}
	if _, err := c.Get(ctx, "sessions/a", client.WithConsistency("linearizable")); !errors.Is(err, client.ErrInvalidArgument) {
		t.Errorf("linearizable on ap keyspace: %v, want ErrInvalidArgument", err)
	}
}

func TestRestartKeepsData(t *testing.T) {
	cl := startCluster(t, 3)
	c := newClient(t, cl.endpoints()...)
	ctx := ctxT(t)
	for i := range 50 {
		if _, err := c.Put(ctx, fmt.Sprintf("sessions/r%d", i), []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range cl.procs {
		cl.stop(p)
	}
	for _, p := range cl.procs {
		cl.start(p)
	}
	for _, p := range cl.procs {
		cl.waitReady(p)
	}
	for i := range 50 {
		it, err := c.Get(ctx, fmt.Sprintf("sessions/r%d", i))
		if err != nil || string(it.Value) != fmt.Sprint(i) {
			t.Fatalf("after restart, sessions/r%d = %v, %v", i, it, err)
		}
	}
}

func TestMinorityFailsFast(t *testing.T) {
	cl := startCluster(t, 3)
	c := newClient(t, cl.endpoints()...)
	ctx := ctxT(t)
	for i := range 20 {
		if _, err := c.Put(ctx, fmt.Sprintf("accounts/eu/%d/balance", i), []byte("1")); err != nil {
			t.Fatal(err)
		}
	}
	// One node down: every cp partition keeps a majority and keeps serving.
	cl.kill(cl.procs[0])
	for i := range 20 {
		k := fmt.Sprintf("accounts/eu/%d/balance", i)
		if _, err := c.Put(ctx, k, []byte("2")); err != nil {
			t.Fatalf("put %s with one of three nodes down: %v", k, err)
		}
		if it, err := c.Get(ctx, k); err != nil || string(it.Value) != "2" {
			t.Fatalf("get %s with one node down: %v %v", k, it, err)
		}
	}
	// Two down: the survivor is a minority. Once its leader lease ran out,
	// every cp request fails with a definite Unavailable before its deadline.
	// A survivor that led steps down up to lease (500 ms) + a heartbeat gap
	// (300 ms) after the kill, and its staleness counts from then: the wait
	// leaves it over a second stale.
	cl.kill(cl.procs[1])
	time.Sleep(2200 * time.Millisecond)
	alone := newClient(t, cl.procs[2].addr)
	for i := range 2 {
		k := fmt.Sprintf("accounts/eu/%d/balance", i)
		rctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		start := time.Now()
		_, err := alone.Put(rctx, k, []byte("3"))
		cancel()
		if !errors.Is(err, client.ErrUnavailable) {
			t.Fatalf("put %s on the minority side: %v, want ErrUnavailable", k, err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("minority put took %s, past its 3s deadline", d)
		}
		rctx, cancel = context.WithTimeout(context.Background(), 3*time.Second)
		_, err = alone.Get(rctx, k)
		cancel()
		if !errors.Is(err, client.ErrUnavailable) {
			t.Fatalf("linearizable get %s on the minority side: %v, want ErrUnavailable", k, err)
		}
		// A stale read is still served by the surviving replica, and says so.
		rctx, cancel = context.WithTimeout(context.Background(), 3*time.Second)
		it, err := alone.Get(rctx, k, client.WithConsistency("stale"))
		cancel()
		if err != nil || string(it.Value) != "2" || it.Receipt.MajorityReachable || it.Receipt.Staleness < time.Second {
			t.Fatalf("stale get %s on the minority side: %+v, %v", k, it, err)
		}
	}
	out, _, code := kvctl(t, cl.endpoints()[2:], "", "cluster", "status", "--json")
	if code != 0 {
		t.Fatalf("cluster status exit %d", code)
	}
	var st struct {
		Nodes []struct{ ID, State string }
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatal(err, out)
	}
	for _, n := range st.Nodes {
		if want := map[bool]string{true: "up", false: "down"}[n.ID == cl.procs[2].id]; n.State != want {
			t.Errorf("node %s state %s, want %s", n.ID, n.State, want)
		}
	}
}

func TestKvdRejectsBadConfig(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"--id", "n1", "--data-dir", dir, "--peers", "n2=127.0.0.1:1@eu"}, "not among"},
		{[]string{"--id", "n1", "--data-dir", dir, "--peers", "n1=localhost"}, "no port"},
		{[]string{"--id", "n1", "--peers", "n1=127.0.0.1:1@eu"}, "data dir"},
		{[]string{"--log-level", "loud", "--id", "n1", "--data-dir", dir, "--peers", "n1=127.0.0.1:1@eu"}, "log-level"},
	} {
		out, err := exec.Command(bins.kvd, tc.args...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), tc.msg) {
			t.Errorf("kvd %v: err %v, output %q; want failure mentioning %q", tc.args, err, out, tc.msg)
		}
	}
}

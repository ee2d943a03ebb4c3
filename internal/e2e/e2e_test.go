package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
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
			if res.Receipt.ServedBy != p.Replicas[0] || res.Receipt.Forwarded {
				t.Fatalf("put %s: served by %s (forwarded=%t), owner is %s", key, res.Receipt.ServedBy, res.Receipt.Forwarded, p.Replicas[0])
			}
			owners[p.Replicas[0]]++
			it, err := c.Get(ctx, key)
			if err != nil {
				t.Fatalf("get %s: %v", key, err)
			}
			if !bytes.Equal(it.Value, val) || it.Version != res.Version {
				t.Fatalf("get %s = %q v%d, want %q v%d", key, it.Value, it.Version, val, res.Version)
			}
		}
	}
	if len(owners) != 3 {
		t.Errorf("120 keys were owned by %d nodes (%v); the ring should spread them over all 3", len(owners), owners)
	}
	t.Logf("keys per owner: %v", owners)

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
	if rc := resp.GetReceipt(); !rc.Forwarded || rc.ServedBy != p.Replicas[0] || rc.Coordinator == rc.ServedBy {
		t.Fatalf("forwarded receipt = %+v", rc)
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

func TestOwnerDownFailsFast(t *testing.T) {
	cl := startCluster(t, 3)
	c := newClient(t, cl.endpoints()...)
	ctx := ctxT(t)
	key := "accounts/eu/5/balance"
	p, _ := c.Locate(key)
	owner := p.Replicas[0]
	cl.kill(cl.proc(owner))

	start := time.Now()
	_, err := c.Put(ctx, key, []byte("1"))
	if !errors.Is(err, client.ErrUnavailable) {
		t.Fatalf("put with owner down: %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("failing took %s", d)
	}
	// Keys of the live nodes are still served.
	served := 0
	for i := range 30 {
		k := fmt.Sprintf("accounts/eu/%d/balance", i)
		if pl, _ := c.Locate(k); pl.Replicas[0] == owner {
			continue
		}
		if _, err := c.Put(ctx, k, []byte("1")); err != nil {
			t.Fatalf("put %s (owner alive): %v", k, err)
		}
		served++
	}
	if served == 0 {
		t.Fatal("no key owned by a live node among 30")
	}
	out, _, code := kvctl(t, cl.endpoints(), "", "cluster", "status", "--json")
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
		if want := map[bool]string{true: "down", false: "up"}[n.ID == owner]; n.State != want {
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

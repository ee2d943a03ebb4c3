package node_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/client"
	"github.com/capkv/capkv/internal/dial"
	"github.com/capkv/capkv/internal/fault"
	"github.com/capkv/capkv/internal/node"
	"github.com/capkv/capkv/internal/nodetest"
)

// A follower cut off while the leader writes and compacts its log must catch
// up through InstallSnapshot streamed over the gRPC Raft transport.
func TestFollowerCatchesUpFromSnapshotOverGRPC(t *testing.T) {
	cl, err := nodetest.Start(nodetest.Options{Nodes: 3, Configure: func(c *node.Config) {
		c.Raft.TrailingLogs = 10
		c.Raft.SnapshotThreshold = 50
		c.Raft.SnapshotInterval = time.Hour // snapshots only when the test asks
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	c, err := client.New(context.Background(), client.Config{Endpoints: cl.Endpoints()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	key := func(i int) string { return fmt.Sprintf("accounts/eu/9/k%04d", i) }
	res, err := c.Put(ctx, key(0), []byte("0"))
	if err != nil {
		t.Fatal(err)
	}
	pl, _ := c.Locate(key(0))
	pid := pl.Partition.String()
	leader := res.Receipt.ServedBy
	var lagger *node.Node
	var leaderNode *node.Node
	var others []string
	for _, n := range cl.Nodes {
		switch {
		case n.ID() == leader:
			leaderNode = n
		case lagger == nil:
			lagger = n
		default:
			others = append(others, n.ID())
		}
	}
	cl.Faults.Partition([]string{lagger.ID()}, append(others, leader), fault.Rule{Drop: true})
	for i := 1; i <= 300; i++ {
		if _, err := c.Put(ctx, key(i), []byte(fmt.Sprint(i))); err != nil {
			t.Fatalf("put %d with one follower cut off: %v", i, err)
		}
	}
	if !leaderNode.RaftLeader(pid) {
		t.Skip("leadership moved during the writes; the scenario needs a stable leader")
	}
	if err := leaderNode.RaftSnapshot(pid); err != nil {
		t.Fatal(err)
	}
	cl.Faults.Heal()
	// The lagging replica now serves stale reads with every key: it installed
	// the snapshot (the entries it missed were compacted away) and caught up.
	cc, err := dial.Conn(cl.Peers[indexOf(cl, lagger.ID())].Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	kv := api.NewKVClient(cc)
	stale := func(i int) (string, string, error) {
		resp, err := kv.Get(ctx, &api.GetRequest{Key: key(i), Header: &api.RequestHeader{Consistency: "stale"}})
		return string(resp.GetKv().GetValue()), resp.GetReceipt().GetServedBy(), err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		v, by, err := stale(300)
		if err == nil && v == "300" && by == lagger.ID() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("lagging replica %s did not catch up: %q from %s, %v", lagger.ID(), v, by, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, i := range []int{0, 1, 150, 299} {
		if v, by, err := stale(i); err != nil || v != fmt.Sprint(i) || by != lagger.ID() {
			t.Fatalf("lagging replica, key %d: %q from %s, %v", i, v, by, err)
		}
	}
}

func indexOf(cl *nodetest.Cluster, id string) int {
	for i, p := range cl.Peers {
		if p.ID == id {
			return i
		}
	}
	return -1
}

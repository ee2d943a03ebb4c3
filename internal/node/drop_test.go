package node_test

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/client"
	"github.com/capkv/capkv/consistency"
	"github.com/capkv/capkv/internal/dial"
	"github.com/capkv/capkv/internal/node"
	"github.com/capkv/capkv/internal/nodetest"
	"github.com/capkv/capkv/ring"
	"github.com/capkv/capkv/shard"
)

// Dropping a keyspace stops its Raft groups on every node and deletes their
// logs, stable values and snapshots, its cp and ap data and the hints held
// for it; other keyspaces keep theirs.
func TestDropKeyspaceRemovesEverything(t *testing.T) {
	dir := t.TempDir()
	kss := append(nodetest.DefaultKeyspaces(),
		ring.KeyspaceConfig{Name: "gone", Mode: consistency.CP, Replicas: 3, Partitions: 2},
		ring.KeyspaceConfig{Name: "gap", Mode: consistency.AP, Replicas: 3, Partitions: 2})
	cl, err := nodetest.Start(nodetest.Options{Nodes: 3, Keyspaces: kss, Configure: func(c *node.Config) {
		c.DataDir = filepath.Join(dir, c.ID) // kept after Close, to look at the stores
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := client.New(ctx, client.Config{Endpoints: cl.Endpoints()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range 20 {
		for _, k := range []string{"gone", "gap", "accounts/eu"} {
			if _, err := c.Put(ctx, fmt.Sprintf("%s/%d/x", k, i), []byte("v"), client.WithConsistency(consistency.Default)); err != nil {
				t.Fatalf("put %s/%d: %v", k, i, err)
			}
		}
	}
	goneIDs := []string{"gone/*/0", "gone/*/1"}
	// A snapshot of every gone replica, so there are snapshot files to delete.
	for _, n := range cl.Nodes {
		for _, id := range goneIDs {
			if err := n.RaftSnapshot(id); err != nil {
				t.Fatalf("snapshot of %s on %s: %v", id, n.ID(), err)
			}
			if _, err := os.Stat(snapDir(dir, n.ID(), id)); err != nil {
				t.Fatalf("no snapshot dir before the drop: %v", err)
			}
		}
	}

	cc, err := dial.Conn(cl.Peers[1].Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	for _, name := range []string{"gone", "gap"} {
		if _, err := api.NewAdminClient(cc).DropKeyspace(ctx, &api.DropKeyspaceRequest{Name: name}); err != nil {
			t.Fatalf("drop %s: %v", name, err)
		}
	}
	// DropKeyspace returned: every node is done, nothing to wait for.
	for _, n := range cl.Nodes {
		for _, id := range goneIDs {
			if err := n.RaftSnapshot(id); err == nil || !strings.Contains(err.Error(), "holds no replica") {
				t.Errorf("%s still runs a replica of %s (snapshot: %v)", n.ID(), id, err)
			}
			if _, err := os.Stat(snapDir(dir, n.ID(), id)); !os.IsNotExist(err) {
				t.Errorf("%s: snapshots of %s not deleted: %v", n.ID(), id, err)
			}
		}
	}
	cl.Close()
	for _, p := range cl.Peers {
		st, err := shard.Open(shard.DefaultOptions(filepath.Join(dir, p.ID)))
		if err != nil {
			t.Fatal(err)
		}
		groups, err := st.RaftGroups()
		if err != nil {
			t.Fatal(err)
		}
		parts, err := st.Partitions()
		if err != nil {
			t.Fatal(err)
		}
		st.Close()
		all := strings.Join(append(groups, parts...), " ")
		if strings.Contains(all, "gone/") || strings.Contains(all, "gap/") {
			t.Errorf("%s still stores dropped keyspaces: raft groups %v, partitions %v", p.ID, groups, parts)
		}
		if !strings.Contains(strings.Join(groups, " "), "accounts/eu/") || !strings.Contains(strings.Join(parts, " "), "accounts/eu/") {
			t.Errorf("%s lost accounts: raft groups %v, partitions %v", p.ID, groups, parts)
		}
	}
}

func snapDir(dir, node, id string) string {
	return filepath.Join(dir, node, "raft-snapshots", url.PathEscape(id))
}

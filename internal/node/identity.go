package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/internal/meta"
)

// A data directory's identity: the node ID it belongs to and an
// incarnation made when it was created. The cluster map records each
// node's incarnation; a node that comes back with a new data directory
// under an ID the map knows (a wiped disk, a fresh container) is refused,
// because its Raft server ID would be reused without its log and votes,
// and a replica that forgot its vote can help elect two leaders in one
// term. Such a node is removed (kvctl node remove) and started with a new
// ID. (etcd and CockroachDB check a member or store ID the same way.)

const identityFile = "IDENTITY"

type identity struct {
	Node        string `json:"node"`
	Incarnation string `json:"incarnation"`
	// Checked: a start passed checkNotWiped with this directory. Until
	// then it counts as fresh, even though a refused start opened a store.
	Checked bool `json:"checked"`
}

// loadIdentity reads the data directory's identity, or makes one. fresh
// reports a directory without a store: one that never held this node's
// data (a first start, or a wiped disk).
func loadIdentity(dir, id string) (identity, bool, error) {
	p := filepath.Join(dir, identityFile)
	_, err := os.Stat(filepath.Join(dir, "MANIFEST")) // Badger's, made at its first open
	fresh := errors.Is(err, fs.ErrNotExist)
	b, err := os.ReadFile(p)
	switch {
	case err == nil:
		var idt identity
		if err := json.Unmarshal(b, &idt); err != nil || idt.Incarnation == "" {
			return identity{}, false, fmt.Errorf("%s is damaged (%v): it names the node this data directory belongs to", p, err)
		}
		if idt.Node != id {
			return identity{}, false, fmt.Errorf("data directory %s belongs to node %q, not %q (--id)", dir, idt.Node, id)
		}
		return idt, fresh || !idt.Checked, nil
	case !errors.Is(err, fs.ErrNotExist):
		return identity{}, false, err
	}
	var r [8]byte
	rand.Read(r[:])
	// A directory that already holds a store (made before identities
	// existed) is this node's: nothing to check.
	idt := identity{Node: id, Incarnation: hex.EncodeToString(r[:]), Checked: !fresh}
	if err := idt.save(dir); err != nil {
		return identity{}, false, err
	}
	return idt, fresh, nil
}

func (idt identity) save(dir string) error {
	b, _ := json.Marshal(idt)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	p := filepath.Join(dir, identityFile)
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	return os.Rename(tmp, p)
}

// checkNotWiped asks the cluster, before any Raft replica starts, whether
// it knows this node with another data directory. Only a fresh data
// directory needs asking; nodes that do not answer in time are skipped (a
// cluster starting for the first time has no map yet).
func (n *Node) checkNotWiped() error {
	if !n.freshDir {
		return nil
	}
	if err := n.askNotWiped(); err != nil {
		return err
	}
	n.identity.Checked = true
	return n.identity.save(n.cfg.DataDir)
}

func (n *Node) askNotWiped() error {
	var addrs []string
	for _, p := range n.cfg.Peers {
		if p.ID != n.cfg.ID {
			addrs = append(addrs, p.Addr)
		}
	}
	addrs = append(addrs, n.cfg.Join...)
	for _, addr := range addrs {
		c, err := n.dialAddr(addr)
		if err != nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		pm, err := api.NewAdminClient(c).GetClusterMap(ctx, &api.ClusterMapRequest{})
		cancel()
		if err != nil || pm.GetEpoch() == 0 {
			continue
		}
		for _, nd := range pm.GetNodes() {
			if nd.GetId() == n.cfg.ID && nd.GetIncarnation() != "" && nd.GetIncarnation() != n.identity.Incarnation {
				return fmt.Errorf("node %s: %w", n.cfg.ID, meta.WipedNode(n.cfg.ID, nd.GetIncarnation(), n.identity.Incarnation))
			}
		}
		return nil // one map that does not know it otherwise is enough
	}
	return nil
}

package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/capkv/capkv/consistency"
	"github.com/capkv/capkv/internal/node"
	"github.com/capkv/capkv/ring"
)

// fileConfig is the JSON config file of one node. Every field is optional;
// flags given on the command line override it.
type fileConfig struct {
	ID             string         `json:"id"`
	Listen         string         `json:"listen"`
	Region         string         `json:"region"`
	DataDir        string         `json:"data_dir"`
	Peers          []fileNode     `json:"peers"` // the initial cluster (seeds)
	Join           []string       `json:"join"`
	Advertise      string         `json:"advertise"`
	Keyspaces      []fileKeyspace `json:"keyspaces"`
	SyncWrites     *bool          `json:"sync_writes"`
	VNodes         int            `json:"vnodes"`
	RequestTimeout string         `json:"request_timeout"`
	ProbeInterval  string         `json:"probe_interval"`
	DownAfter      string         `json:"down_after"`
	TombstoneGrace string         `json:"tombstone_grace"`
	JoinTimeout    string         `json:"join_timeout"`
	tlsSettings
}

type fileNode struct {
	ID     string `json:"id"`
	Addr   string `json:"addr"`
	Region string `json:"region"`
}

type fileKeyspace struct {
	Name         string `json:"name"`
	Mode         string `json:"mode"`
	Replicas     int    `json:"replicas"`
	Partitions   int    `json:"partitions"`
	Template     string `json:"template"`
	Ranges       string `json:"ranges"` // "0-999999:0,1000000-1999999:1"
	DefaultLevel string `json:"default_level"`
	Resolve      string `json:"resolve"`
	MaxSiblings  int    `json:"max_siblings"`
}

// loadConfigFile reads path into cfg and its TLS keys into ts (a key the
// file leaves out keeps ts's value).
func loadConfigFile(path string, cfg *node.Config, ts *tlsSettings) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	fc := fileConfig{tlsSettings: *ts}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&fc); err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	cfg.ID, cfg.Listen, cfg.Region, cfg.DataDir = fc.ID, fc.Listen, fc.Region, fc.DataDir
	cfg.Join, cfg.Advertise = fc.Join, fc.Advertise
	*ts = fc.tlsSettings
	for _, p := range fc.Peers {
		cfg.Peers = append(cfg.Peers, ring.Node{ID: p.ID, Addr: p.Addr, Region: p.Region})
	}
	for _, k := range fc.Keyspaces {
		ks := ring.KeyspaceConfig{Name: k.Name, Mode: consistency.Mode(k.Mode), Replicas: k.Replicas, Partitions: k.Partitions,
			Template: k.Template, DefaultLevel: consistency.Level(k.DefaultLevel), Resolve: k.Resolve,
			MaxSiblings: k.MaxSiblings}
		if k.Ranges != "" {
			r, err := ring.ParseRanges(k.Ranges)
			if err != nil {
				return fmt.Errorf("config file %s: keyspace %q: %w", path, k.Name, err)
			}
			ks.Ranges = r
		}
		cfg.Keyspaces = append(cfg.Keyspaces, ks.WithDefaults())
	}
	if fc.SyncWrites != nil {
		cfg.SyncWrites = *fc.SyncWrites
	}
	if fc.VNodes != 0 {
		cfg.VNodes = fc.VNodes
	}
	for _, d := range []struct {
		name, value string
		to          *time.Duration
	}{
		{"request_timeout", fc.RequestTimeout, &cfg.RequestTimeout},
		{"probe_interval", fc.ProbeInterval, &cfg.ProbeInterval},
		{"down_after", fc.DownAfter, &cfg.DownAfter},
		{"tombstone_grace", fc.TombstoneGrace, &cfg.TombstoneGrace},
		{"join_timeout", fc.JoinTimeout, &cfg.JoinTimeout},
	} {
		if d.value == "" {
			continue
		}
		v, err := time.ParseDuration(d.value)
		if err != nil {
			return fmt.Errorf("config file %s: %s: %w", path, d.name, err)
		}
		*d.to = v
	}
	return nil
}

// defaultKeyspaces are the keyspaces of a cluster that defines none: the
// `accounts` (cp, pinned to the key's region) and `sessions` (ap) pair that
// `kvd dev` starts with. The replication factor shrinks only for clusters
// too small for 3 replicas anywhere; a region smaller than that keeps
// refusing its accounts keys with an error naming the region and both
// numbers, as placement promises.
func defaultKeyspaces(peers []ring.Node) []ring.KeyspaceConfig {
	perRegion := map[string]int{}
	for _, p := range peers {
		perRegion[p.Region]++
	}
	largest := 0
	for _, n := range perRegion {
		largest = max(largest, n)
	}
	return []ring.KeyspaceConfig{
		ring.KeyspaceConfig{Name: "accounts", Mode: consistency.CP, Replicas: min(3, largest), Partitions: 8,
			Template: "accounts/{region}/{account}/..."}.WithDefaults(),
		ring.KeyspaceConfig{Name: "sessions", Mode: consistency.AP, Replicas: min(3, len(peers)), Partitions: 8,
			Template: "sessions/{session}/..."}.WithDefaults(),
	}
}

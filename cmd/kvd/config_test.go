package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/capkv/capkv/internal/node"
)

func TestLoadConfigFile(t *testing.T) {
	dir := t.TempDir()
	write := func(body string) string {
		p := filepath.Join(dir, "node.json")
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cfg := node.DefaultConfig()
	err := loadConfigFile(write(`{"id":"n1","listen":"127.0.0.1:7001","region":"eu","data_dir":"/tmp/x",
		"peers":[{"id":"n1","addr":"127.0.0.1:7001","region":"eu"}],
		"keyspaces":[{"name":"ids","mode":"cp","replicas":1,"template":"ids/{id}/...","ranges":"0-99:0,100-199:1"}],
		"sync_writes":false,"request_timeout":"3s","probe_interval":"250ms","down_after":"1s","tombstone_grace":"1h"}`), &cfg, &tlsSettings{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ID != "n1" || len(cfg.Peers) != 1 || cfg.SyncWrites || cfg.RequestTimeout.String() != "3s" ||
		len(cfg.Keyspaces) != 1 || len(cfg.Keyspaces[0].Ranges) != 2 || cfg.Keyspaces[0].Partitions != 2 ||
		cfg.ProbeInterval.String() != "250ms" || cfg.DownAfter.String() != "1s" || cfg.TombstoneGrace.String() != "1h0m0s" {
		t.Fatalf("loaded %+v", cfg)
	}
	for body, want := range map[string]string{
		`{"id":"n1","colour":"red"}`: "unknown field",
		`{"keyspaces":[{"name":"k","mode":"cp","template":"k/{id}/...","ranges":"9-1:0"}]}`: "keyspace \"k\"",
		`{"request_timeout":"soon"}`: "request_timeout",
		`{"down_after":"-"}`:         "down_after",
		`{"id":`:                     "config file",
	} {
		cfg := node.DefaultConfig()
		if err := loadConfigFile(write(body), &cfg, &tlsSettings{}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err %v, want mention of %q", body, err, want)
		}
	}
	if err := loadConfigFile(filepath.Join(dir, "missing.json"), &cfg, &tlsSettings{}); err == nil {
		t.Error("missing file accepted")
	}
}

func TestParsePeers(t *testing.T) {
	p, err := parsePeers("n1=127.0.0.1:1@eu, n2=127.0.0.1:2@us")
	if err != nil || len(p) != 2 || p[1].Region != "us" || p[1].Addr != "127.0.0.1:2" {
		t.Fatalf("%v %v", p, err)
	}
	for _, bad := range []string{"", "n1", "n1=host", "=127.0.0.1:1"} {
		if _, err := parsePeers(bad); err == nil {
			t.Errorf("parsePeers(%q) accepted", bad)
		}
	}
}

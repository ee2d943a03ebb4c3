package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/capkv/capkv/internal/certs"
	"github.com/capkv/capkv/internal/node"
)

// The config file takes the TLS flags' keys; security() loads them, with
// the peer files defaulting to the client ones, and names what is missing.
func TestTLSSettings(t *testing.T) {
	dir := t.TempDir()
	if _, err := certs.InitCA(dir, "", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := certs.Issue(dir, certs.Request{Kind: certs.Node, Name: "n1", Hosts: []string{"127.0.0.1"}}); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "node.json")
	body := `{"cert_file":"` + dir + `/n1.crt","key_file":"` + dir + `/n1.key","trusted_ca_file":"` + dir + `/ca.crt","client_cert_auth":true,"tls_min_version":"1.3"}`
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := node.DefaultConfig()
	ts := tlsSettings{MinVersion: "1.2"}
	if err := loadConfigFile(p, &cfg, &ts); err != nil {
		t.Fatal(err)
	}
	if !ts.ClientCertAuth || ts.MinVersion != "1.3" || ts.CertFile != dir+"/n1.crt" {
		t.Fatalf("loaded %+v", ts)
	}
	sec, err := ts.security()
	if err != nil {
		t.Fatal(err)
	}
	if !sec.TLS() || !sec.ClientCertAuth() || len(sec.Sources()) != 1 {
		t.Fatalf("security %s with %d sources", sec, len(sec.Sources()))
	}
	if sec, err := (tlsSettings{}).security(); err != nil || sec.TLS() {
		t.Fatalf("no TLS settings: %s, %v", sec, err)
	}
	for ts, want := range map[tlsSettings]string{
		{CertFile: dir + "/n1.crt"}:    "TLS needs --cert-file, --key-file and --trusted-ca-file",
		{ClientCertAuth: true}:         "TLS needs",
		{MinVersion: "1.1"}:            "--tls-min-version",
		{AdminIdentities: "root, ops"}: "--admin-identities root, ops needs --client-cert-auth",
		{CertFile: dir + "/n1.crt", KeyFile: dir + "/n1.key", TrustedCAFile: dir + "/ca.crt", PeerCertFile: dir + "/n2.crt"}: "peer TLS",
	} {
		if _, err := ts.security(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%+v: got %v, want %q", ts, err, want)
		}
	}
}

// Replacing the certificate files is enough: the poller reloads them, and
// stops when its context ends.
func TestReloadOnFileChange(t *testing.T) {
	dir := t.TempDir()
	if _, err := certs.InitCA(dir, "", 0); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"n1", "n1-next"} {
		if _, err := certs.Issue(dir, certs.Request{Kind: certs.Node, Name: n, Hosts: []string{"127.0.0.1"}}); err != nil {
			t.Fatal(err)
		}
	}
	ts := tlsSettings{MinVersion: "1.2", CertFile: filepath.Join(dir, "n1.crt"), KeyFile: filepath.Join(dir, "n1.key"), TrustedCAFile: filepath.Join(dir, certs.CACert)}
	sec, err := ts.security()
	if err != nil {
		t.Fatal(err)
	}
	serial := func() string {
		leaf, err := sec.Sources()[0].Leaf()
		if err != nil {
			t.Fatal(err)
		}
		return leaf.SerialNumber.String()
	}
	before := serial()
	ctx, cancel := context.WithCancel(context.Background())
	wait := reloadOnChange(ctx, sec, 20*time.Millisecond, slog.New(slog.NewTextHandler(io.Discard, nil)))
	time.Sleep(60 * time.Millisecond)
	if serial() != before {
		t.Fatal("reloaded without a change")
	}
	for _, ext := range []string{".key", ".crt"} {
		if err := os.Rename(filepath.Join(dir, "n1-next"+ext), filepath.Join(dir, "n1"+ext)); err != nil {
			t.Fatal(err)
		}
	}
	for deadline := time.Now().Add(5 * time.Second); serial() == before; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("5s after the files were replaced the old certificate is still in use")
		}
	}
	cancel()
	stopped := make(chan struct{})
	go func() { wait(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("the poller did not stop after its context ended")
	}
}

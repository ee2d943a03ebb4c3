package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

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

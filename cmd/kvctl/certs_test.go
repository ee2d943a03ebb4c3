package main

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func certsRun(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(args, strings.NewReader(""), &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestCertsCommands(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	if code, out, errOut := certsRun(t, "certs", "init", "--dir", dir); code != 0 || !strings.Contains(out, "ca.crt") {
		t.Fatalf("certs init: exit %d, %q %q", code, out, errOut)
	}
	code, out, errOut := certsRun(t, "certs", "node", "--dir", dir, "--id", "n1", "--host", "10.0.0.1, n1.example.com")
	if code != 0 || !strings.Contains(out, "--cert-file "+filepath.Join(dir, "n1.crt")) {
		t.Fatalf("certs node: exit %d, %q %q", code, out, errOut)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "n1.crt"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(raw)
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if cert.Subject.CommonName != "n1" || len(cert.IPAddresses) != 1 || cert.IPAddresses[0].String() != "10.0.0.1" ||
		!slices.Equal(cert.DNSNames, []string{"n1.example.com"}) ||
		!slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageServerAuth) || !slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		t.Fatalf("node certificate: CN %q IPs %v DNS %v usage %v", cert.Subject.CommonName, cert.IPAddresses, cert.DNSNames, cert.ExtKeyUsage)
	}
	if code, out, _ := certsRun(t, "certs", "client", "--dir", dir, "--name", "alice"); code != 0 || !strings.Contains(out, "--cacert") {
		t.Fatalf("certs client: exit %d, %q", code, out)
	}
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"certs", "init", "--dir", dir}, 1, "never overwrites"},
		{[]string{"certs", "client", "--dir", dir, "--name", "alice"}, 1, "already exists"},
		{[]string{"certs", "node", "--dir", dir, "--id", "n2"}, 1, "--host"},
		{[]string{"certs", "node", "--dir", dir}, 2, "--id is required"},
		{[]string{"certs", "client", "--dir", t.TempDir(), "--name", "bob"}, 1, "kvctl certs init"},
		{[]string{"certs", "client", "--dir", dir, "--name", "bob", "--lifetime", "-1h"}, 2, "positive"},
		{[]string{"certs"}, 2, "init, node or client"},
	} {
		code, _, errOut := certsRun(t, tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.msg) {
			t.Errorf("kvctl %s: exit %d, %q; want exit %d and %q", strings.Join(tc.args, " "), code, errOut, tc.code, tc.msg)
		}
	}
}

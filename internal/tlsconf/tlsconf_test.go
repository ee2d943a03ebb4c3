package tlsconf_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/capkv/capkv/internal/certs"
	"github.com/capkv/capkv/internal/tlsconf"
)

// pki is a CA directory with a node and a client certificate.
type pki struct{ dir string }

func newPKI(t *testing.T) pki {
	t.Helper()
	dir := t.TempDir()
	if _, err := certs.InitCA(dir, "", 0); err != nil {
		t.Fatal(err)
	}
	issue(t, dir, certs.Request{Kind: certs.Node, Name: "n1", Hosts: []string{"127.0.0.1", "localhost"}})
	issue(t, dir, certs.Request{Kind: certs.Client, Name: "alice"})
	return pki{dir}
}

func issue(t *testing.T, dir string, r certs.Request) certs.Paths {
	t.Helper()
	p, err := certs.Issue(dir, r)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (p pki) source(t *testing.T, name string) *tlsconf.Source {
	t.Helper()
	s, err := tlsconf.Load(p.files(name), tls.VersionTLS12)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (p pki) files(name string) tlsconf.Files {
	return tlsconf.Files{Cert: filepath.Join(p.dir, name+".crt"), Key: filepath.Join(p.dir, name+".key"), CA: filepath.Join(p.dir, certs.CACert)}
}

// serve accepts TLS connections on loopback and records each client's
// common name (or the handshake error).
func serve(t *testing.T, cfg *tls.Config) (addr string, got chan string) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	got = make(chan string, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tc := c.(*tls.Conn)
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if err := tc.Handshake(); err != nil {
				got <- "error: " + err.Error()
			} else if pc := tc.ConnectionState().PeerCertificates; len(pc) > 0 {
				got <- pc[0].Subject.CommonName
			} else {
				got <- "anonymous"
			}
			c.Close()
		}
	}()
	return ln.Addr().String(), got
}

func dial(addr string, cfg *tls.Config) (*tls.Conn, error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	// Under TLS 1.3 the client's handshake ends before the server has
	// checked the client's certificate: its verdict comes with the first
	// read (the test server closes every connection after its handshake).
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != nil && !errors.Is(err, io.EOF) {
		return c, err
	}
	return c, nil
}

func TestMutualTLS(t *testing.T) {
	p := newPKI(t)
	addr, got := serve(t, p.source(t, "n1").Server(true))
	c, err := dial(addr, p.source(t, "alice").Client(""))
	if err != nil {
		t.Fatalf("client with a certificate of the cluster CA: %v", err)
	}
	if cn := c.ConnectionState().PeerCertificates[0].Subject.CommonName; cn != "n1" {
		t.Fatalf("server is %q, want n1", cn)
	}
	c.Close()
	if who := <-got; who != "alice" {
		t.Fatalf("server saw %q, want alice", who)
	}
}

// The refusals a user meets, each with an error that says what is wrong.
func TestRefusals(t *testing.T) {
	p := newPKI(t)
	addr, got := serve(t, p.source(t, "n1").Server(true))

	other := newPKI(t) // a second cluster's CA
	// A client that trusts the node but holds another CA's certificate.
	f := other.files("alice")
	f.CA = p.files("alice").CA
	mixed, err := tlsconf.Load(f, tls.VersionTLS12)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dial(addr, mixed.Client("")); err == nil {
		t.Fatal("a client of another CA was accepted")
	}
	if msg := <-got; !strings.Contains(msg, "certificate signed by unknown authority") {
		t.Fatalf("server's reason for another CA's client: %q", msg)
	}

	// A client that trusts nothing but its own CA refuses the server.
	_, err = dial(addr, other.source(t, "n1").Client(""))
	if err == nil || !strings.Contains(err.Error(), "unknown authority") {
		t.Fatalf("client of another CA dialing the node: %v, want unknown authority", err)
	}
	<-got

	// An expired client certificate.
	issue(t, p.dir, certs.Request{Kind: certs.Client, Name: "old", NotBefore: time.Now().Add(-48 * time.Hour), Lifetime: 24 * time.Hour})
	if _, err := dial(addr, p.source(t, "old").Client("")); err == nil {
		t.Fatal("an expired certificate was accepted")
	}
	if msg := <-got; !strings.Contains(msg, "expired") {
		t.Fatalf("server's reason for an expired certificate: %q", msg)
	}

	// No client certificate at all.
	anon := p.source(t, "alice").Client("")
	anon.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &tls.Certificate{}, nil }
	dial(addr, anon)
	if msg := <-got; !strings.Contains(msg, "didn't provide a certificate") {
		t.Fatalf("server's reason for a client without a certificate: %q", msg)
	}

	// Plaintext.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
	c.Close()
	if msg := <-got; !strings.HasPrefix(msg, "error:") {
		t.Fatalf("plaintext connection: %q, want a handshake error", msg)
	}

	// A server whose certificate does not name the dialed host.
	issue(t, p.dir, certs.Request{Kind: certs.Node, Name: "n2", Hosts: []string{"10.9.9.9"}})
	addr2, got2 := serve(t, p.source(t, "n2").Server(true))
	if _, err := dial(addr2, p.source(t, "alice").Client("127.0.0.1")); err == nil || !strings.Contains(err.Error(), "127.0.0.1") {
		t.Fatalf("server certificate for another host: %v, want a refusal naming 127.0.0.1", err)
	}
	<-got2
}

// After the files are replaced and Reload runs, new handshakes present the
// new certificate; a reload of broken files keeps the old one.
func TestReload(t *testing.T) {
	p := newPKI(t)
	src := p.source(t, "n1")
	addr, got := serve(t, src.Server(true))
	serialOf := func() string {
		t.Helper()
		c, err := dial(addr, p.source(t, "alice").Client(""))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		<-got
		return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	before := serialOf()
	next := issue(t, p.dir, certs.Request{Kind: certs.Node, Name: "n1-next", Hosts: []string{"127.0.0.1"}})
	f := p.files("n1")
	for _, mv := range [][2]string{{next.Cert, f.Cert}, {next.Key, f.Key}} {
		if err := os.Rename(mv[0], mv[1]); err != nil {
			t.Fatal(err)
		}
	}
	if serialOf() != before {
		t.Fatal("certificate changed before Reload")
	}
	if err := src.Reload(); err != nil {
		t.Fatal(err)
	}
	after := serialOf()
	if after == before {
		t.Fatal("new connections still get the old certificate after Reload")
	}
	if err := os.WriteFile(f.Key, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := src.Reload(); err == nil || !strings.Contains(err.Error(), f.Cert) {
		t.Fatalf("reload of a broken key: %v, want an error naming the files", err)
	}
	if serialOf() != after {
		t.Fatal("a failed reload changed the certificate in use")
	}
}

func TestIssueRefusesBadInput(t *testing.T) {
	dir := t.TempDir()
	if _, err := certs.Issue(dir, certs.Request{Kind: certs.Client, Name: "alice"}); err == nil || !strings.Contains(err.Error(), "kvctl certs init") {
		t.Fatalf("issue without a CA: %v, want a hint to run certs init", err)
	}
	if _, err := certs.InitCA(dir, "", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := certs.InitCA(dir, "", 0); !errors.Is(err, certs.ErrExists) {
		t.Fatalf("second init: %v, want ErrExists", err)
	}
	if _, err := certs.Issue(dir, certs.Request{Kind: certs.Node, Name: "n1"}); err == nil || !strings.Contains(err.Error(), "--host") {
		t.Fatalf("node without hosts: %v", err)
	}
	if _, err := certs.Issue(dir, certs.Request{Kind: certs.Client, Name: "../etc/passwd"}); err == nil {
		t.Fatal("a name with a path was accepted")
	}
	issue(t, dir, certs.Request{Kind: certs.Client, Name: "bob"})
	if _, err := certs.Issue(dir, certs.Request{Kind: certs.Client, Name: "bob"}); !errors.Is(err, certs.ErrExists) {
		t.Fatalf("reissue: %v, want ErrExists", err)
	}
	st, err := os.Stat(filepath.Join(dir, "bob.key"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key mode %v, %v; want 0600", st.Mode(), err)
	}
	if _, err := tlsconf.ParseMinVersion("1.1"); err == nil {
		t.Fatal("TLS 1.1 accepted")
	}
}

func chainOf(t testing.TB, path string) []*x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return []*x509.Certificate{c}
}

// VerifiedBy remembers the chains it verified (it runs on every node-only
// call), but a remembered chain is still refused once it expires, and none
// is remembered across a reload of the CA bundle.
func TestVerifiedByRemembers(t *testing.T) {
	p := newPKI(t)
	src := p.source(t, "n1")
	node := chainOf(t, filepath.Join(p.dir, "n1.crt"))
	alice := chainOf(t, filepath.Join(p.dir, "alice.crt"))
	for range 2 {
		if err := src.VerifiedBy(node); err != nil {
			t.Fatalf("node certificate: %v", err)
		}
		if err := src.VerifiedBy(alice); err == nil || !strings.Contains(err.Error(), "not a node certificate") {
			t.Fatalf("client certificate: %v, want not a node certificate", err)
		}
	}
	late := node[0].NotAfter.Add(time.Hour)
	if err := tlsconf.VerifiedByAt(src, node, late); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("a remembered chain after its expiry: %v, want expired", err)
	}
	early := node[0].NotBefore.Add(-time.Hour)
	if err := tlsconf.VerifiedByAt(src, node, early); err == nil {
		t.Fatal("a remembered chain before it is valid: verified")
	}
	if err := src.VerifiedBy(node); err != nil {
		t.Fatalf("node certificate again: %v", err)
	}
	// The CA is replaced: the same chain is now refused.
	other := newPKI(t)
	if err := os.Rename(filepath.Join(other.dir, certs.CACert), p.files("n1").CA); err != nil {
		t.Fatal(err)
	}
	if err := src.Reload(); err != nil {
		t.Fatal(err)
	}
	if err := src.VerifiedBy(node); err == nil || !strings.Contains(err.Error(), "unknown authority") {
		t.Fatalf("after the CA was replaced: %v, want unknown authority", err)
	}
}

// BenchmarkVerifiedBy is the per-call cost of the node-only check.
func BenchmarkVerifiedBy(b *testing.B) {
	dir := b.TempDir()
	if _, err := certs.InitCA(dir, "", 0); err != nil {
		b.Fatal(err)
	}
	if _, err := certs.Issue(dir, certs.Request{Kind: certs.Node, Name: "n1", Hosts: []string{"127.0.0.1"}}); err != nil {
		b.Fatal(err)
	}
	p := pki{dir}
	src, err := tlsconf.Load(p.files("n1"), tls.VersionTLS12)
	if err != nil {
		b.Fatal(err)
	}
	node := chainOf(b, filepath.Join(dir, "n1.crt"))
	b.ResetTimer()
	for range b.N {
		if err := src.VerifiedBy(node); err != nil {
			b.Fatal(err)
		}
	}
}

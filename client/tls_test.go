package client_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/capkv/capkv/client"
	"github.com/capkv/capkv/internal/certs"
	"github.com/capkv/capkv/internal/dial"
	"github.com/capkv/capkv/internal/tlsconf"
)

func issue(t *testing.T, dir string, r certs.Request) tls.Certificate {
	t.Helper()
	p, err := certs.Issue(dir, r)
	if err != nil {
		t.Fatal(err)
	}
	c, err := tls.LoadX509KeyPair(p.Cert, p.Key)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func caPool(t *testing.T, dir string) *x509.CertPool {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, certs.CACert))
	if err != nil {
		t.Fatal(err)
	}
	p := x509.NewCertPool()
	p.AppendCertsFromPEM(b)
	return p
}

func serveGRPC(t *testing.T, sec dial.Security) string {
	t.Helper()
	opts, err := sec.ServerOptions()
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(opts...)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

// When TLS is what keeps client and node apart, the error says so (and
// which side to fix), not gRPC's transport text.
func TestTLSMismatchErrors(t *testing.T) {
	dir, other := t.TempDir(), t.TempDir()
	for _, d := range []string{dir, other} {
		if _, err := certs.InitCA(d, "", 0); err != nil {
			t.Fatal(err)
		}
	}
	issue(t, dir, certs.Request{Kind: certs.Node, Name: "n1", Hosts: []string{"127.0.0.1"}})
	src, err := tlsconf.Load(tlsconf.Files{Cert: filepath.Join(dir, "n1.crt"), Key: filepath.Join(dir, "n1.key"), CA: filepath.Join(dir, certs.CACert)}, tls.VersionTLS12)
	if err != nil {
		t.Fatal(err)
	}
	tlsNode := serveGRPC(t, dial.NodeTLS(src, nil, true))
	plainNode := serveGRPC(t, dial.Plaintext)
	alice := issue(t, dir, certs.Request{Kind: certs.Client, Name: "alice"})
	mallory := issue(t, other, certs.Request{Kind: certs.Client, Name: "mallory"})
	expired := issue(t, dir, certs.Request{Kind: certs.Client, Name: "old", NotBefore: time.Now().Add(-48 * time.Hour), Lifetime: time.Hour})
	for _, c := range []struct {
		name string
		addr string
		tls  *tls.Config
		want string
	}{
		{"plaintext client, TLS node", tlsNode, nil, "the node serves TLS, and this client is plaintext"},
		{"TLS client, plaintext node", plainNode, &tls.Config{RootCAs: caPool(t, dir)}, "the node does not serve TLS"},
		{"certificate of another CA", tlsNode, &tls.Config{RootCAs: caPool(t, dir), Certificates: []tls.Certificate{mallory}}, "refused this client's certificate (remote error: tls: unknown certificate authority)"},
		{"expired certificate", tlsNode, &tls.Config{RootCAs: caPool(t, dir), Certificates: []tls.Certificate{expired}}, "refused this client's certificate (remote error: tls: expired certificate)"},
		{"no certificate", tlsNode, &tls.Config{RootCAs: caPool(t, dir)}, "refused this client's certificate"},
		{"TLS 1.3, another CA", tlsNode, &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: caPool(t, dir), Certificates: []tls.Certificate{mallory}}, "refused this client's certificate"},
		{"untrusted node", tlsNode, &tls.Config{RootCAs: caPool(t, other), Certificates: []tls.Certificate{alice}}, "does not trust the node's certificate"},
	} {
		_, err := client.New(context.Background(), client.Config{Endpoints: []string{c.addr}, TLS: c.tls, DialTimeout: 3 * time.Second})
		if !errors.Is(err, client.ErrUnauthenticated) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want ErrUnauthenticated saying %q", c.name, err, c.want)
		}
	}
	_, err = client.New(context.Background(), client.Config{Endpoints: []string{"https://" + tlsNode}})
	if !errors.Is(err, client.ErrInvalidArgument) || !strings.Contains(err.Error(), "https:// means TLS") {
		t.Errorf("https:// without TLS: %v", err)
	}
}

package jepsen

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"google.golang.org/grpc"

	"github.com/capkv/capkv/internal/certs"
	"github.com/capkv/capkv/internal/dial"
)

// clusterPKI is the certificates of a TLS cluster under test: a CA, one
// node certificate per node (for its address) and the harness's client
// certificate, all in one directory of the run.
type clusterPKI struct {
	dir    string
	client *tls.Config
}

const harnessIdentity = "kvjepsen"

func newClusterPKI(dir string, nodes map[string]string) (*clusterPKI, error) {
	if _, err := certs.InitCA(dir, "kvjepsen CA", 0); err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	// The harness's certificate is a node certificate: with TLS on, only
	// nodes may set fault rules (kvd --test-faults).
	reqs := []certs.Request{{Kind: certs.Node, Name: harnessIdentity, Hosts: []string{"127.0.0.1"}}}
	for id, addr := range nodes {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		reqs = append(reqs, certs.Request{Kind: certs.Node, Name: id, Hosts: []string{host, "127.0.0.1", "localhost"}})
	}
	for _, r := range reqs {
		if _, err := certs.Issue(dir, r); err != nil {
			return nil, fmt.Errorf("tls: %w", err)
		}
	}
	p := &clusterPKI{dir: dir}
	ca, err := os.ReadFile(filepath.Join(dir, certs.CACert))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, harnessIdentity+".crt"), filepath.Join(dir, harnessIdentity+".key"))
	if err != nil {
		return nil, err
	}
	p.client = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, Certificates: []tls.Certificate{pair}}
	return p, nil
}

// kvdFlags are node id's TLS flags: mutual TLS, client certificates required.
func (p *clusterPKI) kvdFlags(id string) []string { return p.kvdFlagsIn(p.dir, id) }

// kvdFlagsIn are kvdFlags for a node that sees nodeFiles in dir (a container's mount).
func (p *clusterPKI) kvdFlagsIn(dir, id string) []string {
	return []string{"--cert-file", filepath.Join(dir, id+".crt"), "--key-file", filepath.Join(dir, id+".key"),
		"--trusted-ca-file", filepath.Join(dir, certs.CACert), "--client-cert-auth"}
}

// nodeFiles are the names of the files in dir node id runs with.
func (p *clusterPKI) nodeFiles(id string) []string {
	return []string{certs.CACert, id + ".crt", id + ".key"}
}

// issue makes the certificate of a node that joins during the run.
func (p *clusterPKI) issue(id, addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if _, err := certs.Issue(p.dir, certs.Request{Kind: certs.Node, Name: id, Hosts: []string{host, "127.0.0.1", "localhost"}}); err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	return nil
}

func (p *clusterPKI) dialOption() grpc.DialOption { return dial.ClientTLS(p.client).DialOption() }

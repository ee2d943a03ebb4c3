package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/capkv/capkv/internal/certs"
	"github.com/capkv/capkv/internal/dial"
	"github.com/capkv/capkv/internal/tlsconf"
	"github.com/capkv/capkv/ring"
)

// devClientName is the client identity kvd dev --tls issues a certificate for.
const devClientName = "dev-client"

// devPKI is the certificate directory of kvd dev --tls: a CA, one node
// certificate per node and one client certificate, made on the first start
// and reused afterwards.
type devPKI struct{ dir string }

func (p devPKI) caCert() string       { return filepath.Join(p.dir, certs.CACert) }
func (p devPKI) cert(n string) string { return filepath.Join(p.dir, n+".crt") }
func (p devPKI) key(n string) string  { return filepath.Join(p.dir, n+".key") }

// setupDevPKI creates what is missing of the dev cluster's certificates.
func setupDevPKI(dataDir, host string, peers []ring.Node) (devPKI, error) {
	p := devPKI{filepath.Join(dataDir, "tls")}
	if _, err := os.Stat(p.caCert()); errors.Is(err, os.ErrNotExist) {
		if _, err := certs.InitCA(p.dir, "capkv dev CA", 0); err != nil {
			return p, fmt.Errorf("kvd dev --tls: %w", err)
		}
	}
	reqs := []certs.Request{{Kind: certs.Client, Name: devClientName}}
	for _, n := range peers {
		reqs = append(reqs, certs.Request{Kind: certs.Node, Name: n.ID, Hosts: []string{host, "127.0.0.1", "localhost"}})
	}
	for _, r := range reqs {
		if _, err := os.Stat(p.cert(r.Name)); err == nil {
			continue
		}
		if _, err := certs.Issue(p.dir, r); err != nil {
			return p, fmt.Errorf("kvd dev --tls: %w", err)
		}
	}
	return p, nil
}

// security is node id's policy: mutual TLS, client certificates required.
func (p devPKI) security(id string) (dial.Security, error) {
	src, err := tlsconf.Load(tlsconf.Files{Cert: p.cert(id), Key: p.key(id), CA: p.caCert()}, tls.VersionTLS12)
	if err != nil {
		return dial.Security{}, err
	}
	return dial.NodeTLS(src, src, true), nil
}

// kvctlFlags are the flags kvctl needs for the dev cluster.
func (p devPKI) kvctlFlags() string {
	return fmt.Sprintf("--cacert %s --cert %s --key %s", p.caCert(), p.cert(devClientName), p.key(devClientName))
}

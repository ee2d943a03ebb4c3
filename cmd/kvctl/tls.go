package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
)

// tlsOn reports whether any of --cacert, --cert, --key was given: the
// client then dials every node with TLS and never in plaintext.
func (g *globals) tlsOn() bool { return g.cacert != "" || g.cert != "" || g.key != "" }

// tlsConfig builds the client's TLS configuration from --cacert, --cert and
// --key (etcdctl's names); nil when TLS is off. Without --cacert the
// system's roots verify the nodes.
func (g *globals) tlsConfig() (*tls.Config, error) {
	if !g.tlsOn() {
		return nil, nil
	}
	if (g.cert == "") != (g.key == "") {
		return nil, usageError{fmt.Errorf("--cert %q and --key %q: give both (a client certificate and its key) or neither", g.cert, g.key)}
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if g.cacert != "" {
		b, err := os.ReadFile(g.cacert)
		if err != nil {
			return nil, fmt.Errorf("--cacert: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("--cacert %s holds no PEM certificate", g.cacert)
		}
	}
	if g.cert != "" {
		c, err := tls.LoadX509KeyPair(g.cert, g.key)
		if err != nil {
			return nil, fmt.Errorf("--cert %s with --key %s: %w", g.cert, g.key, err)
		}
		cfg.Certificates = []tls.Certificate{c}
	}
	return cfg, nil
}

// Package tlsconf turns certificate files into the TLS configurations of a
// node's listeners and dials, and reloads them without a restart.
//
// A Source holds one certificate, its key and the trusted CA bundle. Every
// handshake reads the Source's current state, so after Reload (on SIGHUP or
// when the files changed) new connections use the new certificate and CA
// bundle while open ones keep theirs. A reload that fails (a missing file,
// a key that does not match) keeps the previous state and reports why:
// a bad rotation never takes a running node off the network.
package tlsconf

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// Files names the PEM files of one identity.
type Files struct {
	Cert, Key string
	// CA is the bundle of trusted CA certificates peers are verified with.
	CA string
}

// ParseMinVersion reads --tls-min-version: "1.2" or "1.3".
func ParseMinVersion(s string) (uint16, error) {
	switch s {
	case "", "1.2":
		return tls.VersionTLS12, nil
	case "1.3":
		return tls.VersionTLS13, nil
	}
	return 0, fmt.Errorf("TLS version %q: want 1.2 or 1.3", s)
}

// Source is the reloadable state behind a node's TLS configurations.
type Source struct {
	files Files
	min   uint16

	mu struct {
		sync.Mutex
		cert  *tls.Certificate
		pool  *x509.CertPool
		caPEM []byte // the bundle pool was built from, to merge bundles
	}

	// verified remembers the chains VerifiedBy accepted (it runs on every
	// node-only call; an ECDSA chain verification costs more than a Raft
	// heartbeat). Guarded by its own lock, never held with mu.
	verified struct {
		sync.Mutex
		m map[[32]byte]verifiedChain
	}
}

// verifiedChain is a chain VerifiedBy accepted against pool, and the time
// span in which every certificate of its verified chains is valid.
type verifiedChain struct {
	pool                *x509.CertPool
	notBefore, notAfter time.Time
}

// maxVerified bounds the remembered chains: a node has a few peers, and
// a full cache is dropped, not grown.
const maxVerified = 1024

// Load reads files; every problem is reported with the file it is in.
func Load(files Files, minVersion uint16) (*Source, error) {
	var missing []error
	for flag, f := range map[string]string{"certificate": files.Cert, "key": files.Key, "trusted CA": files.CA} {
		if f == "" {
			missing = append(missing, fmt.Errorf("TLS needs a %s file", flag))
		}
	}
	if err := errors.Join(missing...); err != nil {
		return nil, err
	}
	s := &Source{files: files, min: minVersion}
	if err := s.Reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// Reload re-reads the files. On error the previous state stays in use.
func (s *Source) Reload() error {
	cert, err := tls.LoadX509KeyPair(s.files.Cert, s.files.Key)
	if err != nil {
		return fmt.Errorf("load certificate %s with key %s: %w", s.files.Cert, s.files.Key, err)
	}
	pemCA, err := os.ReadFile(s.files.CA)
	if err != nil {
		return fmt.Errorf("read trusted CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemCA) {
		return fmt.Errorf("trusted CA file %s holds no PEM certificate", s.files.CA)
	}
	if cert.Leaf == nil && len(cert.Certificate) > 0 {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return fmt.Errorf("parse certificate %s: %w", s.files.Cert, err)
		}
	}
	s.mu.Lock()
	s.mu.cert, s.mu.pool, s.mu.caPEM = &cert, pool, pemCA
	s.mu.Unlock()
	return nil
}

// Files returns the files s reads.
func (s *Source) Files() Files { return s.files }

// Pool returns the current trusted CA bundle.
func (s *Source) Pool() *x509.CertPool {
	_, p := s.current()
	return p
}

// mergedPool is the union of the sources' current CA bundles.
func mergedPool(srcs ...*Source) *x509.CertPool {
	if len(srcs) == 1 || (len(srcs) == 2 && srcs[0] == srcs[1]) {
		return srcs[0].Pool()
	}
	pool := x509.NewCertPool()
	for _, s := range srcs {
		s.mu.Lock()
		pool.AppendCertsFromPEM(s.mu.caPEM)
		s.mu.Unlock()
	}
	return pool
}

// Node is the configuration of a node's one listener, which clients and
// peers share: it presents serve's certificate and accepts client
// certificates signed by serve's or peer's CAs. With clientCertAuth every
// connection must present one; without, clients may come without (peer
// calls still need one: see VerifiedBy, which the node checks per call).
func Node(serve, peer *Source, clientCertAuth bool) *tls.Config {
	return &tls.Config{
		MinVersion: serve.min,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			cert, _ := serve.current()
			c := &tls.Config{MinVersion: serve.min, Certificates: []tls.Certificate{*cert}, ClientCAs: mergedPool(serve, peer), ClientAuth: tls.VerifyClientCertIfGiven}
			if clientCertAuth {
				c.ClientAuth = tls.RequireAndVerifyClientCert
			}
			return c, nil
		},
	}
}

// PeerClient is the configuration of a node's dials to other nodes: it
// presents peer's certificate and verifies the other node's certificate
// (which is its serve certificate: one port serves clients and peers)
// against both CA bundles.
func PeerClient(serve, peer *Source) *tls.Config {
	c := peer.Client("")
	c.RootCAs = mergedPool(serve, peer)
	return c
}

// VerifiedBy reports whether the client certificate chain of a connection
// (its leaf first) is a node's: signed by s's current CA bundle and valid
// for both client and server use, as node certificates are (they serve and
// dial) and client certificates are not. A cluster with one CA for clients
// and nodes tells them apart by this.
//
// An accepted chain is remembered until the CA bundle is reloaded, and
// until then it is accepted again without a new verification while every
// certificate of it is within its validity period; refusals are not
// remembered.
func (s *Source) VerifiedBy(chain []*x509.Certificate) error {
	return s.verifiedByAt(chain, time.Now())
}

func (s *Source) verifiedByAt(chain []*x509.Certificate, now time.Time) error {
	if len(chain) == 0 {
		return errors.New("no client certificate")
	}
	pool := s.Pool()
	h := sha256.New()
	for _, c := range chain {
		h.Write(c.Raw)
	}
	var key [32]byte
	h.Sum(key[:0])
	s.verified.Lock()
	v, ok := s.verified.m[key]
	s.verified.Unlock()
	if ok && v.pool == pool && !now.Before(v.notBefore) && !now.After(v.notAfter) {
		return nil
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	v = verifiedChain{pool: pool, notAfter: chain[0].NotAfter, notBefore: chain[0].NotBefore}
	for _, u := range []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth} {
		chains, err := chain[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{u}, CurrentTime: now})
		if err != nil {
			if u == x509.ExtKeyUsageServerAuth {
				return fmt.Errorf("certificate %q is not a node certificate (not valid for server use): %w", chain[0].Subject.CommonName, err)
			}
			return fmt.Errorf("certificate %q: %w", chain[0].Subject.CommonName, err)
		}
		for _, ch := range chains {
			for _, c := range ch {
				if c.NotAfter.Before(v.notAfter) {
					v.notAfter = c.NotAfter
				}
				if c.NotBefore.After(v.notBefore) {
					v.notBefore = c.NotBefore
				}
			}
		}
	}
	s.verified.Lock()
	if s.verified.m == nil || len(s.verified.m) >= maxVerified {
		s.verified.m = make(map[[32]byte]verifiedChain)
	}
	s.verified.m[key] = v
	s.verified.Unlock()
	return nil
}

func (s *Source) current() (*tls.Certificate, *x509.CertPool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.cert, s.mu.pool
}

// Leaf returns the current certificate, parsed.
func (s *Source) Leaf() (*x509.Certificate, error) {
	c, _ := s.current()
	if c.Leaf != nil {
		return c.Leaf, nil
	}
	return x509.ParseCertificate(c.Certificate[0])
}

// Server is the configuration of a listener. With clientCerts, a client
// must present a certificate the trusted CAs signed (mutual TLS; nodes
// always require it of each other).
func (s *Source) Server(clientCerts bool) *tls.Config {
	return &tls.Config{
		MinVersion: s.min,
		// Built per handshake, so that a reload applies to the next one.
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			cert, pool := s.current()
			c := &tls.Config{MinVersion: s.min, Certificates: []tls.Certificate{*cert}, ClientCAs: pool, ClientAuth: tls.NoClientCert}
			if clientCerts {
				c.ClientAuth = tls.RequireAndVerifyClientCert
			}
			return c, nil
		},
	}
}

// Client is the configuration of a dial. serverName, when set, is the name
// the server's certificate must carry; otherwise the dialed host is used
// (gRPC sets it from the target). The client certificate is read at each
// handshake; the CA bundle is the one of the moment Client is called, so
// a changed bundle applies to connections configured after the reload
// (crypto/tls verifies the server, host name included, against RootCAs;
// a custom verifier could not see the host gRPC fills in per connection).
func (s *Source) Client(serverName string) *tls.Config {
	_, pool := s.current()
	return &tls.Config{
		MinVersion: s.min,
		ServerName: serverName,
		RootCAs:    pool,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			cert, _ := s.current()
			return cert, nil
		},
	}
}

// Package certs makes the certificates a capkv cluster runs mutual TLS
// with: one certificate authority per cluster, a certificate per node
// (server and client use, since nodes dial each other) and one per client
// identity (the common name is the identity keyspace grants name). It is
// what `kvctl certs` and `kvd dev --tls` run; a cluster may as well use
// certificates from any other CA.
//
// Keys are ECDSA P-256, written PEM-encoded with mode 0600; certificates
// 0644. Nothing is ever overwritten: issuing a name that exists is an error,
// so a rotation is a deliberate delete (or a new directory) and a reload.
package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// Default lifetimes.
const (
	DefaultCALifetime   = 10 * 365 * 24 * time.Hour
	DefaultLeafLifetime = 365 * 24 * time.Hour
)

// File names inside a certificate directory.
const (
	CACert = "ca.crt"
	CAKey  = "ca.key"
)

// ErrExists is returned instead of overwriting a certificate or key.
var ErrExists = errors.New("already exists")

// Kind is what a leaf certificate is for.
type Kind int

const (
	// Node certificates serve and dial: ExtKeyUsage server and client.
	Node Kind = iota
	// Client certificates only dial.
	Client
)

func (k Kind) String() string {
	if k == Node {
		return "node"
	}
	return "client"
}

// Request describes a leaf certificate.
type Request struct {
	Kind Kind
	// Name is the common name: the node ID or the client identity. It
	// names the files too (NAME.crt, NAME.key).
	Name string
	// Hosts are the DNS names and IP addresses the node is reached at
	// (subject alternative names); nodes need at least one.
	Hosts    []string
	Lifetime time.Duration // 0: DefaultLeafLifetime
	// NotBefore backdates or postdates the certificate (tests make expired
	// ones); zero: now, less a minute of clock skew.
	NotBefore time.Time
}

// Paths are the files of one certificate.
type Paths struct{ Cert, Key string }

var nameRule = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// InitCA creates a certificate authority in dir (created if missing) and
// returns the paths of its certificate and key.
func InitCA(dir, name string, lifetime time.Duration) (Paths, error) {
	if name == "" {
		name = "capkv CA"
	}
	if lifetime <= 0 {
		lifetime = DefaultCALifetime
	}
	p := Paths{Cert: filepath.Join(dir, CACert), Key: filepath.Join(dir, CAKey)}
	if err := refuseExisting(p); err != nil {
		return Paths{}, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Paths{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"capkv"}},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(lifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return Paths{}, fmt.Errorf("create CA certificate: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Paths{}, err
	}
	return p, write(p, der, key)
}

// Issue signs a leaf certificate with the CA in dir and writes it there as
// NAME.crt and NAME.key.
func Issue(dir string, r Request) (Paths, error) {
	if !nameRule.MatchString(r.Name) {
		return Paths{}, fmt.Errorf("certificate name %q: want 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", r.Name)
	}
	if r.Kind == Node && len(r.Hosts) == 0 {
		return Paths{}, fmt.Errorf("node certificate %q: give the host names or addresses it is reached at (--host), e.g. --host 10.0.0.1,%s", r.Name, r.Name)
	}
	if r.Lifetime <= 0 {
		r.Lifetime = DefaultLeafLifetime
	}
	ca, caKey, err := LoadCA(dir)
	if err != nil {
		return Paths{}, err
	}
	p := Paths{Cert: filepath.Join(dir, r.Name+".crt"), Key: filepath.Join(dir, r.Name+".key")}
	if err := refuseExisting(p); err != nil {
		return Paths{}, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Paths{}, err
	}
	nb := r.NotBefore
	if nb.IsZero() {
		nb = time.Now().Add(-time.Minute)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: r.Name, Organization: []string{"capkv " + r.Kind.String()}},
		NotBefore:    nb,
		NotAfter:     nb.Add(r.Lifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if r.Kind == Node {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	for _, h := range r.Hosts {
		h = strings.TrimSpace(h)
		switch ip := net.ParseIP(h); {
		case h == "":
		case ip != nil:
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		default:
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return Paths{}, fmt.Errorf("sign %s certificate %q: %w", r.Kind, r.Name, err)
	}
	return p, write(p, der, key)
}

// LoadCA reads the CA certificate and key of dir.
func LoadCA(dir string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, CACert))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil, fmt.Errorf("no CA in %s: run `kvctl certs init --dir %s` first", dir, dir)
		}
		return nil, nil, err
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, CAKey))
	if err != nil {
		return nil, nil, fmt.Errorf("CA key: %w", err)
	}
	cb, _ := pem.Decode(certPEM)
	if cb == nil || cb.Type != "CERTIFICATE" {
		return nil, nil, fmt.Errorf("%s: not a PEM certificate", filepath.Join(dir, CACert))
	}
	ca, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", filepath.Join(dir, CACert), err)
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return nil, nil, fmt.Errorf("%s: not a PEM key", filepath.Join(dir, CAKey))
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", filepath.Join(dir, CAKey), err)
	}
	if !ca.IsCA {
		return nil, nil, fmt.Errorf("%s is not a CA certificate", filepath.Join(dir, CACert))
	}
	return ca, key, nil
}

func refuseExisting(p Paths) error {
	for _, f := range []string{p.Cert, p.Key} {
		if _, err := os.Stat(f); err == nil {
			return fmt.Errorf("%s: %w (certs never overwrites; remove it or use another --dir)", f, ErrExists)
		}
	}
	return nil
}

func write(p Paths, der []byte, key *ecdsa.PrivateKey) error {
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	// The key first, exclusively: a crash leaves no certificate without key.
	if err := writeNew(p.Key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return err
	}
	return writeNew(p.Cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

func writeNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s: %w", path, ErrExists)
		}
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return n
}

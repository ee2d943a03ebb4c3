package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/capkv/capkv/internal/dial"
	"github.com/capkv/capkv/internal/tlsconf"
)

// tlsSettings are the TLS flags of a node, in etcd's shape, and the same
// keys of the config file. Clients and peers share the node's one port: it
// presents --cert-file to both; --peer-* is what the node presents and
// trusts on node-to-node connections (default: the client ones).
type tlsSettings struct {
	CertFile          string `json:"cert_file"`
	KeyFile           string `json:"key_file"`
	TrustedCAFile     string `json:"trusted_ca_file"`
	ClientCertAuth    bool   `json:"client_cert_auth"`
	PeerCertFile      string `json:"peer_cert_file"`
	PeerKeyFile       string `json:"peer_key_file"`
	PeerTrustedCAFile string `json:"peer_trusted_ca_file"`
	MinVersion        string `json:"tls_min_version"`
	// AdminIdentities are client identities allowed everything on every
	// keyspace (internal/access), comma-separated; they need ClientCertAuth.
	AdminIdentities string `json:"admin_identities"`
}

func (s *tlsSettings) addFlags(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&s.CertFile, "cert-file", "", "TLS: this node's certificate (PEM), presented to clients and peers; turns TLS on (no plaintext listener or dial remains)")
	fl.StringVar(&s.KeyFile, "key-file", "", "TLS: the key of --cert-file")
	fl.StringVar(&s.TrustedCAFile, "trusted-ca-file", "", "TLS: CA bundle client certificates are verified with")
	fl.BoolVar(&s.ClientCertAuth, "client-cert-auth", false, "TLS: require every client to present a certificate of --trusted-ca-file")
	fl.StringVar(&s.PeerCertFile, "peer-cert-file", "", "TLS: certificate this node presents to other nodes (default: --cert-file)")
	fl.StringVar(&s.PeerKeyFile, "peer-key-file", "", "TLS: the key of --peer-cert-file (default: --key-file)")
	fl.StringVar(&s.PeerTrustedCAFile, "peer-trusted-ca-file", "", "TLS: CA bundle node certificates are verified with (default: --trusted-ca-file); node-to-node calls always need one")
	fl.StringVar(&s.MinVersion, "tls-min-version", "1.2", "TLS: oldest protocol version accepted: 1.2 or 1.3")
	fl.StringVar(&s.AdminIdentities, "admin-identities", "", "with --client-cert-auth: client certificate names (comma-separated) allowed everything on every keyspace; when set, only they may create keyspaces")
}

// override sets the fields whose flags were given on the command line.
func (s *tlsSettings) override(cmd *cobra.Command, flags tlsSettings) {
	for name, p := range map[string]struct{ to, from *string }{
		"cert-file": {&s.CertFile, &flags.CertFile}, "key-file": {&s.KeyFile, &flags.KeyFile},
		"trusted-ca-file": {&s.TrustedCAFile, &flags.TrustedCAFile}, "peer-cert-file": {&s.PeerCertFile, &flags.PeerCertFile},
		"peer-key-file": {&s.PeerKeyFile, &flags.PeerKeyFile}, "peer-trusted-ca-file": {&s.PeerTrustedCAFile, &flags.PeerTrustedCAFile},
		"tls-min-version": {&s.MinVersion, &flags.MinVersion}, "admin-identities": {&s.AdminIdentities, &flags.AdminIdentities},
	} {
		if cmd.Flags().Changed(name) {
			*p.to = *p.from
		}
	}
	if cmd.Flags().Changed("client-cert-auth") {
		s.ClientCertAuth = flags.ClientCertAuth
	}
}

func (s tlsSettings) on() bool {
	return s.CertFile != "" || s.KeyFile != "" || s.TrustedCAFile != "" || s.ClientCertAuth ||
		s.PeerCertFile != "" || s.PeerKeyFile != "" || s.PeerTrustedCAFile != ""
}

// security loads the certificates: plaintext when no TLS setting is given.
func (s tlsSettings) security() (dial.Security, error) {
	minVer, err := tlsconf.ParseMinVersion(s.MinVersion)
	if err != nil {
		return dial.Security{}, fmt.Errorf("--tls-min-version: %w", err)
	}
	if len(s.admins()) > 0 && !s.ClientCertAuth {
		return dial.Security{}, fmt.Errorf("--admin-identities %s needs --client-cert-auth: identities are the names of client certificates",
			s.AdminIdentities)
	}
	if !s.on() {
		return dial.Plaintext, nil
	}
	if s.CertFile == "" || s.KeyFile == "" || s.TrustedCAFile == "" {
		return dial.Security{}, fmt.Errorf("TLS needs --cert-file, --key-file and --trusted-ca-file (got cert %q, key %q, trusted CA %q)",
			s.CertFile, s.KeyFile, s.TrustedCAFile)
	}
	serve, err := tlsconf.Load(tlsconf.Files{Cert: s.CertFile, Key: s.KeyFile, CA: s.TrustedCAFile}, minVer)
	if err != nil {
		return dial.Security{}, err
	}
	pf := tlsconf.Files{Cert: or(s.PeerCertFile, s.CertFile), Key: or(s.PeerKeyFile, s.KeyFile), CA: or(s.PeerTrustedCAFile, s.TrustedCAFile)}
	peer := serve
	if pf != serve.Files() {
		if peer, err = tlsconf.Load(pf, minVer); err != nil {
			return dial.Security{}, fmt.Errorf("peer TLS: %w", err)
		}
	}
	return dial.NodeTLS(serve, peer, s.ClientCertAuth), nil
}

// admins are the names of AdminIdentities.
func (s tlsSettings) admins() []string {
	var out []string
	for _, a := range strings.Split(s.AdminIdentities, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// serverTLS is the configuration of the node's HTTP endpoints (metrics,
// pprof): with TLS on they are served over TLS as the gRPC port is, with
// the same certificates and client-certificate rule; nil for plaintext.
func serverTLS(sec dial.Security) *tls.Config {
	srcs := sec.Sources()
	if len(srcs) == 0 {
		return nil
	}
	return tlsconf.Node(srcs[0], srcs[len(srcs)-1], sec.ClientCertAuth())
}

// reloadOnHUP reloads every certificate source on SIGHUP until ctx ends,
// logging each outcome; a failed reload keeps the certificates in use.
// Without TLS it still takes the signal: SIGHUP's default action would stop
// the node, and an operator who sends it to every kvd expects a reload.
func reloadOnHUP(ctx context.Context, sec dial.Security, log *slog.Logger) {
	srcs := sec.Sources()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				if len(srcs) == 0 {
					log.Info("SIGHUP: TLS is off, no certificates to reload")
					continue
				}
				reload(srcs, log)
			}
		}
	}()
}

func reload(srcs []*tlsconf.Source, log *slog.Logger) {
	var errs []error
	for _, s := range srcs {
		if err := s.Reload(); err != nil {
			errs = append(errs, err)
			continue
		}
		leaf, err := s.Leaf()
		if err == nil {
			log.Info("TLS certificates reloaded", "cert", s.Files().Cert, "serial", leaf.SerialNumber.Text(16), "not_after", leaf.NotAfter)
		}
	}
	if err := errors.Join(errs...); err != nil {
		log.Error("TLS reload failed; the previous certificates stay in use", "err", err)
	}
}

// reloadOnChange polls the files of every certificate source each interval
// (their size and modification time) and reloads all sources when any
// changed, so that a rotation by a tool that only replaces files (cert-manager,
// a renewal cron job) takes effect without a signal. A rotation caught
// half-way (a new certificate, the old key) fails to reload, keeps the
// certificates in use, and is retried at the next change. interval <= 0: off.
// The returned wait blocks until the poller has stopped (after ctx ends).
func reloadOnChange(ctx context.Context, sec dial.Security, interval time.Duration, log *slog.Logger) (wait func()) {
	srcs := sec.Sources()
	done := make(chan struct{})
	if len(srcs) == 0 || interval <= 0 {
		close(done)
		return func() { <-done }
	}
	go func() {
		defer close(done)
		last := filesStamp(srcs)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if now := filesStamp(srcs); now != last {
				last = now
				log.Info("TLS files changed; reloading")
				reload(srcs, log)
			}
		}
	}()
	return func() { <-done }
}

// filesStamp sums up the size and modification time of every file of srcs
// (a missing file counts as its own state).
func filesStamp(srcs []*tlsconf.Source) string {
	var b strings.Builder
	for _, s := range srcs {
		f := s.Files()
		for _, p := range []string{f.Cert, f.Key, f.CA} {
			if st, err := os.Stat(p); err == nil {
				fmt.Fprintf(&b, "%s:%d:%d;", p, st.Size(), st.ModTime().UnixNano())
			} else {
				fmt.Fprintf(&b, "%s:missing;", p)
			}
		}
	}
	return b.String()
}

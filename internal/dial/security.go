package dial

import (
	"context"
	"crypto/tls"
	"fmt"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/peer"

	"github.com/capkv/capkv/internal/kverrors"
	"github.com/capkv/capkv/internal/tlsconf"
)

// Security is the one transport policy of a process's connections and
// servers: plaintext (the zero value) or TLS. A process holds one Security
// and makes every dial and server through it, so that with TLS on nothing
// listens or dials in plaintext.
type Security struct {
	// A node: serves with serve's certificate, dials peers with peer's.
	serve, peer    *tlsconf.Source
	clientCertAuth bool
	// A client: dials with this configuration.
	client *tls.Config
}

// Plaintext is the policy of a cluster without TLS.
var Plaintext = Security{}

// NodeTLS is the policy of a node with mutual TLS: its listener presents
// serve's certificate (to clients and peers alike, on the one port) and
// requires a client certificate when clientCertAuth; its dials to other
// nodes present peer's certificate. Calls of the node-only services
// (PeerServices) always need a node certificate of peer's CA, checked per
// call (tlsconf.Source.VerifiedBy).
func NodeTLS(serve, peer *tlsconf.Source, clientCertAuth bool) Security {
	if peer == nil {
		peer = serve
	}
	return Security{serve: serve, peer: peer, clientCertAuth: clientCertAuth}
}

// ClientTLS is the policy of a client that dials with cfg (nil: plaintext).
func ClientTLS(cfg *tls.Config) Security { return Security{client: cfg} }

// TLS reports whether connections use TLS.
func (s Security) TLS() bool { return s.serve != nil || s.client != nil }

// ClientCertAuth reports whether a node policy requires client certificates.
func (s Security) ClientCertAuth() bool { return s.clientCertAuth }

// String names the policy for logs and banners.
func (s Security) String() string {
	switch {
	case s.serve != nil && s.clientCertAuth:
		return "mutual TLS (client certificates required)"
	case s.serve != nil:
		return "TLS (peers with certificates, clients optional)"
	case s.client != nil:
		return "TLS"
	}
	return "plaintext"
}

// Sources are the reloadable certificate sources of a node policy (none
// for plaintext or a client), for SIGHUP to reload.
func (s Security) Sources() []*tlsconf.Source {
	switch {
	case s.serve == nil:
		return nil
	case s.peer == s.serve:
		return []*tlsconf.Source{s.serve}
	}
	return []*tlsconf.Source{s.serve, s.peer}
}

// credentials are built per connection: a node's reads the CA bundle of
// the moment (a reload applies to connections made after it).
func (s Security) credentials() credentials.TransportCredentials {
	switch {
	case s.serve != nil:
		return credentials.NewTLS(tlsconf.PeerClient(s.serve, s.peer))
	case s.client != nil:
		return credentials.NewTLS(s.client.Clone())
	}
	return insecure.NewCredentials()
}

// Conn is the package's Conn with this policy's transport credentials.
func (s Security) Conn(addr string, extra ...grpc.DialOption) (*grpc.ClientConn, error) {
	return conn(addr, s.credentials(), extra...)
}

// DialOption is the policy's transport credentials as a dial option, for
// code that passes dial options around (the partition harness): given to
// Conn, it replaces the plaintext default.
func (s Security) DialOption() grpc.DialOption { return grpc.WithTransportCredentials(s.credentials()) }

// ServerOptions are ServerOptions plus this policy's credentials. A
// client-only policy (ClientTLS) cannot serve: it has no certificate.
func (s Security) ServerOptions() ([]grpc.ServerOption, error) {
	opts := ServerOptions()
	switch {
	case s.serve != nil:
		opts = append(opts, grpc.Creds(credentials.NewTLS(tlsconf.Node(s.serve, s.peer, s.clientCertAuth))),
			grpc.ChainUnaryInterceptor(s.peerOnlyUnary), grpc.ChainStreamInterceptor(s.peerOnlyStream))
	case s.client != nil:
		return nil, fmt.Errorf("a client TLS policy cannot serve (no server certificate)")
	}
	return opts, nil
}

// PeerServices are the gRPC services and methods only nodes may call when
// TLS is on: Raft traffic, ap replica traffic, registering a node (Join),
// a rebalancing move (the metadata group's mover), and the test-only fault
// hook (kvjepsen calls it with a node certificate).
var PeerServices = []string{"/capkv.v1.Raft/", "/capkv.v1.Replica/", "/capkv.v1.Admin/Join",
	"/capkv.v1.Admin/MovePartition", "/capkv.v1.Admin/SetFaults"}

func isPeerMethod(m string) bool {
	for _, p := range PeerServices {
		if strings.HasPrefix(m, p) {
			return true
		}
	}
	return false
}

// checkPeer refuses a node-only call whose connection did not present a
// node certificate of the peer CA.
func (s Security) checkPeer(ctx context.Context, method string) error {
	if !isPeerMethod(method) {
		return nil
	}
	why := "no client certificate"
	if p, ok := peer.FromContext(ctx); ok {
		if info, ok := p.AuthInfo.(credentials.TLSInfo); ok {
			err := s.peer.VerifiedBy(info.State.PeerCertificates)
			if err == nil {
				return nil
			}
			why = err.Error()
		}
	}
	return kverrors.ToStatus(fmt.Errorf("%w: %s is for nodes only and needs a node certificate of the peer CA (%s): %s",
		kverrors.ErrPermissionDenied, method, s.peer.Files().CA, why))
}

func (s Security) peerOnlyUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := s.checkPeer(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

func (s Security) peerOnlyStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if err := s.checkPeer(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	return h(srv, ss)
}

// Caller is who made a call on a node's server: the common name of the
// client certificate its connection presented, and whether that is a node
// certificate of the peer CA (as the node-only calls require). ok is false
// when the connection presented no certificate (plaintext, or TLS without
// --client-cert-auth).
func (s Security) Caller(ctx context.Context) (name string, node, ok bool) {
	p, found := peer.FromContext(ctx)
	if !found || s.peer == nil {
		return "", false, false
	}
	info, isTLS := p.AuthInfo.(credentials.TLSInfo)
	if !isTLS || len(info.State.PeerCertificates) == 0 {
		return "", false, false
	}
	chain := info.State.PeerCertificates
	return chain[0].Subject.CommonName, s.peer.VerifiedBy(chain) == nil, true
}

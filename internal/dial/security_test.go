package dial_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/internal/certs"
	"github.com/capkv/capkv/internal/dial"
	"github.com/capkv/capkv/internal/kverrors"
	"github.com/capkv/capkv/internal/tlsconf"
)

func source(t *testing.T, dir, name string, kind certs.Kind) *tlsconf.Source {
	t.Helper()
	if _, err := certs.Issue(dir, certs.Request{Kind: kind, Name: name, Hosts: []string{"127.0.0.1", "localhost"}}); err != nil {
		t.Fatal(err)
	}
	s, err := tlsconf.Load(tlsconf.Files{Cert: filepath.Join(dir, name+".crt"), Key: filepath.Join(dir, name+".key"), CA: filepath.Join(dir, certs.CACert)}, tls.VersionTLS12)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newCA(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if _, err := certs.InitCA(dir, "", 0); err != nil {
		t.Fatal(err)
	}
	return dir
}

type raftStub struct{ api.UnimplementedRaftServer }

// serveTLS runs a gRPC server with sec (health and a Raft stub) on loopback.
func serveTLS(t *testing.T, sec dial.Security) string {
	t.Helper()
	opts, err := sec.ServerOptions()
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(opts...)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	api.RegisterRaftServer(srv, raftStub{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

func check(t *testing.T, sec dial.Security, addr string) error {
	t.Helper()
	cc, err := sec.Conn(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	return err
}

func raftCall(t *testing.T, sec dial.Security, addr string) error {
	t.Helper()
	cc, err := sec.Conn(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = api.NewRaftClient(cc).Call(ctx, &api.RaftFrame{})
	return kverrors.FromStatus(err)
}

// A node policy serves only TLS: a TLS client gets answers, a plaintext
// one none; node-to-node services need a certificate of the peer CA even
// when clients may come without one.
func TestNodeTLS(t *testing.T) {
	ca := newCA(t)
	n1 := source(t, ca, "n1", certs.Node)
	n2 := source(t, ca, "n2", certs.Node)
	alice := source(t, ca, "alice", certs.Client)
	addr := serveTLS(t, dial.NodeTLS(n1, nil, false))

	if err := check(t, dial.Plaintext, addr); err == nil {
		t.Fatal("a plaintext client got an answer from a TLS server")
	}
	peer := dial.NodeTLS(n2, nil, false)
	if err := check(t, peer, addr); err != nil {
		t.Fatalf("node dialing node: %v", err)
	}
	if err := raftCall(t, peer, addr); errors.Is(err, kverrors.ErrPermissionDenied) {
		t.Fatalf("a node's Raft call was refused: %v", err)
	}
	noCert := dial.ClientTLS(&tls.Config{RootCAs: n1.Pool()})
	if err := check(t, noCert, addr); err != nil {
		t.Fatalf("client without certificate, client certs optional: %v", err)
	}
	if err := raftCall(t, noCert, addr); !errors.Is(err, kverrors.ErrPermissionDenied) {
		t.Fatalf("Raft call without a certificate: got %v, want ErrPermissionDenied", err)
	}
	// A client certificate of another CA is refused in the handshake; one of
	// the cluster CA is accepted.
	other := source(t, newCA(t), "mallory", certs.Client)
	if err := check(t, dial.ClientTLS(&tls.Config{RootCAs: n1.Pool(), Certificates: []tls.Certificate{leafPair(t, other)}}), addr); err == nil {
		t.Fatal("a certificate of another CA was accepted")
	}
	aliceTLS := dial.ClientTLS(&tls.Config{RootCAs: n1.Pool(), Certificates: []tls.Certificate{leafPair(t, alice)}})
	if err := check(t, aliceTLS, addr); err != nil {
		t.Fatalf("client certificate of the cluster CA: %v", err)
	}
	// A client certificate of the same CA is no node's: no Raft calls.
	if err := raftCall(t, aliceTLS, addr); !errors.Is(err, kverrors.ErrPermissionDenied) || !strings.Contains(err.Error(), `"alice" is not a node certificate`) {
		t.Fatalf("Raft call with a client certificate: got %v, want ErrPermissionDenied naming alice", err)
	}

	strict := serveTLS(t, dial.NodeTLS(n1, nil, true))
	if err := check(t, noCert, strict); err == nil {
		t.Fatal("--client-cert-auth: a client without certificate got an answer")
	}
	if _, err := dial.ClientTLS(&tls.Config{}).ServerOptions(); err == nil {
		t.Fatal("a client policy made server options")
	}
	if dial.Plaintext.TLS() || !peer.TLS() || len(peer.Sources()) != 1 {
		t.Fatalf("TLS() / Sources(): plaintext %v, node %v with %d sources", dial.Plaintext.TLS(), peer.TLS(), len(peer.Sources()))
	}
}

func leafPair(t *testing.T, s *tlsconf.Source) tls.Certificate {
	t.Helper()
	f := s.Files()
	c, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// A TLS policy's Pool dials its peers with TLS.
func TestPoolTLS(t *testing.T) {
	ca := newCA(t)
	n1 := source(t, ca, "n1", certs.Node)
	addr := serveTLS(t, dial.NodeTLS(n1, nil, true))
	for _, sec := range []dial.Security{dial.Plaintext, dial.NodeTLS(source(t, ca, "n2", certs.Node), nil, true)} {
		p := &dial.Pool{Resolve: func(string) (string, error) { return addr, nil }, Security: sec}
		cc, err := p.Peer("n1")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err = healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
		cancel()
		p.Close()
		if (err == nil) != sec.TLS() {
			t.Fatalf("pool with %s: health check err = %v", sec, err)
		}
	}
}

// Separate CAs for clients (A) and nodes (B), etcd's --peer-* shape: the
// one port presents the A-signed certificate, accepts client certificates
// of either CA, and node-only calls need a B-signed node certificate.
func TestSeparatePeerCA(t *testing.T) {
	a, b := newCA(t), newCA(t)
	serve1, peer1 := source(t, a, "n1", certs.Node), source(t, b, "n1", certs.Node)
	serve2, peer2 := source(t, a, "n2", certs.Node), source(t, b, "n2", certs.Node)
	addr := serveTLS(t, dial.NodeTLS(serve1, peer1, true))
	node2 := dial.NodeTLS(serve2, peer2, true)
	if err := check(t, node2, addr); err != nil {
		t.Fatalf("node with a peer-CA certificate: %v", err)
	}
	if err := raftCall(t, node2, addr); errors.Is(err, kverrors.ErrPermissionDenied) {
		t.Fatalf("Raft call with a peer-CA node certificate refused: %v", err)
	}
	alice := source(t, a, "alice", certs.Client)
	aliceTLS := dial.ClientTLS(&tls.Config{RootCAs: serve1.Pool(), Certificates: []tls.Certificate{leafPair(t, alice)}})
	if err := check(t, aliceTLS, addr); err != nil {
		t.Fatalf("client of the client CA: %v", err)
	}
	// A node certificate of the client CA is no peer's.
	n3 := source(t, a, "n3", certs.Node)
	n3TLS := dial.ClientTLS(&tls.Config{RootCAs: serve1.Pool(), Certificates: []tls.Certificate{leafPair(t, n3)}})
	if err := raftCall(t, n3TLS, addr); !errors.Is(err, kverrors.ErrPermissionDenied) {
		t.Fatalf("Raft call with a client-CA node certificate: got %v, want ErrPermissionDenied", err)
	}
	if got := len(dial.NodeTLS(serve1, peer1, true).Sources()); got != 2 {
		t.Fatalf("Sources() = %d, want 2 (serve and peer)", got)
	}
}

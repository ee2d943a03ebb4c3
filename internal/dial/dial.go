// Package dial creates capkv's gRPC client connections with one policy for
// servers and clients alike: plaintext or TLS as the process's Security
// says (security.go; with TLS on nothing listens or dials in plaintext), a short reconnect
// backoff, so that a restarted node is reachable again within a second
// instead of after gRPC's default backoff of up to two minutes, and
// keepalive pings, so that a connection whose packets a partition dropped is
// closed and replaced instead of waiting out TCP's retransmission backoff
// (which grows to minutes). Node-to-node connections are also watched by the
// failure detector, which acts within a second.
//
// Every connection also records, per call, whether the request was handed
// to the transport, and gives a failed call's error its kind from that fact
// (see delivery.go): ErrUnavailable when the request never left this
// process, ErrIndeterminate when it may have reached the server. Errors a
// capkv node sent keep the kind the node gave them (package kverrors).
package dial

import (
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	"github.com/capkv/capkv/internal/limits"
	"github.com/capkv/capkv/internal/trace"
)

// Keepalive timing: a connection with nothing received for KeepaliveTime
// is pinged, and closed when the ping is not answered within
// KeepaliveTimeout; the next call reconnects. 10 s is the shortest interval
// grpc-go allows a client.
const (
	KeepaliveTime    = 10 * time.Second
	KeepaliveTimeout = 2 * time.Second
)

// Conn returns a lazily connecting client connection to addr. Interceptors
// in extra run inside the delivery classification: they see gRPC's own
// errors (grpc.WithUnaryInterceptor, unlike WithChainUnaryInterceptor, would
// put one outside it).
//
// Conn dials in plaintext: code that may run with TLS dials through its
// Security (Security.Conn) instead.
func Conn(addr string, extra ...grpc.DialOption) (*grpc.ClientConn, error) {
	return conn(addr, insecure.NewCredentials(), extra...)
}

func conn(addr string, creds credentials.TransportCredentials, extra ...grpc.DialOption) (*grpc.ClientConn, error) {
	return grpc.NewClient(addr, append([]grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  50 * time.Millisecond,
				Multiplier: 1.6,
				Jitter:     0.2,
				MaxDelay:   time.Second,
			},
			MinConnectTimeout: time.Second,
		}),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: KeepaliveTime, Timeout: KeepaliveTimeout, PermitWithoutStream: true}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(limits.MaxMessageSize), grpc.MaxCallSendMsgSize(limits.MaxMessageSize)),
		grpc.WithStatsHandler(deliveryStats{}),
		// Tracing: records the call on the provider of the caller's span
		// and passes the trace context on (nothing when the caller's
		// context is not traced).
		grpc.WithStatsHandler(trace.ClientHandler()),
		grpc.WithChainUnaryInterceptor(unaryDelivery),
		grpc.WithChainStreamInterceptor(streamDelivery),
	}, extra...)...)
}

// ServerOptions are the options every capkv gRPC server needs: to accept the
// clients' keepalive pings (gRPC's default policy answers pings more often
// than every 5 minutes with GOAWAY), and to let an oversize request reach
// the handler, which refuses it with capkv's own error (package limits).
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: KeepaliveTime / 2, PermitWithoutStream: true}),
		grpc.MaxRecvMsgSize(limits.MaxMessageSize),
		grpc.MaxSendMsgSize(limits.MaxMessageSize),
	}
}

// Package dial creates capkv's gRPC client connections with one policy for
// servers and clients alike: plaintext (mTLS comes later), and a short
// reconnect backoff, so that a restarted node is reachable again within a
// second instead of after gRPC's default backoff of up to two minutes.
package dial

import (
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
)

// Conn returns a lazily connecting client connection to addr.
func Conn(addr string, extra ...grpc.DialOption) (*grpc.ClientConn, error) {
	return grpc.NewClient(addr, append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  50 * time.Millisecond,
				Multiplier: 1.6,
				Jitter:     0.2,
				MaxDelay:   time.Second,
			},
			MinConnectTimeout: time.Second,
		})}, extra...)...)
}

package dial

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// blackhole is a loopback TCP proxy that can stop forwarding bytes without
// closing anything, as a partition that drops packets does.
type blackhole struct {
	ln      net.Listener
	target  string
	dropped atomic.Bool
	mu      sync.Mutex
	conns   []net.Conn
}

func (b *blackhole) serve() {
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", b.target)
		if err != nil {
			c.Close()
			continue
		}
		b.mu.Lock()
		b.conns = append(b.conns, c, u)
		b.mu.Unlock()
		go b.pipe(c, u)
		go b.pipe(u, c)
	}
}

func (b *blackhole) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if err != nil {
			dst.Close()
			return
		}
		if b.dropped.Load() {
			continue
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			return
		}
	}
}

func (b *blackhole) close() {
	b.ln.Close()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.conns {
		c.Close()
	}
}

// TestKeepalive checks both halves of the keepalive policy: an idle
// connection stays up (the server accepts the pings instead of answering
// with GOAWAY), and a connection whose packets vanish is closed within
// about KeepaliveTime+KeepaliveTimeout instead of TCP's minutes.
func TestKeepalive(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for keepalive timers")
	}
	srv := grpc.NewServer(ServerOptions()...)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Stop()
	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	bh := &blackhole{ln: pl, target: ln.Addr().String()}
	go bh.serve()
	defer bh.close()

	cc, err := Conn(pl.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	hc := healthpb.NewHealthClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	// Idle for three keepalive periods (gRPC's default server policy closes
	// a connection at the second ping without a call in flight): still the
	// same ready connection.
	idle := time.Now().Add(3*KeepaliveTime + KeepaliveTimeout)
	for time.Now().Before(idle) {
		if s := cc.GetState(); s != connectivity.Ready {
			t.Fatalf("idle connection left READY (%s): the server refused the keepalive pings", s)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Silence it: keepalive must notice and drop the connection.
	bh.dropped.Store(true)
	start := time.Now()
	for cc.GetState() == connectivity.Ready {
		if time.Since(start) > KeepaliveTime+KeepaliveTimeout+3*time.Second {
			t.Fatalf("a silenced connection was still READY after %s", time.Since(start))
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("silenced connection closed after %s", time.Since(start).Round(time.Millisecond))
	// Healed: the next call reconnects (a new TCP connection through the proxy).
	bh.dropped.Store(false)
	if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true)); err != nil {
		t.Fatalf("no reconnect after the heal: %v", err)
	}
}

package client_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/capkv/capkv/client"
	"github.com/capkv/capkv/consistency"
	"github.com/capkv/capkv/internal/kverrors"
	"github.com/capkv/capkv/internal/nodetest"
	"github.com/capkv/capkv/ring"
)

func TestParseEndpoint(t *testing.T) {
	for _, c := range []struct{ in, want, err string }{
		{"127.0.0.1:7001", "127.0.0.1:7001", ""},
		{" localhost:7001 ", "localhost:7001", ""},
		{"[::1]:7001", "[::1]:7001", ""},
		{"http://127.0.0.1:7001", "127.0.0.1:7001", ""},
		{"HTTP://127.0.0.1:7001/", "127.0.0.1:7001", ""},
		{"127.0.0.1", "", "no port"},
		{"http://127.0.0.1", "", "no port"},
		{"https://127.0.0.1:7001", "", "https:// means TLS, but this client has no TLS configured"},
		{"grpc://127.0.0.1:7001", "", `scheme "grpc" is not http`},
		{"http://127.0.0.1:7001/metrics", "", "no path"},
		{"127.0.0.1:http", "", `port "http"`},
		{"127.0.0.1:0", "", `port "0"`},
		{":7001", "", `host ""`},
		{"a b:7001", "", `host "a b"`},
		{"::::", "", "not host:port"},
	} {
		got, err := client.ParseEndpoint(c.in)
		switch {
		case c.err == "" && (err != nil || got != c.want):
			t.Errorf("ParseEndpoint(%q) = %q, %v; want %q", c.in, got, err, c.want)
		case c.err != "" && (!errors.Is(err, client.ErrInvalidArgument) || !strings.Contains(err.Error(), c.err) ||
			!strings.Contains(err.Error(), "want host:port")):
			t.Errorf("ParseEndpoint(%q) = %q, %v; want ErrInvalidArgument saying %q and what is wanted", c.in, got, err, c.err)
		}
	}
}

// With TLS configured, https:// is accepted and http:// refused.
func TestParseEndpointTLS(t *testing.T) {
	for _, c := range []struct{ in, want, err string }{
		{"127.0.0.1:7001", "127.0.0.1:7001", ""},
		{"https://127.0.0.1:7001", "127.0.0.1:7001", ""},
		{"HTTPS://localhost:7001/", "localhost:7001", ""},
		{"http://127.0.0.1:7001", "", "http:// means plaintext, but this client is configured for TLS"},
		{"grpc://127.0.0.1:7001", "", `scheme "grpc" is not https`},
		{"https://127.0.0.1", "", "no port"},
	} {
		got, err := client.ParseEndpointTLS(c.in)
		switch {
		case c.err == "" && (err != nil || got != c.want):
			t.Errorf("ParseEndpointTLS(%q) = %q, %v; want %q", c.in, got, err, c.want)
		case c.err != "" && (!errors.Is(err, client.ErrInvalidArgument) || !strings.Contains(err.Error(), c.err) ||
			!strings.Contains(err.Error(), "want host:port or https://host:port")):
			t.Errorf("ParseEndpointTLS(%q) = %q, %v; want ErrInvalidArgument saying %q and what is wanted", c.in, got, err, c.err)
		}
	}
}

// A value too large for the node but not for a client configured with a
// larger limit reaches the node, whose own limit refuses it: the gRPC
// message limits on both sides leave the judgement to capkv.
func TestOversizeValueGetsTheNodesError(t *testing.T) {
	cl, err := nodetest.Start(nodetest.Options{Nodes: 1, Keyspaces: []ring.KeyspaceConfig{
		{Name: "sessions", Mode: consistency.AP, Replicas: 1, Partitions: 2, Template: "sessions/{session}/..."}}})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := client.New(ctx, client.Config{Endpoints: cl.Endpoints(), MaxValueSize: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	big := bytes.Repeat([]byte("x"), 10_000_000)
	_, err = c.Put(ctx, "sessions/big", big)
	if !errors.Is(err, client.ErrTooLarge) || !kverrors.FromNode(err) || !strings.Contains(err.Error(), "value is 10000000 bytes, limit is 1048576") {
		t.Errorf("put of 10 MB with the client's check raised: %v; want the node's ErrTooLarge naming size and limit", err)
	}
	// And the default client refuses it before sending, with the same words.
	d, err := client.New(ctx, client.Config{Endpoints: cl.Endpoints()})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	_, err = d.Put(ctx, "sessions/big", big)
	if !errors.Is(err, client.ErrTooLarge) || kverrors.FromNode(err) || !strings.Contains(err.Error(), "value is 10000000 bytes, limit is 1048576") {
		t.Errorf("put of 10 MB with the default client: %v; want ErrTooLarge from the client's own check", err)
	}
}

// ParseEndpoint never panics, and what it accepts is a host:port it accepts
// again unchanged; what it refuses is ErrInvalidArgument.
func FuzzParseEndpoint(f *testing.F) {
	for _, s := range []string{"127.0.0.1:7001", "http://[::1]:7001/", "localhost", "https://x:1", "::::", "a b:1", "http://u@h:1", ":0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := client.ParseEndpoint(s)
		if err != nil {
			if !errors.Is(err, client.ErrInvalidArgument) {
				t.Fatalf("ParseEndpoint(%q): %v is not ErrInvalidArgument", s, err)
			}
			return
		}
		if again, err := client.ParseEndpoint(got); err != nil || again != got {
			t.Fatalf("ParseEndpoint(%q) = %q, which parses again as %q, %v", s, got, again, err)
		}
	})
}

// A dead endpoint is reported in a user's words, not gRPC's transport text,
// and stays ErrUnavailable.
func TestDeadEndpointSaysConnectionRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens on addr now
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.New(ctx, client.Config{Endpoints: []string{addr}})
	if err == nil {
		c.Close()
		t.Fatal("New succeeded against a closed port")
	}
	msg := err.Error()
	if !errors.Is(err, client.ErrUnavailable) {
		t.Errorf("%v is not ErrUnavailable", err)
	}
	if !strings.Contains(msg, addr+": cannot connect: connection refused") {
		t.Errorf("error %q does not say %s refused the connection", msg, addr)
	}
	for _, jargon := range []string{"rpc error", "transport:", "desc ="} {
		if strings.Contains(msg, jargon) {
			t.Errorf("error %q shows gRPC's %q", msg, jargon)
		}
	}
}

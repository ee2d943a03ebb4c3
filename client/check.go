package client

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc/status"

	"github.com/capkv/capkv/internal/limits"
)

// The client checks what it can before sending, with the errors a node
// would give, so that bad input never turns into a gRPC transport or
// marshaling error that names neither the value nor the limit.

// CheckKey reports whether key can be sent at all: keys are text (a
// protobuf string, which must be UTF-8) of at most maxSize bytes (0: the
// nodes' default limit). Whether its keyspace exists is the cluster's to say.
func CheckKey(key string, maxSize int) error {
	if maxSize <= 0 {
		maxSize = limits.DefaultMaxKeySize
	}
	switch {
	case len(key) > maxSize:
		return fmt.Errorf("%w: key is %d bytes, limit is %d", ErrTooLarge, len(key), maxSize)
	case !utf8.ValidString(key):
		return fmt.Errorf("%w: key %q is not valid UTF-8 (keys are text; binary data belongs in the value)", ErrInvalidArgument, key)
	}
	return nil
}

func (c *Client) checkKey(key string) error { return CheckKey(key, c.cfg.MaxKeySize) }

// checkValue refuses a value over the limit; what names it is the value's role.
func (c *Client) checkValue(what string, v []byte) error {
	if len(v) > c.cfg.MaxValueSize {
		return fmt.Errorf("%w: %s is %d bytes, limit is %d", ErrTooLarge, what, len(v), c.cfg.MaxValueSize)
	}
	return nil
}

// ParseEndpoint turns an endpoint as people write it into the host:port the
// client dials: "127.0.0.1:7001", "localhost:7001", "[::1]:7001", or the
// same as http://host:port (plaintext gRPC is HTTP/2). Anything else is
// ErrInvalidArgument saying what is wanted; https:// is refused, since it
// needs TLS (see ParseEndpointTLS).
func ParseEndpoint(s string) (string, error) { return parseEndpoint(s, false) }

// ParseEndpointTLS is ParseEndpoint for a client configured with TLS: it
// takes host:port and https://host:port, and refuses http://, which says
// plaintext.
func ParseEndpointTLS(s string) (string, error) { return parseEndpoint(s, true) }

func parseEndpoint(s string, withTLS bool) (string, error) {
	want, wantScheme := "host:port or http://host:port", "http"
	if withTLS {
		want, wantScheme = "host:port or https://host:port", "https"
	}
	bad := func(why string) (string, error) {
		return "", fmt.Errorf("%w: endpoint %q: %s; want %s, e.g. 127.0.0.1:7001", ErrInvalidArgument, s, why, want)
	}
	hostport := strings.TrimSpace(s)
	if scheme, rest, ok := strings.Cut(hostport, "://"); ok {
		switch got := strings.ToLower(scheme); {
		case got == "https" && !withTLS:
			return bad("https:// means TLS, but this client has no TLS configured (kvctl: --cacert, and --cert/--key for client certificates; Go client: Config.TLS)")
		case got == "http" && withTLS:
			return bad("http:// means plaintext, but this client is configured for TLS")
		case got != "http" && got != "https":
			return bad(fmt.Sprintf("scheme %q is not %s", scheme, wantScheme))
		}
		u, err := url.Parse("http://" + rest)
		if err != nil {
			return bad("not a URL")
		}
		if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			return bad("only a host and port, no path, query or user")
		}
		hostport = u.Host
	}
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		if !strings.Contains(hostport, ":") {
			return bad("no port")
		}
		return bad("not host:port")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return bad(fmt.Sprintf("port %q is not a number in 1-65535", port))
	}
	if host == "" || strings.ContainsAny(host, " /\\?#@") {
		return bad(fmt.Sprintf("host %q is not a host name or IP address", host))
	}
	return net.JoinHostPort(host, port), nil
}

// speaksHTTP1 reports whether addr answers a plain HTTP/1 request, as the
// metrics and debug ports do and a node's gRPC port never does. The client
// asks only after gRPC failed to talk to addr, to say why.
func speaksHTTP1(ctx context.Context, addr string) bool {
	ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return false
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	conn.SetDeadline(deadline)
	if _, err := fmt.Fprintf(conn, "HEAD / HTTP/1.0\r\nHost: %s\r\n\r\n", addr); err != nil {
		return false
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "HTTP/1.")
}

// dialFailure says, in a user's words, why gRPC could not connect to addr
// ("connection refused", "i/o timeout", "no such host"), or returns nil when
// err is not a failure to dial. gRPC's own text wraps the reason in two
// layers of transport vocabulary that mean nothing to a user of the store.
func dialFailure(err error) error {
	const dialing = "Error while dialing: "
	msg := status.Convert(err).Message()
	i := strings.Index(msg, dialing)
	if i < 0 {
		return nil
	}
	reason := strings.TrimSuffix(msg[i+len(dialing):], `"`)
	// "dial tcp 127.0.0.1:7459: connect: connection refused": the address
	// is printed by the caller; the last clause is the reason.
	if j := strings.LastIndex(reason, ": "); j >= 0 {
		reason = reason[j+2:]
	}
	hint := ""
	if strings.Contains(reason, "refused") {
		hint = " (no kvd listening there?)"
	}
	return &explained{text: "cannot connect: " + reason + hint, err: err}
}

// explained replaces an error's text and keeps it for errors.Is and
// status.Code.
type explained struct {
	text string
	err  error
}

func (e *explained) Error() string { return e.text }
func (e *explained) Unwrap() error { return e.err }

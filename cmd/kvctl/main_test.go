package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/capkv/capkv/internal/nodetest"
)

// cluster is one in-process cluster shared by the tests that need nodes,
// started on first use and stopped by TestMain.
var cluster struct {
	once sync.Once
	c    *nodetest.Cluster
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if cluster.c != nil {
		cluster.c.Close()
	}
	os.Exit(code)
}

func endpoints(t *testing.T) string {
	t.Helper()
	cluster.once.Do(func() { cluster.c, cluster.err = nodetest.Start(nodetest.Options{Nodes: 3}) })
	if cluster.err != nil {
		t.Fatal(cluster.err)
	}
	return strings.Join(cluster.c.Endpoints(), ",")
}

// kvctlRun runs kvctl's run with args and stdin and returns what it printed
// and its exit code.
func kvctlRun(stdin string, args ...string) (stdout, stderr string, code int) {
	var o, e bytes.Buffer
	code = run(args, strings.NewReader(stdin), &o, &e)
	return o.String(), e.String(), code
}

// check is one kvctl invocation and what it must print.
type check struct {
	name    string
	stdin   string
	args    []string
	code    int
	want    []string // on stderr (or stdout when code is 0)
	notWant []string // on neither
}

func (c check) run(t *testing.T) {
	t.Helper()
	out, errOut, code := kvctlRun(c.stdin, c.args...)
	where := errOut
	if c.code == 0 {
		where = out + errOut
	}
	bad := code != c.code
	for _, w := range c.want {
		bad = bad || !strings.Contains(where, w)
	}
	for _, w := range c.notWant {
		bad = bad || strings.Contains(out+errOut, w)
	}
	if bad {
		t.Errorf("%s: kvctl %q: exit %d, stdout %q, stderr %q; want exit %d, %q, none of %q",
			c.name, c.args, code, trunc(out), trunc(errOut), c.code, c.want, c.notWant)
	}
}

func trunc(s string) string {
	if len(s) > 600 {
		return s[:600] + "..."
	}
	return s
}

// Bad input gets capkv's own error naming the value and the limit, never
// gRPC's transport, marshaling or resolver errors.
func TestBadInputErrors(t *testing.T) {
	eps := endpoints(t)
	addr := strings.Split(eps, ",")[0]
	metrics := httptest.NewServer(http.NotFoundHandler()) // what a --metrics-addr port is
	defer metrics.Close()
	grpcLeaks := []string{"grpc:", "rpc error", "marshal", "resolver", "http2", "frame"}
	e := "--endpoints=" + eps
	for _, c := range []check{
		{name: "10 MB value", stdin: strings.Repeat("x", 10_000_000), args: []string{e, "put", "accounts/eu/1/big", "-"}, code: 1,
			want: []string{"too large: value is 10000000 bytes, limit is 1048576"}, notWant: grpcLeaks},
		{name: "4 MB value", stdin: strings.Repeat("x", 4<<20), args: []string{e, "put", "accounts/eu/1/big", "-"}, code: 1,
			want: []string{"too large: value is 4194304 bytes, limit is 1048576"}, notWant: grpcLeaks},
		{name: "10 MB cas value", stdin: strings.Repeat("x", 10_000_000), args: []string{e, "cas", "accounts/eu/1/big", "--expect-absent", "--value", "-"}, code: 1,
			want: []string{"too large: value is 10000000 bytes, limit is 1048576"}, notWant: grpcLeaks},
		{name: "long key", args: []string{e, "get", "accounts/eu/1/" + strings.Repeat("k", 5000)}, code: 1,
			want: []string{"too large: key is 5014 bytes, limit is 4096"}, notWant: grpcLeaks},
		{name: "invalid UTF-8 key (put)", args: []string{e, "put", "accounts/eu/1/\xff\xfe", "v"}, code: 1,
			want: []string{`key "accounts/eu/1/\xff\xfe" is not valid UTF-8`}, notWant: grpcLeaks},
		{name: "invalid UTF-8 key (get)", args: []string{e, "get", "sessions/\xc3"}, code: 1,
			want: []string{"not valid UTF-8"}, notWant: grpcLeaks},
		{name: "invalid UTF-8 key (del)", args: []string{e, "del", "sessions/\xc3"}, code: 1,
			want: []string{"not valid UTF-8"}, notWant: grpcLeaks},
		{name: "invalid UTF-8 key (locate)", args: []string{e, "locate", "sessions/\xc3"}, code: 1,
			want: []string{"not valid UTF-8"}, notWant: grpcLeaks},
		{name: "invalid UTF-8 prefix (scan)", args: []string{e, "scan", "sessions/\xc3"}, code: 1,
			want: []string{"scan prefix", "not valid UTF-8"}, notWant: grpcLeaks},
		{name: "http:// endpoint works", args: []string{"--endpoints", "http://" + addr, "put", "sessions/h", "v"}, code: 0,
			want: []string{"OK"}},
		{name: "http:// endpoint with a slash works", args: []string{"--endpoints", "http://" + addr + "/", "get", "sessions/h"}, code: 0,
			want: []string{"v"}},
		{name: "https endpoint", args: []string{"--endpoints", "https://" + addr, "get", "sessions/h"}, code: 2,
			want: []string{"https:// means TLS, but this client has no TLS configured", "--cacert", "want host:port or http://host:port"}, notWant: grpcLeaks},
		{name: "port-less endpoint", args: []string{"--endpoints", "127.0.0.1", "get", "sessions/h"}, code: 2,
			want: []string{`endpoint "127.0.0.1": no port; want host:port`}, notWant: grpcLeaks},
		{name: "garbage endpoint", args: []string{"--endpoints", "not an endpoint", "get", "sessions/h"}, code: 2,
			want: []string{`endpoint "not an endpoint"`, "want host:port"}, notWant: grpcLeaks},
		{name: "bad port", args: []string{"--endpoints", "localhost:99999", "get", "sessions/h"}, code: 2,
			want: []string{`port "99999"`}, notWant: grpcLeaks},
		{name: "endpoint with a path", args: []string{"--endpoints", "http://" + addr + "/metrics", "get", "sessions/h"}, code: 2,
			want: []string{"no path"}, notWant: grpcLeaks},
		{name: "metrics port", args: []string{"--endpoints", metrics.URL, "--timeout", "3s", "get", "sessions/h"}, code: 1,
			want: []string{strings.TrimPrefix(metrics.URL, "http://"), "answers plain HTTP, not capkv's gRPC", "--listen"}, notWant: grpcLeaks},
		{name: "metrics port as host:port", args: []string{"--endpoints", strings.TrimPrefix(metrics.URL, "http://"), "--timeout", "3s", "get", "sessions/h"}, code: 1,
			want: []string{"answers plain HTTP, not capkv's gRPC"}, notWant: grpcLeaks},
		{name: "bench with a bad endpoint", args: []string{"--endpoints", "127.0.0.1", "bench", "--duration", "1s"}, code: 2,
			want: []string{"no port"}, notWant: grpcLeaks},
	} {
		c.run(t)
	}
	// Nothing oversize was stored.
	check{name: "get after the refused puts", args: []string{e, "get", "accounts/eu/1/big"}, code: 1, want: []string{"not found"}}.run(t)
}

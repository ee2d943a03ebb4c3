package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/client"
	"github.com/capkv/capkv/internal/certs"
	"github.com/capkv/capkv/internal/kverrors"
)

// testPKI is a CA with one node certificate all test nodes share (they all
// listen on 127.0.0.1) and client certificates.
type testPKI struct{ dir string }

func newTestPKI(t *testing.T) testPKI {
	t.Helper()
	p := testPKI{t.TempDir()}
	if _, err := certs.InitCA(p.dir, "", 0); err != nil {
		t.Fatal(err)
	}
	p.issue(t, certs.Request{Kind: certs.Node, Name: "node", Hosts: []string{"127.0.0.1", "localhost"}})
	p.issue(t, certs.Request{Kind: certs.Client, Name: "alice"})
	return p
}

func (p testPKI) issue(t *testing.T, r certs.Request) {
	t.Helper()
	if _, err := certs.Issue(p.dir, r); err != nil {
		t.Fatal(err)
	}
}

func (p testPKI) ca() string             { return filepath.Join(p.dir, certs.CACert) }
func (p testPKI) crt(name string) string { return filepath.Join(p.dir, name+".crt") }
func (p testPKI) key(name string) string { return filepath.Join(p.dir, name+".key") }
func (p testPKI) kvctlFlags(name string) []string {
	return []string{"--cacert", p.ca(), "--cert", p.crt(name), "--key", p.key(name)}
}

func (p testPKI) clientTLS(t *testing.T, name string) *tls.Config {
	t.Helper()
	b, err := os.ReadFile(p.ca())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(b)
	c, err := tls.LoadX509KeyPair(p.crt(name), p.key(name))
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{c}}
}

// startTLSCluster starts n nodes with mutual TLS (client certificates
// required) and the given extra flags.
func startTLSCluster(t *testing.T, p testPKI, n int, extra ...string) *cluster {
	t.Helper()
	flags := append([]string{"--cert-file", p.crt("node"), "--key-file", p.key("node"), "--trusted-ca-file", p.ca(), "--client-cert-auth"}, extra...)
	return startClusterOf(&cluster{t: t, extra: flags, creds: credentials.NewTLS(p.clientTLS(t, "alice"))}, n)
}

// A TLS cluster serves a TLS client (the Go client and kvctl: put, get,
// watch), and refuses with errors that say why: a plaintext client, a
// client certificate of another CA, an expired one.
func TestTLSCluster(t *testing.T) {
	p := newTestPKI(t)
	cl := startTLSCluster(t, p, 3)
	eps := cl.endpoints()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.New(ctx, client.Config{Endpoints: []string{"https://" + eps[0]}, TLS: p.clientTLS(t, "alice")})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	events, err := c.Watch(ctx, "accounts/eu/7/")
	if err != nil {
		t.Fatal(err)
	}
	// cp and ap writes go through Raft and replica traffic between the nodes.
	for _, k := range []string{"accounts/eu/7/balance", "sessions/tls"} {
		if _, err := c.Put(ctx, k, []byte("v1")); err != nil {
			t.Fatalf("put %s over TLS: %v", k, err)
		}
		if r, err := c.Get(ctx, k); err != nil || string(r.Value) != "v1" {
			t.Fatalf("get %s over TLS: %v, %v", k, r, err)
		}
	}
	select {
	case e := <-events:
		if e.Key != "accounts/eu/7/balance" || string(e.Value) != "v1" {
			t.Fatalf("watch event %+v", e)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no watch event over TLS within 20s")
	}

	alice := p.kvctlFlags("alice")
	if out, errOut, code := kvctl(t, eps, "", append(alice, "put", "accounts/eu/8/x", "42")...); code != 0 || !strings.Contains(out, "OK") {
		t.Fatalf("kvctl put over TLS: exit %d, %q %q", code, out, errOut)
	}
	if out, errOut, code := kvctl(t, eps, "", append(alice, "get", "accounts/eu/8/x")...); code != 0 || strings.TrimSpace(out) != "42" {
		t.Fatalf("kvctl get over TLS: exit %d, %q %q", code, out, errOut)
	}
	t.Setenv("CAPKV_CACERT", p.ca())
	t.Setenv("CAPKV_CERT", p.crt("alice"))
	t.Setenv("CAPKV_KEY", p.key("alice"))
	if out, errOut, code := kvctl(t, eps, "", "get", "accounts/eu/8/x"); code != 0 || strings.TrimSpace(out) != "42" {
		t.Fatalf("kvctl get with CAPKV_CACERT/CERT/KEY: exit %d, %q %q", code, out, errOut)
	}
	os.Unsetenv("CAPKV_CACERT")
	os.Unsetenv("CAPKV_CERT")
	os.Unsetenv("CAPKV_KEY")

	other := newTestPKI(t)
	p.issue(t, certs.Request{Kind: certs.Client, Name: "old", NotBefore: time.Now().Add(-72 * time.Hour), Lifetime: 24 * time.Hour})
	for _, c := range []struct {
		name  string
		flags []string
		want  string
	}{
		{"plaintext client", nil, "the node serves TLS, and this client is plaintext"},
		{"certificate of another CA", []string{"--cacert", p.ca(), "--cert", other.crt("alice"), "--key", other.key("alice")},
			"refused this client's certificate (remote error: tls: unknown certificate authority)"},
		{"expired certificate", p.kvctlFlags("old"), "refused this client's certificate (remote error: tls: expired certificate)"},
		{"no client certificate", []string{"--cacert", p.ca()}, "refused this client's certificate"},
		{"another cluster's CA", other.kvctlFlags("alice"), "does not trust the node's certificate"},
	} {
		out, errOut, code := kvctl(t, eps, "", append(c.flags, "--timeout", "5s", "get", "accounts/eu/8/x")...)
		if code != 1 || !strings.Contains(errOut, c.want) || strings.Contains(errOut, "rpc error") {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want exit 1 saying %q", c.name, code, out, errOut, c.want)
		} else {
			t.Logf("%s: %s", c.name, strings.SplitN(errOut, "\n", 2)[0])
		}
	}
	// kvd health asks a TLS node over TLS with the node's certificate.
	if out, err := exec.Command(bins.kvd, "health", "--addr", eps[0], "--cert-file", p.crt("node"), "--key-file", p.key("node"), "--trusted-ca-file", p.ca()).CombinedOutput(); err != nil || !strings.HasPrefix(string(out), "ok: n1") {
		t.Errorf("kvd health over TLS: %v, %q", err, out)
	}
	if out, err := exec.Command(bins.kvd, "health", "--addr", eps[0]).CombinedOutput(); err == nil {
		t.Errorf("plaintext kvd health of a TLS node succeeded: %q", out)
	}
	// Only nodes may make node-to-node calls and set fault rules: a client
	// certificate of the same CA is refused, a node certificate gets through
	// (to the fault hook's own answer: this cluster runs without --test-faults).
	for _, c := range []struct {
		who  string
		tls  *tls.Config
		want error
		text string
	}{
		{"alice", p.clientTLS(t, "alice"), kverrors.ErrPermissionDenied, `/capkv.v1.Admin/SetFaults is for nodes only and needs a node certificate of the peer CA`},
		{"node", p.clientTLS(t, "node"), kverrors.ErrWrongMode, "fault injection is disabled"},
	} {
		cc, err := grpc.NewClient(eps[0], grpc.WithTransportCredentials(credentials.NewTLS(c.tls)))
		if err != nil {
			t.Fatal(err)
		}
		fctx, fcancel := context.WithTimeout(ctx, 5*time.Second)
		_, err = api.NewAdminClient(cc).SetFaults(fctx, &api.SetFaultsRequest{})
		fcancel()
		cc.Close()
		if err = kverrors.FromStatus(err); !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.text) {
			t.Errorf("SetFaults as %s: got %v, want %v saying %q", c.who, err, c.want, c.text)
		} else {
			t.Logf("SetFaults as %s: %v", c.who, err)
		}
	}
	// A node joins through the TLS cluster (Join and the map over TLS) and serves.
	n4 := cl.addJoiner("n4", "eu")
	if out, errOut, code := kvctl(t, []string{n4.addr}, "", append(alice, "get", "accounts/eu/8/x")...); code != 0 || strings.TrimSpace(out) != "42" {
		t.Fatalf("kvctl get through the joined node: exit %d, %q %q", code, out, errOut)
	}
	// The nodes never refused each other (Raft, replica traffic, the join's
	// rebalancing moves all ran with their node certificates).
	for _, n := range cl.procs {
		if strings.Contains(logOf(n), "permission denied") {
			t.Errorf("%s logged a refused node-only call:\n%s", n.id, logOf(n))
		}
	}
	// A TLS node named with http:// is refused before any dial.
	if _, errOut, code := kvctl(t, eps, "", append(alice, "--endpoints", "http://"+eps[0], "get", "x/y")...); code != 2 || !strings.Contains(errOut, "http:// means plaintext, but this client is configured for TLS") {
		t.Errorf("http:// with TLS flags: exit %d, %q", code, errOut)
	}
}

// kvctl watch with TLS flags prints a change made by kvctl put.
func kvctlWatchOnce(t *testing.T, eps []string, flags []string, prefix, key, value string) {
	t.Helper()
	cmd := exec.Command(bins.kvctl, append(flags, "--endpoints", strings.Join(eps, ","), "watch", prefix, "--count", "1", "--for", "30s")...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	sc := bufio.NewScanner(stderr)
	if !sc.Scan() || !strings.Contains(sc.Text(), "watching "+prefix) {
		t.Fatalf("kvctl watch did not start: %q", sc.Text())
	}
	go io.Copy(io.Discard, stderr)
	if _, errOut, code := kvctl(t, eps, "", append(flags, "put", key, value)...); code != 0 {
		t.Fatalf("kvctl put: %s", errOut)
	}
	out, _ := io.ReadAll(stdout)
	if want := "PUT " + key + " " + value + "\n"; string(out) != want {
		t.Fatalf("kvctl watch printed %q, want %q", out, want)
	}
}

// listeningPorts lists the TCP ports process pid listens on, from /proc:
// the inodes of its socket descriptors matched against the listening
// sockets of /proc/net/tcp and tcp6.
func listeningPorts(t *testing.T, pid int) []int {
	t.Helper()
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Skipf("no /proc to list a process's sockets: %v", err)
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err == nil && strings.HasPrefix(l, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	var ports []int
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fs := strings.Fields(line)
			if len(fs) < 10 || fs[3] != "0A" || !inodes[fs[9]] { // 0A: LISTEN
				continue
			}
			_, hexPort, _ := strings.Cut(fs[1], ":")
			if port, err := strconv.ParseUint(hexPort, 16, 16); err == nil {
				ports = append(ports, int(port))
			}
		}
	}
	return ports
}

// No port a TLS node opened answers a plaintext request: neither gRPC (a
// health check) nor HTTP/1 (the metrics and pprof endpoints).
func TestTLSNoPlaintextListener(t *testing.T) {
	p := newTestPKI(t)
	ports := freePorts(t, 2)
	cl := startTLSCluster(t, p, 1, "--metrics-addr", ports[0], "--debug-addr", ports[1])
	pid := cl.procs[0].cmd.Process.Pid
	var open []int
	for deadline := time.Now().Add(10 * time.Second); len(open) < 3 && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		open = listeningPorts(t, pid)
	}
	if len(open) < 3 {
		t.Fatalf("node listens on %v; want its gRPC, metrics and debug ports", open)
	}
	tlsCfg := p.clientTLS(t, "alice")
	for _, port := range open {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, gerr := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
		cancel()
		cc.Close()
		if gerr == nil {
			t.Errorf("port %d answered a plaintext gRPC health check", port)
		}
		// An HTTPS server may say in plaintext that it is one (Go's answers
		// 400 "Client sent an HTTP request to an HTTPS server"); it must
		// serve nothing.
		hc := &http.Client{Timeout: 2 * time.Second}
		for _, path := range []string{"/metrics", "/debug/pprof/"} {
			resp, err := hc.Get("http://" + addr + path)
			if err != nil {
				continue
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "HTTPS server") {
				t.Errorf("port %d served plaintext HTTP %s: %s %.200q", port, path, resp.Status, body)
			} else {
				t.Logf("port %d, plaintext HTTP %s: %s %q", port, path, resp.Status, strings.TrimSpace(string(body)))
			}
		}
		// Every port does speak TLS with the cluster's certificates.
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", addr, tlsCfg)
		if err != nil {
			t.Errorf("port %d: TLS handshake: %v", port, err)
			continue
		}
		conn.Close()
	}
	// The metrics endpoint still serves over TLS.
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsCfg}}
	resp, err := hc.Get("https://" + ports[0] + "/metrics")
	if err != nil {
		t.Fatalf("metrics over TLS: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("metrics over TLS: %s", resp.Status)
	}
	t.Logf("ports %v: none answered plaintext", open)
}

// servedSerial is the serial of the certificate a new connection to addr sees.
func servedSerial(t *testing.T, addr string, cfg *tls.Config) *big.Int {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		t.Fatalf("TLS dial %s: %v", addr, err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber
}

func leafSerial(t *testing.T, path string) *big.Int {
	t.Helper()
	c, err := tls.LoadX509KeyPair(path, strings.TrimSuffix(path, ".crt")+".key")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return leaf.SerialNumber
}

// replaceFile writes data to path atomically (rename), as a rotation does.
func replaceFile(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// A certificate rotated on disk is used by new connections after SIGHUP;
// a reload that fails keeps the certificate in use and logs why.
func TestTLSRotateOnSIGHUP(t *testing.T) {
	p := newTestPKI(t)
	// The node's files are copies, so that the test can replace them.
	certFile, keyFile := filepath.Join(t.TempDir(), "n.crt"), ""
	keyFile = strings.TrimSuffix(certFile, ".crt") + ".key"
	for from, to := range map[string]string{p.crt("node"): certFile, p.key("node"): keyFile} {
		b, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		replaceFile(t, to, b)
	}
	flags := []string{"--cert-file", certFile, "--key-file", keyFile, "--trusted-ca-file", p.ca(), "--client-cert-auth", "--log-level", "info"}
	cl := startClusterOf(&cluster{t: t, extra: flags, creds: credentials.NewTLS(p.clientTLS(t, "alice"))}, 1)
	n := cl.procs[0]
	cfg := p.clientTLS(t, "alice")
	old := leafSerial(t, p.crt("node"))
	if got := servedSerial(t, n.addr, cfg); got.Cmp(old) != 0 {
		t.Fatalf("serving serial %x, want the node certificate's %x", got, old)
	}
	p.issue(t, certs.Request{Kind: certs.Node, Name: "node2", Hosts: []string{"127.0.0.1"}})
	fresh := leafSerial(t, p.crt("node2"))
	for from, to := range map[string]string{p.crt("node2"): certFile, p.key("node2"): keyFile} {
		b, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		replaceFile(t, to, b)
	}
	// Until SIGHUP the node keeps the certificate it loaded.
	if got := servedSerial(t, n.addr, cfg); got.Cmp(old) != 0 {
		t.Fatalf("before SIGHUP: serving %x, want the old %x", got, old)
	}
	n.cmd.Process.Signal(syscall.SIGHUP)
	waitSerial(t, n, cfg, fresh)
	if out, errOut, code := kvctl(t, cl.endpoints(), "", append(p.kvctlFlags("alice"), "put", "sessions/rotated", "1")...); code != 0 {
		t.Fatalf("kvctl after rotation: exit %d %q %q", code, out, errOut)
	}
	// A broken rotation (a key that is not a key) keeps the new certificate.
	replaceFile(t, keyFile, []byte("not a key"))
	n.cmd.Process.Signal(syscall.SIGHUP)
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(logOf(n), "TLS reload failed"); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no failed-reload log within 10s:\n%s", logOf(n))
		}
	}
	if got := servedSerial(t, n.addr, cfg); got.Cmp(fresh) != 0 {
		t.Fatalf("after a failed reload: serving %x, want %x still", got, fresh)
	}
}

func waitSerial(t *testing.T, n *proc, cfg *tls.Config, want *big.Int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		got := servedSerial(t, n.addr, cfg)
		if got.Cmp(want) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("10s after SIGHUP new connections see serial %x, want %x; log:\n%s", got, want, logOf(n))
		}
	}
}

// logOf reads a node's log while it runs.
func logOf(p *proc) string { return p.log.String() }

// kvd dev --tls runs the dev cluster with mutual TLS, and the kvctl flags
// its banner prints work for put, get and watch; --debug-addr serves pprof
// over TLS; a restart reuses the certificates.
func TestKvdDevTLS(t *testing.T) {
	dir := t.TempDir()
	eps := consecutivePorts(t, 3)
	base := strings.Split(eps[0], ":")[1]
	debugAddr := freePorts(t, 1)[0]
	dev := startDev(t, dir, base, "--tls", "--debug-addr", debugAddr)
	banner := dev.out.String()
	// (kvd dev once started its pprof server twice, and the second listen
	// failed the whole cluster with "address already in use".)
	dp := testPKI{dir: filepath.Join(dir, "tls")}
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: dp.clientTLS(t, "dev-client")}}
	resp, err := hc.Get("https://" + debugAddr + "/debug/pprof/")
	if err != nil {
		t.Fatalf("pprof of kvd dev --tls --debug-addr %s: %v\n%s", debugAddr, err, dev.out)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("pprof over TLS: %s", resp.Status)
	}
	var flags []string
	for _, line := range strings.Split(banner, "\n") {
		if rest, ok := strings.CutPrefix(line, "kvctl flags: "); ok {
			flags = strings.Fields(rest)
		}
	}
	if len(flags) != 6 || !strings.Contains(banner, "mutual TLS: certificates in "+filepath.Join(dir, "tls")) || !strings.Contains(banner, "export CAPKV_CACERT=") {
		t.Fatalf("banner lacks the TLS lines (kvctl flags %q):\n%s", flags, banner)
	}
	if _, errOut, code := kvctl(t, eps, "", "--timeout", "5s", "get", "accounts/eu/1/x"); code != 1 || !strings.Contains(errOut, "serves TLS, and this client is plaintext") {
		t.Fatalf("plaintext kvctl against kvd dev --tls: exit %d, %q", code, errOut)
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		_, errOut, code := kvctl(t, eps, "", append(flags, "put", "accounts/eu/42/balance", "100")...)
		if code == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("kvctl put with the banner's flags: %s", errOut)
		}
	}
	if got, errOut, code := kvctl(t, eps, "", append(flags, "get", "accounts/eu/42/balance")...); code != 0 || got != "100" {
		t.Fatalf("kvctl get with the banner's flags: exit %d, %q %q", code, got, errOut)
	}
	kvctlWatchOnce(t, eps, flags, "sessions/w", "sessions/w1", "hello")
	// SIGHUP reloads the certificates; the cluster keeps serving.
	dev.cmd.Process.Signal(syscall.SIGHUP)
	time.Sleep(300 * time.Millisecond)
	select {
	case <-dev.done:
		t.Fatalf("kvd dev --tls exited on SIGHUP:\n%s", dev.out)
	default:
	}
	if got, errOut, code := kvctl(t, eps, "", append(flags, "get", "accounts/eu/42/balance")...); code != 0 || got != "100" {
		t.Fatalf("kvctl get after SIGHUP: exit %d, %q %q", code, got, errOut)
	}
	dev.interrupt(t, 20*time.Second)
	if code := dev.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("kvd dev --tls exited with %d after SIGINT:\n%s", code, dev.out)
	}

	dev = startDev(t, dir, base, "--tls")
	defer dev.interrupt(t, 20*time.Second)
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		got, errOut, code := kvctl(t, eps, "", append(flags, "get", "accounts/eu/42/balance")...)
		if code == 0 && got == "100" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after restart, kvctl get with the same flags: exit %d, %q %q", code, got, errOut)
		}
	}
}

// SIGHUP to a plaintext node is a reload with nothing to reload: the node
// keeps serving (the signal's default action once stopped it).
func TestPlaintextSIGHUPKeepsServing(t *testing.T) {
	cl := startClusterWith(t, 1, []string{"--log-level", "info"})
	n := cl.procs[0]
	n.cmd.Process.Signal(syscall.SIGHUP)
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(logOf(n), "no certificates to reload"); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no SIGHUP log within 10s:\n%s", logOf(n))
		}
	}
	if out, errOut, code := kvctl(t, cl.endpoints(), "", "put", "sessions/hup", "1"); code != 0 {
		t.Fatalf("kvctl after SIGHUP: exit %d %q %q\n%s", code, out, errOut, logOf(n))
	}
}

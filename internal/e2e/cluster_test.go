package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/capkv/capkv/api"
)

// bins holds the kvd and kvctl binaries built once for the package.
var bins struct{ dir, kvd, kvctl string }

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "capkv-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bins.dir, bins.kvd, bins.kvctl = dir, filepath.Join(dir, "kvd"), filepath.Join(dir, "kvctl")
	build := exec.Command("go", "build", "-o", dir+"/", "github.com/capkv/capkv/cmd/kvd", "github.com/capkv/capkv/cmd/kvctl")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building binaries:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is one kvd process of a test cluster.
type proc struct {
	id, addr, region, dataDir string
	join                      string // join address; "" for seeds
	cmd                       *exec.Cmd
	log                       *syncBuf // read while the process runs
	done                      chan struct{}
}

// cluster is a set of kvd processes with a static membership.
type cluster struct {
	t     testing.TB
	peers string
	procs []*proc
	extra []string // more kvd flags for every node
	// creds are the transport credentials waitReady dials with (nil: plaintext).
	creds credentials.TransportCredentials
}

// freePorts reserves n loopback ports. The tiny window between closing the
// probe listener and kvd binding the port is acceptable on a test machine.
func freePorts(t testing.TB, n int) []string {
	var addrs []string
	var ls []net.Listener
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		addrs = append(addrs, l.Addr().String())
	}
	for _, l := range ls {
		l.Close()
	}
	return addrs
}

// startCluster starts n kvd processes (regions assigned round-robin) and
// waits until each answers. Every process is killed when the test ends.
func startCluster(t testing.TB, n int, regions ...string) *cluster {
	t.Helper()
	return startClusterWith(t, n, nil, regions...)
}

// startClusterWith starts a cluster whose nodes get extra kvd flags.
func startClusterWith(t testing.TB, n int, extra []string, regions ...string) *cluster {
	t.Helper()
	return startClusterOf(&cluster{t: t, extra: extra}, n, regions...)
}

// startClusterOf starts n nodes of c, which has its flags and credentials.
func startClusterOf(c *cluster, n int, regions ...string) *cluster {
	t := c.t
	t.Helper()
	if len(regions) == 0 {
		regions = []string{"eu"}
	}
	addrs := freePorts(t, n)
	var peers []string
	base := t.TempDir()
	for i := range n {
		p := &proc{id: fmt.Sprintf("n%d", i+1), addr: addrs[i], region: regions[i%len(regions)],
			dataDir: filepath.Join(base, fmt.Sprintf("n%d", i+1))}
		c.procs = append(c.procs, p)
		peers = append(peers, fmt.Sprintf("%s=%s@%s", p.id, p.addr, p.region))
	}
	c.peers = strings.Join(peers, ",")
	for _, p := range c.procs {
		c.start(p)
	}
	t.Cleanup(func() {
		for _, p := range c.procs {
			c.kill(p)
		}
	})
	for _, p := range c.procs {
		c.waitReady(p)
	}
	return c
}

func (c *cluster) start(p *proc) {
	c.t.Helper()
	p.log = &syncBuf{}
	args := []string{"--id", p.id, "--listen", p.addr, "--region", p.region, "--data-dir", p.dataDir, "--log-level", "warn"}
	args = append(args, c.extra...)
	if p.join != "" {
		args = append(args, "--join", p.join)
	} else {
		args = append(args, "--initial-cluster", c.peers)
	}
	p.cmd = exec.Command(bins.kvd, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		c.t.Fatalf("start %s: %v", p.id, err)
	}
	p.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { cmd.Wait(); close(done) }(p.cmd, p.done)
}

// kill sends SIGKILL and reaps the process; safe to call twice.
func (c *cluster) kill(p *proc) {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Kill()
	<-p.done
}

// stop sends SIGTERM and waits for a clean exit (bounded).
func (c *cluster) stop(p *proc) {
	c.t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if code := p.cmd.ProcessState.ExitCode(); code != 0 {
			c.t.Errorf("%s exited with %d after SIGTERM; log:\n%s", p.id, code, p.log)
		}
	case <-time.After(15 * time.Second):
		c.kill(p)
		c.t.Fatalf("%s did not stop within 15s of SIGTERM", p.id)
	}
}

// addJoiner starts a node that registers with --join through the first node.
func (c *cluster) addJoiner(id, region string) *proc {
	c.t.Helper()
	p := &proc{id: id, addr: freePorts(c.t, 1)[0], region: region, join: c.procs[0].addr,
		dataDir: filepath.Join(c.t.TempDir(), id)}
	c.procs = append(c.procs, p)
	c.start(p)
	c.waitReady(p)
	return p
}

func (c *cluster) waitReady(p *proc) {
	c.t.Helper()
	creds := c.creds
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	conn, err := grpc.NewClient(p.addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		c.t.Fatal(err)
	}
	defer conn.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		_, err := api.NewAdminClient(conn).GetNodeInfo(ctx, &api.NodeInfoRequest{})
		cancel()
		if err == nil {
			return
		}
		select {
		case <-p.done:
			c.t.Fatalf("%s exited during start-up: %v\n%s", p.id, p.cmd.ProcessState, p.log)
		default:
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%s not ready after 20s: %v\n%s", p.id, err, p.log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (c *cluster) endpoints() []string {
	var out []string
	for _, p := range c.procs {
		out = append(out, p.addr)
	}
	return out
}

func (c *cluster) proc(id string) *proc {
	for _, p := range c.procs {
		if p.id == id {
			return p
		}
	}
	c.t.Fatalf("no node %s", id)
	return nil
}

// replicasPerNode reads keyspace ks's replica count per node from
// `kvctl ring KS --json`.
func replicasPerNode(t testing.TB, eps []string, ks string) map[string]int {
	t.Helper()
	out, errOut, code := kvctl(t, eps, "", "ring", ks, "--json")
	if code != 0 {
		t.Fatalf("ring %s: exit %d: %s", ks, code, errOut)
	}
	var ring struct {
		Replicas map[string]int `json:"replicas_per_node"`
	}
	if err := json.Unmarshal([]byte(out), &ring); err != nil {
		t.Fatalf("ring %s --json: %v\n%s", ks, err, out)
	}
	return ring.Replicas
}

// kvctl runs the kvctl binary with CAPKV_ENDPOINTS set to eps.
func kvctl(t testing.TB, eps []string, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(bins.kvctl, args...)
	cmd.Env = append(os.Environ(), "CAPKV_ENDPOINTS="+strings.Join(eps, ","))
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr, cmd.Stdin = &o, &e, strings.NewReader(stdin)
	err := cmd.Run()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return o.String(), e.String(), ee.ExitCode()
		}
		t.Fatalf("kvctl %v: %v", args, err)
	}
	return o.String(), e.String(), 0
}

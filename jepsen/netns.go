package jepsen

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
)

// netnsEnv is the network of the netns backend: every node in its own
// network namespace, all attached by veth pairs to a bridge that lives in a
// namespace of its own, plus a client namespace for the harness's own
// connections. The host's network is never touched. Partitions are nftables
// drop rules on each node's input; Close deletes every namespace.
type netnsEnv struct {
	prefix string // namespace name prefix, unique per run
	subnet string // "10.77.K." — addresses only inside our namespaces
	mu     sync.Mutex
	nodes  []string
}

const clientHost = 200

func netnsAvailable() error {
	if os.Geteuid() != 0 {
		return errors.New("the netns backend needs root (network namespaces and nftables); use --backend process")
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("the netns backend needs %s (apt-get install iproute2 nftables): %w", tool, err)
		}
	}
	return nil
}

func run(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

func (e *netnsEnv) ns(name string) string { return e.prefix + name }

// setupNetns creates the bridge, node and client namespaces.
func setupNetns(n int) (*netnsEnv, error) {
	if err := netnsAvailable(); err != nil {
		return nil, err
	}
	var b [3]byte
	rand.Read(b[:])
	e := &netnsEnv{prefix: "capkv-" + hex.EncodeToString(b[:]) + "-", subnet: fmt.Sprintf("10.77.%d.", 1+int(b[0])%250)}
	br := e.ns("br")
	if err := run("ip", "netns", "add", br); err != nil {
		return nil, err
	}
	steps := [][]string{
		{"ip", "netns", "exec", br, "ip", "link", "add", "br0", "type", "bridge"},
		{"ip", "netns", "exec", br, "ip", "link", "set", "br0", "up"},
	}
	hosts := []string{}
	for i := 1; i <= n; i++ {
		hosts = append(hosts, fmt.Sprintf("n%d", i))
	}
	hosts = append(hosts, "client")
	for _, h := range hosts {
		steps = append(steps, e.hostSteps(h)...)
		if h != "client" {
			e.nodes = append(e.nodes, h)
		}
	}
	for _, s := range steps {
		if err := run(s...); err != nil {
			e.teardown()
			return nil, err
		}
	}
	return e, nil
}

// hostSteps create host h's namespace, its veth on the bridge and (a node)
// its nftables chain; h is "client" or a node id nK (address .K).
func (e *netnsEnv) hostSteps(h string) [][]string {
	host := clientHost
	if h != "client" {
		fmt.Sscanf(h, "n%d", &host)
	}
	br := e.ns("br")
	ns := e.ns(h)
	veth := fmt.Sprintf("v%d", host)
	steps := [][]string{
		{"ip", "netns", "add", ns},
		{"ip", "netns", "exec", br, "ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns},
		{"ip", "netns", "exec", br, "ip", "link", "set", veth, "master", "br0", "up"},
		{"ip", "netns", "exec", ns, "ip", "addr", "add", fmt.Sprintf("%s%d/24", e.subnet, host), "dev", "eth0"},
		{"ip", "netns", "exec", ns, "ip", "link", "set", "eth0", "up"},
		{"ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"},
	}
	if h != "client" {
		steps = append(steps,
			[]string{"ip", "netns", "exec", ns, "nft", "add", "table", "inet", "capkv"},
			[]string{"ip", "netns", "exec", ns, "nft", "add", "chain", "inet", "capkv", "input", "{ type filter hook input priority 0; policy accept; }"})
	}
	return steps
}

// addNode adds a node's namespace to a running environment (a node that
// joins during the run). It is torn down with the others.
func (e *netnsEnv) addNode(id string) error {
	for _, s := range e.hostSteps(id) {
		if err := run(s...); err != nil {
			if _, serr := os.Stat("/var/run/netns/" + e.ns(id)); serr == nil {
				run("ip", "netns", "del", e.ns(id))
			}
			return err
		}
	}
	// Listed once its chain exists: cut writes every listed node's rules,
	// and a partition injected meanwhile must not fail on this one.
	e.mu.Lock()
	e.nodes = append(e.nodes, id)
	e.mu.Unlock()
	return nil
}

func (e *netnsEnv) nodeList() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.nodes...)
}

func (e *netnsEnv) addr(id string, port int) string {
	var i int
	fmt.Sscanf(id, "n%d", &i)
	return fmt.Sprintf("%s%d:%d", e.subnet, i, port)
}

// cut rewrites each node's drop rules: a link from A to B drops A's
// packets on B's input (one way; both directions are two links).
func (e *netnsEnv) cut(links []Link, lossPercent int) error {
	for _, l := range links {
		if l.Delay > 0 {
			return errors.New("latency faults need the process backend: this kernel has no netem qdisc")
		}
	}
	var errs []error
	for _, id := range e.nodeList() {
		var b strings.Builder
		b.WriteString("flush chain inet capkv input\n")
		for _, l := range links {
			if l.To == id {
				fmt.Fprintf(&b, "add rule inet capkv input ip saddr %s drop\n", strings.Split(e.addr(l.From, 0), ":")[0])
			}
		}
		if lossPercent > 0 {
			fmt.Fprintf(&b, "add rule inet capkv input ip saddr %s0/24 ip saddr != %s%d numgen random mod 100 < %d drop\n",
				e.subnet, e.subnet, clientHost, lossPercent)
		}
		cmd := exec.Command("ip", "netns", "exec", e.ns(id), "nft", "-f", "-")
		cmd.Stdin = strings.NewReader(b.String())
		if out, err := cmd.CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("nft in %s: %v: %s", id, err, bytes.TrimSpace(out)))
		}
	}
	return errors.Join(errs...)
}

// teardown deletes every namespace of the run (veths go with them).
func (e *netnsEnv) teardown() error {
	var errs []error
	for _, h := range append(e.nodeList(), "client", "br") {
		if _, err := os.Stat("/var/run/netns/" + e.ns(h)); err == nil {
			if err := run("ip", "netns", "del", e.ns(h)); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// dialOption makes gRPC connect from the client namespace.
func (e *netnsEnv) dialOption() grpc.DialOption {
	path := "/var/run/netns/" + e.ns("client")
	return grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
		return dialInNetns(ctx, path, addr)
	})
}

// dialInNetns opens a TCP connection whose socket is created inside the
// network namespace at nsPath. The socket is made on a locked OS thread
// switched into the namespace; the thread is discarded afterwards (a
// goroutine that exits while locked takes its thread with it), so no other
// goroutine ever runs in the wrong namespace.
func dialInNetns(ctx context.Context, nsPath, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with this goroutine
		f, err := os.Open(nsPath)
		if err != nil {
			ch <- result{nil, err}
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- result{nil, fmt.Errorf("enter %s: %w", nsPath, err)}
			return
		}
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		ch <- result{c, err}
	}()
	r := <-ch
	return r.c, r.err
}

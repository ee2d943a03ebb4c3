package jepsen

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/internal/dial"
	"github.com/capkv/capkv/internal/kverrors"
)

// Link is a directed network link between two nodes that a fault cuts or,
// with Delay set, slows down.
type Link struct {
	From, To string
	Delay    time.Duration
}

// Cluster is a capkv cluster under test. Backends: ProcessCluster (kvd
// processes on loopback, partitions through kvd's test-only fault hook).
type Cluster interface {
	// Nodes lists node IDs and client addresses.
	Nodes() []NodeInfo
	// Cut replaces the set of cut links (empty: heal the network).
	Cut(ctx context.Context, links []Link) error
	// Kill sends SIGKILL; Restart starts the node again on its data.
	Kill(id string) error
	Restart(ctx context.Context, id string) error
	// Pause and Resume send SIGSTOP and SIGCONT.
	Pause(id string) error
	Resume(id string) error
	// Loss drops this percentage of node-to-node packets (0: none).
	Loss(ctx context.Context, percent int) error
	// Skew offsets a node's clock (its HLC timestamps); 0 resets it.
	Skew(ctx context.Context, id string, offset time.Duration) error
	// DialOptions are what a client needs to reach the nodes.
	DialOptions() []grpc.DialOption
	// Close stops every process it started.
	Close() error
}

// NodeInfo names one node of a cluster under test.
type NodeInfo struct{ ID, Addr string }

// ProcessConfig configures a process-backend cluster.
type ProcessConfig struct {
	KVD         string // kvd binary
	Nodes       int
	Dir         string // data and logs of every node
	UnsafeReads bool   // start kvd with the test-only unsafe read path
	// Regions labels the nodes in order (default: every node "eu").
	Regions []string
	// TLS runs every node with mutual TLS (certificates made in Dir/tls);
	// the harness dials with a client certificate (DialOptions).
	TLS bool
	// Backend: "process" (loopback; partitions through kvd's test-only fault
	// hook) or "netns" (each node in its own network namespace; partitions
	// are nftables rules; needs root).
	Backend string
}

// ProcessCluster runs kvd processes on loopback ports. Partitions are fault
// rules installed in every node through the test-only SetFaults admin RPC
// (kvd --test-faults): Raft and forwarded traffic across a cut link is
// dropped, while clients still reach every node, as in Jepsen.
type ProcessCluster struct {
	cfg   ProcessConfig
	peers string
	pmu   sync.Mutex // guards procs: the membership nemesis adds nodes during a run
	procs []*process
	env   *netnsEnv   // netns backend only
	pki   *clusterPKI // TLS only

	mu    sync.Mutex
	links []Link // current cuts, re-applied to restarted nodes
	loss  int
	skew  map[string]time.Duration
}

type process struct {
	id, addr, dataDir, logPath, region string
	join                               string // --join addresses of a node that joined during the run
	retired                            bool   // drained, out of the map and stopped (guarded by ProcessCluster.pmu)

	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{}
	paused bool
	conn   *grpc.ClientConn
}

// StartProcessCluster starts the nodes and waits until each has a cluster map.
func StartProcessCluster(ctx context.Context, cfg ProcessConfig) (*ProcessCluster, error) {
	if cfg.Nodes < 1 {
		return nil, errors.New("a cluster needs at least one node")
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, err
	}
	c := &ProcessCluster{cfg: cfg}
	var addrs []string
	var err error
	switch cfg.Backend {
	case "", "process":
		addrs, err = freeLoopbackPorts(cfg.Nodes)
	case "netns":
		if c.env, err = setupNetns(cfg.Nodes); err == nil {
			for i := range cfg.Nodes {
				addrs = append(addrs, c.env.addr(fmt.Sprintf("n%d", i+1), 7001))
			}
		}
	default:
		err = fmt.Errorf("unknown backend %q: want process or netns", cfg.Backend)
	}
	if err != nil {
		return nil, err
	}
	if cfg.TLS {
		nodes := map[string]string{}
		for i, a := range addrs {
			nodes[fmt.Sprintf("n%d", i+1)] = a
		}
		if c.pki, err = newClusterPKI(filepath.Join(cfg.Dir, "tls"), nodes); err != nil {
			c.Close()
			return nil, err
		}
	}
	var peers []string
	for i := range cfg.Nodes {
		p := &process{id: fmt.Sprintf("n%d", i+1), addr: addrs[i], region: "eu"}
		if i < len(cfg.Regions) {
			p.region = cfg.Regions[i]
		}
		p.dataDir = filepath.Join(cfg.Dir, p.id)
		p.logPath = filepath.Join(cfg.Dir, p.id+".log")
		if p.conn, err = dial.Conn(p.addr, c.DialOptions()...); err != nil {
			c.Close()
			return nil, err
		}
		c.procs = append(c.procs, p)
		peers = append(peers, fmt.Sprintf("%s=%s@%s", p.id, p.addr, p.region))
	}
	c.peers = strings.Join(peers, ",")
	for _, p := range c.procs {
		if err := c.start(p); err != nil {
			c.Close()
			return nil, err
		}
	}
	for _, p := range c.procs {
		if err := c.waitReady(ctx, p); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

func freeLoopbackPorts(n int) ([]string, error) {
	var out []string
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		out = append(out, l.Addr().String())
	}
	return out, nil
}

func (c *ProcessCluster) start(p *process) error {
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	args := []string{"--id", p.id, "--listen", p.addr, "--region", p.region, "--data-dir", p.dataDir,
		"--test-faults", "--log-level", "info", "--request-timeout", "2s"}
	if p.join != "" {
		args = append(args, "--join", p.join)
	} else {
		args = append(args, "--initial-cluster", c.peers)
	}
	if c.cfg.UnsafeReads {
		args = append(args, "--unsafe-local-reads")
	}
	if c.pki != nil {
		args = append(args, c.pki.kvdFlags(p.id)...)
	}
	cmd := exec.Command(c.cfg.KVD, args...)
	if c.env != nil {
		// ip netns exec execs kvd in place: the PID we hold is kvd's.
		cmd = exec.Command("ip", append([]string{"netns", "exec", c.env.ns(p.id), c.cfg.KVD}, args...)...)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", p.id, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(done) }()
	p.mu.Lock()
	p.cmd, p.done, p.paused = cmd, done, false
	p.mu.Unlock()
	return nil
}

func (c *ProcessCluster) waitReady(ctx context.Context, p *process) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	admin := api.NewAdminClient(p.conn)
	for {
		rctx, rcancel := context.WithTimeout(ctx, time.Second)
		_, err := admin.GetNodeInfo(rctx, &api.NodeInfoRequest{})
		rcancel()
		if err == nil {
			return nil
		}
		p.mu.Lock()
		done := p.done
		p.mu.Unlock()
		select {
		case <-done:
			return fmt.Errorf("%s exited during start-up; see %s", p.id, p.logPath)
		case <-ctx.Done():
			return fmt.Errorf("%s not ready after 30s: %v; see %s", p.id, kverrors.FromStatus(err), p.logPath)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (c *ProcessCluster) proc(id string) (*process, error) {
	c.pmu.Lock()
	defer c.pmu.Unlock()
	for _, p := range c.procs {
		if p.id == id {
			return p, nil
		}
	}
	return nil, fmt.Errorf("no node %q", id)
}

// live lists the nodes not retired.
func (c *ProcessCluster) live() []*process {
	c.pmu.Lock()
	defer c.pmu.Unlock()
	var out []*process
	for _, p := range c.procs {
		if !p.retired {
			out = append(out, p)
		}
	}
	return out
}

// Nodes lists the nodes, without the ones retired after their drain.
func (c *ProcessCluster) Nodes() []NodeInfo {
	var out []NodeInfo
	for _, p := range c.live() {
		out = append(out, NodeInfo{ID: p.id, Addr: p.addr})
	}
	return out
}

// AllNodes lists every node the run started, retired ones too (the
// history names them by address).
func (c *ProcessCluster) AllNodes() []NodeInfo {
	c.pmu.Lock()
	defer c.pmu.Unlock()
	var out []NodeInfo
	for _, p := range c.procs {
		out = append(out, NodeInfo{ID: p.id, Addr: p.addr})
	}
	return out
}

// Join starts a fresh node (next free id, its own data dir) that registers
// with --join through the live nodes, waits until it serves, and installs
// the current faults on it.
func (c *ProcessCluster) Join(ctx context.Context) (NodeInfo, error) {
	c.pmu.Lock()
	id := fmt.Sprintf("n%d", len(c.procs)+1)
	c.pmu.Unlock()
	var joinVia []string
	for _, p := range c.live() {
		joinVia = append(joinVia, p.addr)
	}
	var addr string
	if c.env != nil {
		if err := c.env.addNode(id); err != nil {
			return NodeInfo{}, err
		}
		addr = c.env.addr(id, 7001)
	} else {
		addrs, err := freeLoopbackPorts(1)
		if err != nil {
			return NodeInfo{}, err
		}
		addr = addrs[0]
	}
	if c.pki != nil {
		if err := c.pki.issue(id, addr); err != nil {
			return NodeInfo{}, err
		}
	}
	p := &process{id: id, addr: addr, region: "eu", join: strings.Join(joinVia, ","),
		dataDir: filepath.Join(c.cfg.Dir, id), logPath: filepath.Join(c.cfg.Dir, id+".log")}
	var err error
	if p.conn, err = dial.Conn(p.addr, c.DialOptions()...); err != nil {
		return NodeInfo{}, err
	}
	// Listed before it starts, so Close kills it whatever happens next.
	c.pmu.Lock()
	c.procs = append(c.procs, p)
	c.pmu.Unlock()
	if err := c.start(p); err != nil {
		return NodeInfo{}, err
	}
	if err := c.waitReady(ctx, p); err != nil {
		return NodeInfo{}, err
	}
	c.mu.Lock()
	links, loss := append([]Link(nil), c.links...), c.loss
	c.mu.Unlock()
	if c.env != nil {
		if err := c.env.cut(links, loss); err != nil {
			return NodeInfo{}, err
		}
	}
	return NodeInfo{ID: id, Addr: addr}, c.applyCuts(ctx, p)
}

// Retire stops a node that has left the cluster map (its drain done):
// Nodes no longer lists it, so neither clients nor nemeses pick it, then it
// gets SIGTERM (SIGKILL after 10s).
func (c *ProcessCluster) Retire(id string) error {
	p, err := c.proc(id)
	if err != nil {
		return err
	}
	c.pmu.Lock()
	p.retired = true
	c.pmu.Unlock()
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return nil
	}
	cmd.Process.Signal(syscall.SIGCONT)
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
	}
	return nil
}

// Cut installs the link cuts on every running node.
func (c *ProcessCluster) Cut(ctx context.Context, links []Link) error {
	c.mu.Lock()
	c.links = append([]Link(nil), links...)
	loss := c.loss
	c.mu.Unlock()
	if c.env != nil {
		return c.env.cut(links, loss)
	}
	var errs []error
	for _, p := range c.live() {
		if err := c.applyCuts(ctx, p); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Loss drops a percentage of node-to-node packets (netns backend only).
func (c *ProcessCluster) Loss(ctx context.Context, percent int) error {
	if c.env == nil {
		return errors.New("packet loss needs the netns backend")
	}
	c.mu.Lock()
	c.loss = percent
	links := append([]Link(nil), c.links...)
	c.mu.Unlock()
	return c.env.cut(links, percent)
}

// DialOptions reach the nodes from the harness (through the client
// namespace on the netns backend).
func (c *ProcessCluster) DialOptions() []grpc.DialOption {
	var opts []grpc.DialOption
	if c.env != nil {
		opts = append(opts, c.env.dialOption())
	}
	if c.pki != nil {
		opts = append(opts, c.pki.dialOption())
	}
	return opts
}

// Skew offsets one node's clock through its fault hook.
func (c *ProcessCluster) Skew(ctx context.Context, id string, offset time.Duration) error {
	p, err := c.proc(id)
	if err != nil {
		return err
	}
	c.mu.Lock()
	if c.skew == nil {
		c.skew = map[string]time.Duration{}
	}
	c.skew[id] = offset
	c.mu.Unlock()
	return c.applyCuts(ctx, p)
}

func (c *ProcessCluster) applyCuts(ctx context.Context, p *process) error {
	p.mu.Lock()
	skip := p.paused || p.cmd == nil || p.cmd.ProcessState != nil
	p.mu.Unlock()
	if skip {
		return nil // applied again when it resumes or restarts
	}
	c.mu.Lock()
	req := &api.SetFaultsRequest{ClockOffsetMs: c.skew[p.id].Milliseconds()}
	links := c.links
	if c.env != nil {
		links = nil // nftables rules in the namespaces cut the netns backend's links
	}
	for _, l := range links {
		r := &api.FaultRule{From: l.From, To: l.To, Action: "drop"}
		if l.Delay > 0 {
			r.Action, r.DelayMs = "delay", l.Delay.Milliseconds()
		}
		req.Rules = append(req.Rules, r)
	}
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := api.NewAdminClient(p.conn).SetFaults(ctx, req); err != nil {
		return fmt.Errorf("set faults on %s: %w", p.id, kverrors.FromStatus(err))
	}
	return nil
}

// Kill sends SIGKILL and reaps the process.
func (c *ProcessCluster) Kill(id string) error {
	p, err := c.proc(id)
	if err != nil {
		return err
	}
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return nil
	}
	cmd.Process.Kill()
	<-done
	return nil
}

// Restart starts a killed node again and re-applies the current cuts.
func (c *ProcessCluster) Restart(ctx context.Context, id string) error {
	p, err := c.proc(id)
	if err != nil {
		return err
	}
	c.pmu.Lock()
	retired := p.retired
	c.pmu.Unlock()
	if retired {
		return nil // drained and stopped while it was down: it stays down
	}
	if err := c.start(p); err != nil {
		return err
	}
	c.pmu.Lock()
	retired = p.retired
	c.pmu.Unlock()
	if retired { // Retire ran while it started
		return c.Kill(id)
	}
	if err := c.waitReady(ctx, p); err != nil {
		return err
	}
	return c.applyCuts(ctx, p)
}

// Pause stops the process with SIGSTOP.
func (c *ProcessCluster) Pause(id string) error { return c.signal(id, syscall.SIGSTOP, true) }

// Resume continues it with SIGCONT.
func (c *ProcessCluster) Resume(id string) error {
	if err := c.signal(id, syscall.SIGCONT, false); err != nil {
		return err
	}
	p, _ := c.proc(id)
	return c.applyCuts(context.Background(), p)
}

func (c *ProcessCluster) signal(id string, sig syscall.Signal, paused bool) error {
	p, err := c.proc(id)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return fmt.Errorf("%s is not running", id)
	}
	p.paused = paused
	return p.cmd.Process.Signal(sig)
}

// Close kills every process (resuming paused ones first) and closes connections.
func (c *ProcessCluster) Close() error {
	c.pmu.Lock()
	procs := append([]*process(nil), c.procs...)
	c.pmu.Unlock()
	for _, p := range procs {
		p.mu.Lock()
		cmd, done := p.cmd, p.done
		p.mu.Unlock()
		if cmd != nil && cmd.Process != nil {
			cmd.Process.Signal(syscall.SIGCONT)
			cmd.Process.Kill()
			<-done
		}
		if p.conn != nil {
			p.conn.Close()
		}
	}
	if c.env != nil {
		return c.env.teardown()
	}
	return nil
}

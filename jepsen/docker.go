package jepsen

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/internal/dial"
)

// DockerCluster runs each kvd in a container of the capkv image on a docker
// network the run creates (static addresses in a subnet of its own).
// Partitions are nftables drop rules entered into each container's network
// namespace from the host (the image is FROM scratch, it has no tools);
// kill, restart, pause and resume are docker's. Close removes the containers
// and the network. With TLS, each container gets the CA certificate and its
// own certificate and key (made in Dir/tls) mounted read-only at /tls.
type DockerCluster struct {
	image, prefix, network, subnet, dir string
	ids                                 []string
	pki                                 *clusterPKI // TLS only
	mu                                  sync.Mutex
	links                               []Link
	loss                                int
}

// DockerConfig configures a docker-backend cluster.
type DockerConfig struct {
	Image string // e.g. capkv:dev (make docker-image)
	Nodes int
	Dir   string // logs are saved here at Close
	// TLS runs every node with mutual TLS, as ProcessConfig.TLS does.
	TLS bool
}

func docker(args ...string) (string, error) {
	out, err := exec.Command("docker", args...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("docker %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return strings.TrimSpace(string(out)), nil
}

// StartDockerCluster creates the network and containers and waits for them.
func StartDockerCluster(ctx context.Context, cfg DockerConfig) (*DockerCluster, error) {
	if _, err := exec.LookPath("docker"); err != nil {
		return nil, errors.New("the docker backend needs the docker CLI and engine")
	}
	if _, err := exec.LookPath("nsenter"); err != nil {
		return nil, errors.New("the docker backend needs nsenter (util-linux) to cut links")
	}
	if _, err := docker("image", "inspect", cfg.Image); err != nil {
		return nil, fmt.Errorf("image %s not found: build it with make docker-image", cfg.Image)
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, err
	}
	// Absolute: the certificates are bind-mounted into the containers.
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, err
	}
	var b [3]byte
	rand.Read(b[:])
	tag := hex.EncodeToString(b[:])
	c := &DockerCluster{image: cfg.Image, prefix: "capkvj-" + tag + "-", network: "capkvj-" + tag,
		subnet: fmt.Sprintf("10.78.%d.", 1+int(b[0])%250), dir: dir}
	var peers []string
	for i := 1; i <= cfg.Nodes; i++ {
		id := fmt.Sprintf("n%d", i)
		c.ids = append(c.ids, id)
		peers = append(peers, fmt.Sprintf("%s=%s@eu", id, c.addr(id)))
	}
	if cfg.TLS {
		nodes := map[string]string{}
		for _, id := range c.ids {
			nodes[id] = c.addr(id)
		}
		if c.pki, err = newClusterPKI(filepath.Join(dir, "tls"), nodes); err != nil {
			return nil, err
		}
	}
	if _, err := docker("network", "create", "--subnet", c.subnet+"0/24", c.network); err != nil {
		return nil, err
	}
	for _, id := range c.ids {
		args := []string{"run", "-d", "--name", c.prefix + id, "--network", c.network, "--ip", strings.Split(c.addr(id), ":")[0]}
		var kvdTLS []string
		if c.pki != nil {
			// Only what this node needs, not the CA key.
			for _, f := range c.pki.nodeFiles(id) {
				args = append(args, "-v", filepath.Join(c.pki.dir, f)+":/tls/"+f+":ro")
			}
			kvdTLS = c.pki.kvdFlagsIn("/tls", id)
		}
		args = append(args, c.image, "--id", id, "--listen", "0.0.0.0:7001", "--advertise", c.addr(id), "--region", "eu", "--data-dir", "/data",
			"--initial-cluster", strings.Join(peers, ","), "--test-faults", "--request-timeout", "2s")
		if _, err := docker(append(args, kvdTLS...)...); err != nil {
			c.Close()
			return nil, err
		}
	}
	for _, id := range c.ids {
		if err := c.waitReady(ctx, id); err != nil {
			c.Close()
			return nil, err
		}
		if err := c.nft(id, "add table inet capkv\nadd chain inet capkv input { type filter hook input priority 0; policy accept; }\n"); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

func (c *DockerCluster) addr(id string) string {
	var i int
	fmt.Sscanf(id, "n%d", &i)
	return fmt.Sprintf("%s%d:7001", c.subnet, 10+i)
}

func (c *DockerCluster) waitReady(ctx context.Context, id string) error {
	cc, err := dial.Conn(c.addr(id), c.DialOptions()...)
	if err != nil {
		return err
	}
	defer cc.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := api.NewAdminClient(cc).GetNodeInfo(rctx, &api.NodeInfoRequest{})
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			logs, _ := docker("logs", "--tail", "20", c.prefix+id)
			return fmt.Errorf("container %s not ready after 30s: %v\n%s", id, err, logs)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// nft runs an nftables script in a container's network namespace.
func (c *DockerCluster) nft(id, script string) error {
	pid, err := docker("inspect", "-f", "{{.State.Pid}}", c.prefix+id)
	if err != nil {
		return err
	}
	cmd := exec.Command("nsenter", "-t", pid, "-n", "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft in container %s: %v: %s", id, err, bytes.TrimSpace(out))
	}
	return nil
}

func (c *DockerCluster) applyRules(id string) error {
	c.mu.Lock()
	var b strings.Builder
	b.WriteString("flush chain inet capkv input\n")
	for _, l := range c.links {
		if l.To == id {
			fmt.Fprintf(&b, "add rule inet capkv input ip saddr %s drop\n", strings.Split(c.addr(l.From), ":")[0])
		}
	}
	if c.loss > 0 {
		fmt.Fprintf(&b, "add rule inet capkv input ip saddr %s0/24 ip saddr != %s1 numgen random mod 100 < %d drop\n", c.subnet, c.subnet, c.loss)
	}
	c.mu.Unlock()
	return c.nft(id, b.String())
}

// Nodes lists the containers' nodes.
func (c *DockerCluster) Nodes() []NodeInfo {
	var out []NodeInfo
	for _, id := range c.ids {
		out = append(out, NodeInfo{ID: id, Addr: c.addr(id)})
	}
	return out
}

// Cut installs drop rules in every running container.
func (c *DockerCluster) Cut(ctx context.Context, links []Link) error {
	for _, l := range links {
		if l.Delay > 0 {
			return errors.New("latency faults need the process backend")
		}
	}
	c.mu.Lock()
	c.links = append([]Link(nil), links...)
	c.mu.Unlock()
	var errs []error
	for _, id := range c.ids {
		if err := c.applyRules(id); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Loss drops a percentage of node-to-node packets.
func (c *DockerCluster) Loss(ctx context.Context, percent int) error {
	c.mu.Lock()
	c.loss = percent
	c.mu.Unlock()
	return c.Cut(ctx, c.links)
}

// Skew offsets a node's clock through kvd's test-only hook.
func (c *DockerCluster) Skew(ctx context.Context, id string, offset time.Duration) error {
	cc, err := dial.Conn(c.addr(id), c.DialOptions()...)
	if err != nil {
		return err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err = api.NewAdminClient(cc).SetFaults(ctx, &api.SetFaultsRequest{ClockOffsetMs: offset.Milliseconds()})
	return err
}

// Kill is docker kill (SIGKILL).
func (c *DockerCluster) Kill(id string) error { _, err := docker("kill", c.prefix+id); return err }

// Restart starts the container again (its namespace is new: rules again).
func (c *DockerCluster) Restart(ctx context.Context, id string) error {
	if _, err := docker("start", c.prefix+id); err != nil {
		return err
	}
	if err := c.waitReady(ctx, id); err != nil {
		return err
	}
	if err := c.nft(id, "add table inet capkv\nadd chain inet capkv input { type filter hook input priority 0; policy accept; }\n"); err != nil {
		return err
	}
	return c.applyRules(id)
}

// Pause freezes the container.
func (c *DockerCluster) Pause(id string) error { _, err := docker("pause", c.prefix+id); return err }

// Resume thaws it.
func (c *DockerCluster) Resume(id string) error { _, err := docker("unpause", c.prefix+id); return err }

// DialOptions: the host reaches the containers' addresses directly (with
// TLS, presenting the harness's certificate).
func (c *DockerCluster) DialOptions() []grpc.DialOption {
	if c.pki != nil {
		return []grpc.DialOption{c.pki.dialOption()}
	}
	return nil
}

// Close saves the logs, removes the containers and the network.
func (c *DockerCluster) Close() error {
	var errs []error
	for _, id := range c.ids {
		if logs, err := exec.Command("docker", "logs", c.prefix+id).CombinedOutput(); err == nil {
			os.WriteFile(filepath.Join(c.dir, id+".log"), logs, 0o644)
		}
		if _, err := docker("rm", "-f", c.prefix+id); err != nil {
			errs = append(errs, err)
		}
	}
	if _, err := docker("network", "rm", c.network); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/internal/dial"
	"github.com/capkv/capkv/internal/kverrors"
	"github.com/capkv/capkv/internal/node"
	"github.com/capkv/capkv/internal/wire"
	"github.com/capkv/capkv/ring"
)

type devFlags struct {
	serveFlags
	nodes    int
	regions  string
	host     string
	basePort int
	tls      bool
}

func devCmd() *cobra.Command {
	var f devFlags
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "run a whole local cluster on loopback (what `make run` starts)",
		Long: `kvd dev starts --nodes nodes in this process, each with its own gRPC port
(--base-port, --base-port+1, ...) and its own Badger directory under --data-dir,
with the keyspaces 'accounts' (cp, template accounts/{region}/{account}/...) and
'sessions' (ap). Nodes are assigned to --regions round-robin. Ctrl-C stops all
nodes together, cleanly; a second Ctrl-C exits at once (status 130). Starting
it again with the same flags keeps the data.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runDev(cmd, f) },
	}
	cmd.Flags().IntVar(&f.nodes, "nodes", 3, "number of nodes")
	cmd.Flags().StringVar(&f.regions, "regions", "eu", "comma-separated region labels, assigned round-robin")
	cmd.Flags().StringVar(&f.host, "host", "127.0.0.1", "loopback address to listen on")
	cmd.Flags().IntVar(&f.basePort, "base-port", 7001, "port of the first node; the others follow")
	cmd.Flags().BoolVar(&f.tls, "tls", false, "run with mutual TLS: a CA, node certificates and a client certificate are made in DATA-DIR/tls (kept for restarts); the banner prints kvctl's flags")
	cmd.Flags().StringVar(&f.dataDir, "data-dir", "data/dev", "directory holding every node's data")
	f.addStorage(cmd)
	return cmd
}

// devLayout is recorded in the data dir so that a restart with different
// flags does not silently place keys on a different ring.
type devLayout struct {
	Nodes []ring.Node `json:"nodes"`
}

func runDev(cmd *cobra.Command, f devFlags) error {
	if f.nodes < 1 || f.nodes > 64 {
		return fmt.Errorf("--nodes %d: want 1..64", f.nodes)
	}
	ip := net.ParseIP(f.host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("--host %q: dev clusters listen on loopback only (127.0.0.0/8 or ::1)", f.host)
	}
	var regions []string
	for _, r := range strings.Split(f.regions, ",") {
		if r = strings.TrimSpace(r); r != "" {
			regions = append(regions, r)
		}
	}
	if len(regions) == 0 {
		return errors.New("--regions is empty")
	}
	log, err := newLogger(f.logLevel)
	if err != nil {
		return err
	}
	dataDir, err := filepath.Abs(f.dataDir)
	if err != nil {
		return err
	}
	var peers []ring.Node
	for i := range f.nodes {
		peers = append(peers, ring.Node{
			ID:     fmt.Sprintf("n%d", i+1),
			Addr:   net.JoinHostPort(f.host, fmt.Sprint(f.basePort+i)),
			Region: regions[i%len(regions)],
		})
	}
	if err := checkLayout(dataDir, peers); err != nil {
		return err
	}
	// Every node's policy; the first's also serves the HTTP endpoints and
	// dials the keyspace creation.
	secs := make([]dial.Security, len(peers))
	var pki *devPKI
	if f.tls {
		p, err := setupDevPKI(dataDir, f.host, peers)
		if err != nil {
			return err
		}
		pki = &p
		for i, n := range peers {
			if secs[i], err = p.security(n.ID); err != nil {
				return err
			}
		}
	}
	if err := startDebug(f.debugAddr, serverTLS(secs[0]), log); err != nil {
		return err
	}
	keyspaces := defaultKeyspaces(peers)
	seeds := peers[:min(3, len(peers))]

	var nodes []*node.Node
	// All nodes stop together, as a real cluster's would on one Ctrl-C: one
	// by one, the ones still running spent each predecessor's stop retrying
	// Raft traffic to the nodes already gone (and logging it).
	closeAll := func() error {
		errs := make([]error, len(nodes))
		var wg sync.WaitGroup
		for i, n := range nodes {
			wg.Go(func() { errs[i] = n.Close() })
		}
		wg.Wait()
		return errors.Join(errs...)
	}
	// The same path as a real deployment: the seeds bootstrap the cluster
	// map, every other node registers with --join, and the keyspaces are
	// created through the metadata group (idempotent on a restart).
	for i, p := range peers {
		cfg := node.DefaultConfig()
		cfg.ID, cfg.Listen, cfg.Region, cfg.Advertise = p.ID, p.Addr, p.Region, p.Addr
		cfg.DataDir = filepath.Join(dataDir, p.ID)
		cfg.Logger = log
		cfg.Security = secs[i]
		if i < len(seeds) {
			cfg.Peers = seeds
		} else {
			cfg.Join = []string{peers[0].Addr}
		}
		applyStorageFlags(cmd, f.serveFlags, &cfg, true)
		n, err := node.New(cfg)
		if err != nil {
			return errors.Join(err, closeAll())
		}
		if err := n.Start(nil); err != nil {
			n.Close()
			return errors.Join(err, closeAll())
		}
		nodes = append(nodes, n)
	}
	mux := http.NewServeMux()
	for _, n := range nodes {
		mux.Handle("/metrics/"+n.ID(), n.MetricsHandler())
	}
	if err := serveMetrics(f.metricsAddr, mux, serverTLS(secs[0]), log); err != nil {
		return errors.Join(err, closeAll())
	}
	if err := createKeyspaces(peers[0].Addr, secs[0], keyspaces); err != nil {
		return errors.Join(err, closeAll())
	}
	// Print the banner only once every node follows the map with the keyspaces.
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		same := true
		for _, n := range nodes {
			same = same && n.Epoch() == nodes[0].Epoch() && n.KeyspaceCount() >= len(keyspaces)
		}
		if same {
			break
		}
	}
	printBanner(cmd, dataDir, peers, keyspaces, pki)
	// SIGHUP reloads every node's certificates, as it does for one kvd.
	hupCtx, hupStop := context.WithCancel(context.Background())
	defer hupStop()
	for _, sec := range secs {
		reloadOnHUP(hupCtx, sec, log)
		waitPoll := reloadOnChange(hupCtx, sec, f.tlsReload, log)
		defer func() { hupStop(); waitPoll() }() // stopped, then joined
	}

	st := newStopper(cmd.ErrOrStderr(), f.stopTimeout)
	st.wait()
	fmt.Fprintln(cmd.OutOrStdout(), "\nstopping the cluster ... (Ctrl-C again to exit at once)")
	if err := st.run(dataDir, closeAll); err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "stopped; data kept in %s\n", dataDir)
	return nil
}

// createKeyspaces creates the dev keyspaces through the Admin API, retrying
// while the metadata group elects its first leader.
func createKeyspaces(addr string, sec dial.Security, keyspaces []ring.KeyspaceConfig) error {
	cc, err := sec.Conn(addr)
	if err != nil {
		return err
	}
	defer cc.Close()
	admin := api.NewAdminClient(cc)
	deadline := time.Now().Add(30 * time.Second)
	for _, ks := range keyspaces {
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			_, err := admin.CreateKeyspace(ctx, &api.CreateKeyspaceRequest{Keyspace: wire.KeyspaceToProto(&ks)})
			cancel()
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("create keyspace %s: %w", ks.Name, kverrors.FromStatus(err))
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	return nil
}

func checkLayout(dataDir string, peers []ring.Node) error {
	path := filepath.Join(dataDir, "cluster.json")
	want, _ := json.MarshalIndent(devLayout{Nodes: peers}, "", "  ")
	have, err := os.ReadFile(path)
	switch {
	case err == nil:
		if string(have) != string(want) {
			return fmt.Errorf("%s was written by a cluster with a different layout (nodes, ports or regions);\n"+
				"start with the same flags, use another --data-dir, or remove the directory.\nrecorded layout:\n%s", dataDir, have)
		}
		return nil
	case errors.Is(err, os.ErrNotExist):
		if err := os.MkdirAll(dataDir, 0o755); err != nil {
			return err
		}
		return os.WriteFile(path, want, 0o644)
	default:
		return err
	}
}

func printBanner(cmd *cobra.Command, dataDir string, peers []ring.Node, keyspaces []ring.KeyspaceConfig, pki *devPKI) {
	w := cmd.OutOrStdout()
	var eps []string
	fmt.Fprintf(w, "capkv dev cluster: %d node(s), data in %s\n\n", len(peers), dataDir)
	for _, p := range peers {
		fmt.Fprintf(w, "  %-4s %-21s region=%s\n", p.ID, p.Addr, p.Region)
		eps = append(eps, p.Addr)
	}
	fmt.Fprintln(w, "\nkeyspaces:")
	for _, k := range keyspaces {
		fmt.Fprintf(w, "  %-10s mode=%s replicas=%d partitions=%d template=%s\n", k.Name, k.Mode, k.Replicas, k.Partitions, k.Template)
	}
	region := peers[0].Region
	tlsLine, tlsEnv := "", ""
	if pki != nil {
		tlsLine = fmt.Sprintf("\nmutual TLS: certificates in %s\nkvctl flags: %s\n", pki.dir, pki.kvctlFlags())
		tlsEnv = fmt.Sprintf("  export CAPKV_CACERT=%s CAPKV_CERT=%s CAPKV_KEY=%s\n", pki.caCert(), pki.cert(devClientName), pki.key(devClientName))
	}
	fmt.Fprintf(w, `
endpoints: %s
%s
try, in another terminal:
  export CAPKV_ENDPOINTS=%s
%s  bin/kvctl put accounts/%s/42/balance 100
  bin/kvctl get accounts/%s/42/balance
  bin/kvctl -v get accounts/%s/42/balance
  bin/kvctl locate accounts/%s/42/balance
  bin/kvctl scan accounts/%s/42/
  bin/kvctl cluster status

Ctrl-C stops the cluster; the data stays.
`, strings.Join(eps, ","), tlsLine, strings.Join(eps, ","), tlsEnv, region, region, region, region, region)
}

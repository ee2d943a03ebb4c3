// Command kvd is the capkv server node.
//
//	kvd --id n1 --listen 127.0.0.1:7001 --region eu --data-dir /var/lib/capkv \
//	    --peers n1=127.0.0.1:7001@eu,n2=127.0.0.1:7002@eu,n3=127.0.0.1:7003@eu
//	kvd dev --nodes 3      # a whole local cluster on loopback (what `make run` starts)
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	_ "net/http/pprof"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/capkv/capkv/internal/buildinfo"
	"github.com/capkv/capkv/internal/failure"
	"github.com/capkv/capkv/internal/node"
	"github.com/capkv/capkv/ring"
)

func main() {
	if err := rootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "kvd:", err)
		os.Exit(1)
	}
}

// serveFlags are the flags of a single node; dev mode reuses the storage ones.
type serveFlags struct {
	configFile     string
	traceSample    float64
	otlpEndpoint   string
	id             string
	listen         string
	region         string
	dataDir        string
	peers          string
	join           string
	joinTimeout    time.Duration
	advertise      string
	testFaults     bool
	unsafeReads    bool
	debugAddr      string
	metricsAddr    string
	tombstoneGrace time.Duration
	probeInterval  time.Duration
	downAfter      time.Duration
	syncWrites     bool
	memtableMB     int
	cacheMB        int
	vnodes         int
	requestTimeout time.Duration
	logLevel       string
	stopTimeout    time.Duration
	tlsReload      time.Duration
	tls            tlsSettings
}

func (f *serveFlags) addStorage(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&f.syncWrites, "sync", true, "fsync every write before acknowledging it")
	cmd.Flags().IntVar(&f.memtableMB, "memtable-mb", 8, "Badger memtable size in MiB")
	cmd.Flags().IntVar(&f.cacheMB, "cache-mb", 16, "Badger block cache size in MiB")
	cmd.Flags().IntVar(&f.vnodes, "vnodes", 64, "ring tokens (virtual nodes) per node")
	cmd.Flags().DurationVar(&f.requestTimeout, "request-timeout", 2*time.Second, "deadline of requests that arrive without one")
	cmd.Flags().StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	cmd.Flags().DurationVar(&f.tlsReload, "tls-reload-interval", 10*time.Second, "with TLS: how often the certificate files are checked for a change, which reloads them as SIGHUP does (0: only on SIGHUP)")
	cmd.Flags().DurationVar(&f.stopTimeout, "stop-timeout", 30*time.Second, "on Ctrl-C/SIGTERM, give up a clean stop that takes longer, dumping goroutine stacks into the data dir (0: wait forever); a second Ctrl-C exits at once")
	cmd.Flags().StringVar(&f.debugAddr, "debug-addr", "", "serve Go's pprof profiles on this address (e.g. 127.0.0.1:6060); off by default")
	cmd.Flags().StringVar(&f.metricsAddr, "metrics-addr", "", "serve Prometheus metrics on this address at /metrics (kvd dev: /metrics/NODE-ID); off by default")
	cmd.Flags().Float64Var(&f.traceSample, "trace-sample", 0, "tracing: fraction of client requests to trace (0..1; 0: only those a client asks for, kvctl --trace); spans are kept in memory for kvctl trace")
	cmd.Flags().StringVar(&f.otlpEndpoint, "otlp-endpoint", "", "tracing: also send spans by OTLP/gRPC (plaintext) to this collector, host:port (Jaeger, Tempo, an OpenTelemetry collector)")
	cmd.Flags().DurationVar(&f.tombstoneGrace, "tombstone-grace", 10*time.Minute, "ap: how old a delete must be before anti-entropy purges it from replicas that all hold it")
	cmd.Flags().DurationVar(&f.probeInterval, "probe-interval", failure.DefaultInterval, "failure detector: how often a quiet node is probed (any answer to any call counts)")
	cmd.Flags().DurationVar(&f.downAfter, "down-after", failure.DefaultDownAfter, "failure detector: a node silent this long is down (ap skips it, a cp minority refuses at once)")
}

// serveHTTP serves h on addr, the value of flag, until the process exits
// ("": off). The debug and metrics endpoints both use it.
// With tlsCfg it serves HTTPS only.
func serveHTTP(flag, addr string, h http.Handler, tlsCfg *tls.Config, log *slog.Logger, what ...any) error {
	if addr == "" {
		return nil
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--%s %s: %w", flag, addr, err)
	}
	if tlsCfg != nil {
		lis = tls.NewListener(lis, tlsCfg)
		what = append(what, "tls", true)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(lis)
	log.Info(strings.TrimSuffix(flag, "-addr")+" endpoint", append([]any{"addr", lis.Addr().String()}, what...)...)
	return nil
}

// serveMetrics serves mux (the nodes' /metrics handlers) on --metrics-addr.
func serveMetrics(addr string, mux *http.ServeMux, tlsCfg *tls.Config, log *slog.Logger) error {
	return serveHTTP("metrics-addr", addr, mux, tlsCfg, log)
}

// startDebug serves net/http/pprof (on the default mux) on --debug-addr.
func startDebug(addr string, tlsCfg *tls.Config, log *slog.Logger) error {
	return serveHTTP("debug-addr", addr, http.DefaultServeMux, tlsCfg, log, "pprof", "/debug/pprof/")
}

func rootCmd() *cobra.Command {
	var f serveFlags
	cmd := &cobra.Command{
		Use:   "kvd",
		Short: "capkv server node",
		Long: `kvd runs one capkv node: it stores partition replicas in Badger, serves the
KV and Admin gRPC services, and forwards requests for keys it does not own.

A cluster starts from its seed nodes, each started with the same
--initial-cluster list; the first three of them hold the cluster map in a small
Raft group. Any other node registers itself with --join ADDR (any node's
address). 'kvd dev' starts a whole local cluster in one process the same way.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       buildinfo.Version(),
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runServe(cmd, f)
		},
	}
	cmd.Flags().StringVar(&f.configFile, "config", "", "JSON config file (flags given on the command line override it)")
	cmd.Flags().StringVar(&f.id, "id", "", "node ID, unique and stable across restarts")
	cmd.Flags().StringVar(&f.listen, "listen", "127.0.0.1:7001", "gRPC listen address")
	cmd.Flags().StringVar(&f.region, "region", "eu", "locality label of this node")
	cmd.Flags().StringVar(&f.dataDir, "data-dir", "", "directory of the node's data (required)")
	cmd.Flags().StringVar(&f.peers, "initial-cluster", "", "seed nodes of a new cluster, this one included: id=host:port@region,...")
	cmd.Flags().StringVar(&f.peers, "peers", "", "alias of --initial-cluster")
	cmd.Flags().StringVar(&f.join, "join", "", "join an existing cluster through these node addresses: host:port,...")
	cmd.Flags().DurationVar(&f.joinTimeout, "join-timeout", node.DefaultConfig().JoinTimeout, "with --join: give up (exit 1) when no address accepted the registration for this long; each failed attempt is logged")
	cmd.Flags().StringVar(&f.advertise, "advertise", "", "address other nodes reach this one at (default: the listen address)")
	cmd.Flags().BoolVar(&f.testFaults, "test-faults", false, "TEST ONLY: accept fault rules (partitions) over the admin API, for kvjepsen without root")
	cmd.Flags().BoolVar(&f.unsafeReads, "unsafe-local-reads", false, "TEST ONLY: serve linearizable reads locally without confirming leadership (a deliberate bug the checker must catch)")
	cmd.Flags().MarkHidden("unsafe-local-reads")
	f.addStorage(cmd)
	f.tls.addFlags(cmd)
	cmd.AddCommand(devCmd(), healthCmd())
	cmd.SetVersionTemplate("{{.Name}} {{.Version}}\n")
	return cmd
}

func newLogger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}

func splitList(s string) []string {
	var out []string
	for _, x := range strings.Split(s, ",") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}

// ParsePeers parses "id=host:port@region,..." (region optional, default "").
func parsePeers(s string) ([]ring.Node, error) {
	var out []ring.Node
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		id, rest, ok := strings.Cut(item, "=")
		if !ok || id == "" || rest == "" {
			return nil, fmt.Errorf("--initial-cluster entry %q: want id=host:port@region", item)
		}
		addr, region, _ := strings.Cut(rest, "@")
		if !strings.Contains(addr, ":") {
			return nil, fmt.Errorf("--initial-cluster entry %q: address %q has no port", item, addr)
		}
		out = append(out, ring.Node{ID: id, Addr: addr, Region: region})
	}
	if len(out) == 0 {
		return nil, errors.New("--initial-cluster is empty: list the seed nodes, this one included")
	}
	return out, nil
}

func runServe(cmd *cobra.Command, f serveFlags) error {
	cfg := node.DefaultConfig()
	ts := f.tls
	if f.configFile != "" {
		ts = tlsSettings{MinVersion: f.tls.MinVersion}
		if err := loadConfigFile(f.configFile, &cfg, &ts); err != nil {
			return err
		}
		ts.override(cmd, f.tls)
	}
	sec, err := ts.security()
	if err != nil {
		return err
	}
	cfg.Security = sec
	cfg.AdminIdentities = ts.admins()
	set := func(name string) bool { return cmd.Flags().Changed(name) || f.configFile == "" }
	if set("id") {
		cfg.ID = f.id
	}
	if set("listen") {
		cfg.Listen = f.listen
	}
	if set("region") {
		cfg.Region = f.region
	}
	if set("data-dir") {
		cfg.DataDir = f.dataDir
	}
	if (cmd.Flags().Changed("peers") || cmd.Flags().Changed("initial-cluster")) || (f.configFile == "" && f.peers != "") {
		peers, err := parsePeers(f.peers)
		if err != nil {
			return err
		}
		cfg.Peers = peers
	}
	if f.join != "" {
		cfg.Join = splitList(f.join)
	}
	if set("join-timeout") {
		cfg.JoinTimeout = f.joinTimeout
	}
	if f.advertise != "" {
		cfg.Advertise = f.advertise
	} else if cfg.Advertise == "" {
		cfg.Advertise = cfg.Listen
	}
	applyStorageFlags(cmd, f, &cfg, f.configFile == "")
	cfg.TestFaults, cfg.UnsafeLocalReads = f.testFaults, f.unsafeReads
	if len(cfg.Keyspaces) == 0 && len(cfg.Peers) > 0 {
		cfg.Keyspaces = defaultKeyspaces(cfg.Peers)
	}
	log, err := newLogger(f.logLevel)
	if err != nil {
		return err
	}
	cfg.Logger = log
	if err := startDebug(f.debugAddr, serverTLS(sec), log); err != nil {
		return err
	}
	n, err := node.New(cfg)
	if err != nil {
		return err
	}
	if err := n.Start(nil); err != nil {
		n.Close()
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", n.MetricsHandler())
	if err := serveMetrics(f.metricsAddr, mux, serverTLS(sec), log); err != nil {
		n.Close()
		return err
	}
	// Installed only now: a signal during start-up ends the process at once.
	hupCtx, hupStop := context.WithCancel(context.Background())
	defer hupStop()
	reloadOnHUP(hupCtx, sec, log)
	waitPoll := reloadOnChange(hupCtx, sec, f.tlsReload, log)
	defer func() { hupStop(); waitPoll() }() // stopped, then joined
	st := newStopper(os.Stderr, f.stopTimeout)
	sig := st.wait()
	log.Info("shutting down", "signal", sig.String())
	return st.run(cfg.DataDir, n.Close)
}

func applyStorageFlags(cmd *cobra.Command, f serveFlags, cfg *node.Config, all bool) {
	set := func(name string) bool { return all || cmd.Flags().Changed(name) }
	if set("sync") {
		cfg.SyncWrites = f.syncWrites
	}
	if set("memtable-mb") {
		cfg.MemTableSize = int64(f.memtableMB) << 20
	}
	if set("cache-mb") {
		cfg.BlockCacheSize = int64(f.cacheMB) << 20
	}
	if set("vnodes") {
		cfg.VNodes = f.vnodes
	}
	if set("request-timeout") {
		cfg.RequestTimeout = f.requestTimeout
	}
	if set("trace-sample") {
		cfg.TraceSample = f.traceSample
	}
	if set("otlp-endpoint") {
		cfg.OTLPEndpoint = f.otlpEndpoint
	}
	if set("tombstone-grace") {
		cfg.TombstoneGrace = f.tombstoneGrace
	}
	if set("probe-interval") {
		cfg.ProbeInterval = f.probeInterval
	}
	if set("down-after") {
		cfg.DownAfter = f.downAfter
	}
}

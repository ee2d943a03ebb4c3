package node

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/capkv/capkv/internal/dial"
	"github.com/capkv/capkv/internal/failure"
	"github.com/capkv/capkv/internal/fault"
	"github.com/capkv/capkv/internal/kverrors"
	"github.com/capkv/capkv/internal/trace"
	"github.com/capkv/capkv/replication/cp"
	"github.com/capkv/capkv/ring"
	"github.com/capkv/capkv/shard"
)

// Config configures one node. Build it from DefaultConfig and override fields.
type Config struct {
	// ID names the node in the cluster map; it must be unique and stable
	// across restarts (data and ring placement are keyed by it).
	ID string
	// Listen is the TCP address the gRPC server binds ("127.0.0.1:7001";
	// port 0 picks a free port).
	Listen string
	// Region is the node's locality label.
	Region string
	// DataDir holds the node's Badger store.
	DataDir string
	// Peers is the initial cluster (seed nodes), this node included: the
	// nodes of the first cluster map. The first MetaSize of them form the
	// metadata group. Empty when the node joins an existing cluster.
	Peers []ring.Node
	// Join lists addresses of existing nodes to register through, for a node
	// that is not in the initial cluster.
	Join []string
	// JoinTimeout bounds registration through Join.
	JoinTimeout time.Duration
	// Advertise is the address other nodes use (default: the bound address).
	Advertise string
	// MetaSize is the number of seed nodes in the metadata group.
	MetaSize int
	// Keyspaces of the initial cluster map (seeds only).
	Keyspaces []ring.KeyspaceConfig
	// VNodes is the number of ring tokens per node.
	VNodes int
	// SyncWrites makes every write fsync before it is acknowledged.
	SyncWrites bool
	// MaxKeySize and MaxValueSize bound request sizes (bytes).
	MaxKeySize, MaxValueSize int
	// MemTableSize and BlockCacheSize size Badger's memory (bytes).
	MemTableSize, BlockCacheSize int64
	// RequestTimeout applies to requests that arrive without a deadline.
	RequestTimeout time.Duration
	// ShutdownGrace bounds how long Close waits for in-flight requests.
	ShutdownGrace time.Duration
	// ScanLimit is the page size of a scan that names none, and its maximum.
	ScanLimit int
	// Raft is the timing of every cp partition group.
	Raft cp.Tuning
	// AntiEntropyInterval is how often a node repairs the ap partitions it
	// leads the preference list of (0: only on demand).
	AntiEntropyInterval time.Duration
	// TombstoneGrace is how old an ap tombstone must be before anti-entropy
	// purges it from replicas that all hold it (0: ap.DefaultTombstoneGrace).
	TombstoneGrace time.Duration
	// ProbeInterval and DownAfter tune the failure detector: a quiet node is
	// probed every ProbeInterval and is down after DownAfter without an
	// answer (see internal/failure).
	ProbeInterval, DownAfter time.Duration
	// Faults, when set, decides the fate of Raft messages between nodes
	// (tests and the partition harness; nil delivers everything).
	Faults fault.Injector
	// Tracing records this node's spans (internal/trace); nil: New makes a
	// provider from TraceSample and OTLPEndpoint that buffers spans.
	Tracing *trace.Provider
	// TraceSample is the fraction of client requests traced without being
	// asked (0..1); OTLPEndpoint, when set, is a collector spans are also
	// sent to (host:port, OTLP/gRPC).
	TraceSample  float64
	OTLPEndpoint string
	// TestFaults enables the SetFaults admin RPC, which installs network
	// fault rules on this node's traffic to other nodes. TEST ONLY: it is how
	// the partition harness cuts links between kvd processes without root.
	TestFaults bool
	// UnsafeLocalReads serves linearizable reads from the local replica
	// without confirming leadership. TEST ONLY: it exists so the
	// linearizability checker can be shown to catch the resulting stale reads.
	UnsafeLocalReads bool
	// Security is the transport of the node's listener and of its dials to
	// other nodes: plaintext (the zero value) or mutual TLS (dial.NodeTLS).
	Security dial.Security
	// AdminIdentities are the client identities (certificate common names)
	// that may do everything on every keyspace and alone may create
	// keyspaces, with Security's client certificate auth (see
	// internal/access; empty: creating keyspaces is open).
	AdminIdentities []string
	// Logger receives the node's logs; nil discards them.
	Logger *slog.Logger
}

// DefaultConfig returns a config with every default applied.
func DefaultConfig() Config {
	st := shard.DefaultOptions("")
	return Config{
		VNodes:         64,
		MetaSize:       3,
		JoinTimeout:    30 * time.Second,
		SyncWrites:     true,
		MaxKeySize:     st.MaxKeySize,
		MaxValueSize:   st.MaxValueSize,
		MemTableSize:   st.MemTableSize,
		BlockCacheSize: st.BlockCacheSize,
		RequestTimeout: 2 * time.Second,
		ShutdownGrace:  5 * time.Second,
		ScanLimit:      1000,
		Raft:           cp.DefaultTuning(),

		AntiEntropyInterval: 30 * time.Second,
		ProbeInterval:       failure.DefaultInterval,
		DownAfter:           failure.DefaultDownAfter,
	}
}

// Validate reports every bad field with its value.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{kverrors.ErrInvalidArgument}, args...)...))
	}
	if c.TraceSample < 0 || c.TraceSample > 1 {
		bad("trace sample %v: want a fraction between 0 and 1", c.TraceSample)
	}
	if c.ID == "" {
		bad("node id is empty")
	}
	if c.Listen == "" {
		bad("listen address is empty")
	}
	if c.DataDir == "" {
		bad("data dir is empty")
	}
	found := false
	for _, p := range c.Peers {
		if p.ID == c.ID {
			found = true
		}
	}
	switch {
	case len(c.Peers) > 0 && len(c.Join) > 0:
		bad("both an initial cluster (%d peers) and join addresses %v: a node either bootstraps or joins", len(c.Peers), c.Join)
	case len(c.Peers) == 0 && len(c.Join) == 0:
		bad("neither an initial cluster (peers) nor join addresses: the node would know no cluster")
	case len(c.Peers) > 0 && !found:
		bad("node id %q is not among the %d peers of the initial cluster", c.ID, len(c.Peers))
	}
	if c.MetaSize < 1 {
		bad("meta size = %d, want >= 1", c.MetaSize)
	}
	if len(c.Join) > 0 && c.JoinTimeout <= 0 {
		bad("join timeout = %s, want > 0", c.JoinTimeout)
	}
	if c.VNodes < 1 {
		bad("vnodes = %d, want >= 1", c.VNodes)
	}
	if c.MaxKeySize < 1 {
		bad("max key size = %d, want >= 1", c.MaxKeySize)
	}
	if c.MaxValueSize < 0 {
		bad("max value size = %d, want >= 0", c.MaxValueSize)
	}
	if c.RequestTimeout <= 0 {
		bad("request timeout = %s, want > 0", c.RequestTimeout)
	}
	if c.ShutdownGrace < 0 {
		bad("shutdown grace = %s, want >= 0", c.ShutdownGrace)
	}
	if c.ProbeInterval <= 0 || c.DownAfter < 2*c.ProbeInterval {
		bad("probe interval = %s, down after = %s: want probe interval > 0 and down after >= 2 x probe interval", c.ProbeInterval, c.DownAfter)
	}
	if c.ScanLimit < 1 {
		bad("scan limit = %d, want >= 1", c.ScanLimit)
	}
	return errors.Join(errs...)
}

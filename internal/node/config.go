package node

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/capkv/capkv/internal/kverrors"
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
	// Peers is the whole static membership, this node included. A peer whose
	// Addr is empty for this node's ID gets the bound listen address.
	Peers []ring.Node
	// Keyspaces defined in the cluster.
	Keyspaces []ring.KeyspaceConfig
	// Epoch of the static cluster map.
	Epoch uint64
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
	// Faults, when set, decides the fate of Raft messages between nodes
	// (tests and the partition harness; nil delivers everything).
	Faults cp.Faults
	// UnsafeLocalReads serves linearizable reads from the local replica
	// without confirming leadership. TEST ONLY: it exists so the
	// linearizability checker can be shown to catch the resulting stale reads.
	UnsafeLocalReads bool
	// Logger receives the node's logs; nil discards them.
	Logger *slog.Logger
}

// DefaultConfig returns a config with every default applied.
func DefaultConfig() Config {
	st := shard.DefaultOptions("")
	return Config{
		Epoch:          1,
		VNodes:         64,
		SyncWrites:     true,
		MaxKeySize:     st.MaxKeySize,
		MaxValueSize:   st.MaxValueSize,
		MemTableSize:   st.MemTableSize,
		BlockCacheSize: st.BlockCacheSize,
		RequestTimeout: 2 * time.Second,
		ShutdownGrace:  5 * time.Second,
		ScanLimit:      1000,
		Raft:           cp.DefaultTuning(),
	}
}

// Validate reports every bad field with its value.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{kverrors.ErrInvalidArgument}, args...)...))
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
	if !found {
		bad("node id %q is not among the %d peers", c.ID, len(c.Peers))
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
	if c.ScanLimit < 1 {
		bad("scan limit = %d, want >= 1", c.ScanLimit)
	}
	return errors.Join(errs...)
}

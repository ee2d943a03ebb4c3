package shard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/capkv/capkv/internal/kverrors"
	"github.com/capkv/capkv/internal/limits"
)

// Options configure a Store. Build them with DefaultOptions and change fields:
// Open fills zero numeric fields with their defaults, but a zero SyncWrites
// means false, so a literal Options{} opts out of fsync.
type Options struct {
	Dir string
	// SyncWrites fsyncs every commit before it is acknowledged (default true).
	SyncWrites   bool
	MaxKeySize   int // user key limit in bytes (default 4 KiB)
	MaxValueSize int // value limit in bytes (default 1 MiB)

	// Badger's defaults are sized for a dedicated server (64 MiB memtables x5,
	// 256 MiB block cache); a node runs one Badger for all its partitions and
	// must idle small, so these default to a few MiB each.
	MemTableSize   int64 // default 8 MiB
	BlockCacheSize int64 // default 16 MiB
	IndexCacheSize int64 // default 8 MiB (0 in Badger would keep every index in memory)
	// ValueThreshold: values larger than this go to the value log (default 1 KiB).
	ValueThreshold int64
	// ValueLogFileSize: size of one value log file (default 64 MiB).
	ValueLogFileSize int64
	// ValueLogGCInterval: how often the value log is garbage collected
	// (default 5 min; negative disables).
	ValueLogGCInterval time.Duration

	// Logger receives Badger's logs (its INFO lines at Debug); nil discards them.
	Logger *slog.Logger
}

const (
	defaultMaxKeySize       = limits.DefaultMaxKeySize
	defaultMaxValueSize     = limits.DefaultMaxValueSize
	defaultMemTableSize     = 8 << 20
	defaultBlockCacheSize   = 16 << 20
	defaultIndexCacheSize   = 8 << 20
	defaultValueThreshold   = 1 << 10
	defaultValueLogFileSize = 64 << 20
	defaultVLogGCInterval   = 5 * time.Minute

	// Bounds checked by Validate.
	maxKeySizeLimit   = maxBadgerKey - 1 - 2 - MaxPartitionIDLen - 16 // leave room for the prefix
	maxValueSizeLimit = limits.MaxValueSizeLimit
	minMemTableSize   = 1 << 20
)

// DefaultOptions returns the defaults for a store in dir.
func DefaultOptions(dir string) Options {
	return Options{
		Dir:                dir,
		SyncWrites:         true,
		MaxKeySize:         defaultMaxKeySize,
		MaxValueSize:       defaultMaxValueSize,
		MemTableSize:       defaultMemTableSize,
		BlockCacheSize:     defaultBlockCacheSize,
		IndexCacheSize:     defaultIndexCacheSize,
		ValueThreshold:     defaultValueThreshold,
		ValueLogFileSize:   defaultValueLogFileSize,
		ValueLogGCInterval: defaultVLogGCInterval,
	}
}

// withDefaults is the one place defaults are applied: zero means "default".
func (o Options) withDefaults() Options {
	d := DefaultOptions(o.Dir)
	if o.MaxKeySize == 0 {
		o.MaxKeySize = d.MaxKeySize
	}
	if o.MaxValueSize == 0 {
		o.MaxValueSize = d.MaxValueSize
	}
	if o.MemTableSize == 0 {
		o.MemTableSize = d.MemTableSize
	}
	if o.BlockCacheSize == 0 {
		o.BlockCacheSize = d.BlockCacheSize
	}
	if o.IndexCacheSize == 0 {
		o.IndexCacheSize = d.IndexCacheSize
	}
	if o.ValueThreshold == 0 {
		o.ValueThreshold = d.ValueThreshold
	}
	if o.ValueLogFileSize == 0 {
		o.ValueLogFileSize = d.ValueLogFileSize
	}
	if o.ValueLogGCInterval == 0 {
		o.ValueLogGCInterval = d.ValueLogGCInterval
	}
	return o
}

// Validate reports every bad field with its value, joined, each wrapping
// kverrors.ErrInvalidArgument. Zero numeric fields are valid (they mean the
// default), so Validate accepts exactly what Open accepts.
func (o Options) Validate() error {
	o = o.withDefaults()
	var errs []error
	bad := func(field string, v any, why string) {
		errs = append(errs, fmt.Errorf("%w: shard option %s = %v: %s", kverrors.ErrInvalidArgument, field, v, why))
	}
	if strings.TrimSpace(o.Dir) == "" {
		bad("Dir", fmt.Sprintf("%q", o.Dir), "must name a directory")
	}
	if o.MaxKeySize < 1 || o.MaxKeySize > maxKeySizeLimit {
		bad("MaxKeySize", o.MaxKeySize, fmt.Sprintf("must be in [1, %d]", maxKeySizeLimit))
	}
	if o.MaxValueSize < 1 || o.MaxValueSize > maxValueSizeLimit {
		bad("MaxValueSize", o.MaxValueSize, fmt.Sprintf("must be in [1, %d]", maxValueSizeLimit))
	}
	if o.MemTableSize < minMemTableSize {
		bad("MemTableSize", o.MemTableSize, fmt.Sprintf("must be at least %d", minMemTableSize))
	}
	if o.BlockCacheSize < 0 {
		bad("BlockCacheSize", o.BlockCacheSize, "must not be negative")
	}
	if o.IndexCacheSize < 0 {
		bad("IndexCacheSize", o.IndexCacheSize, "must not be negative")
	}
	// Badger refuses a threshold above 15% of the memtable (its max batch size).
	if maxThr := o.MemTableSize * 15 / 100; o.ValueThreshold < 1 || o.ValueThreshold > maxThr || o.ValueThreshold > 1<<20 {
		bad("ValueThreshold", o.ValueThreshold, fmt.Sprintf("must be in [1, min(1 MiB, 15%% of MemTableSize = %d)]", maxThr))
	}
	// One record, written to the value log, must fit in one file.
	if minVlog := int64(o.MaxValueSize) + int64(o.MaxKeySize) + MaxCausalSize + 1<<20; o.ValueLogFileSize < minVlog || o.ValueLogFileSize >= 2<<30 {
		bad("ValueLogFileSize", o.ValueLogFileSize, fmt.Sprintf("must be in [%d (largest record + 1 MiB), 2 GiB)", minVlog))
	}
	return errors.Join(errs...)
}

// badgerOptions translates Options (already defaulted and validated).
func (o Options) badgerOptions() badger.Options {
	return badger.DefaultOptions(o.Dir).
		// Badger syncs nothing itself: the Store syncs the writes that must
		// be durable (syncAll), so that Replica.ApplyNoSync can skip it.
		WithSyncWrites(false).
		WithMemTableSize(o.MemTableSize).
		WithNumMemtables(2).
		WithNumLevelZeroTables(4).
		WithNumLevelZeroTablesStall(10).
		WithBlockCacheSize(o.BlockCacheSize).
		WithIndexCacheSize(o.IndexCacheSize).
		WithValueThreshold(o.ValueThreshold).
		WithValueLogFileSize(o.ValueLogFileSize).
		WithNumCompactors(2).
		WithNumGoroutines(2).
		WithMetricsEnabled(false). // expvar globals; we export our own metrics
		WithDetectConflicts(true). // Update relies on conflict detection
		WithLogger(badgerLogger{l: o.Logger})
}

// badgerLogger adapts badger.Logger to slog. Badger formats printf-style
// messages with trailing newlines; they become one slog record each.
// Badger's INFO lines are routine reports (about 20 at an open, a table of
// its levels at every close) that say nothing to whoever runs a node, so
// they are slog Debug: Badger speaks at the node's default level only to
// warn.
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) log(level slog.Level, format string, args []any) {
	if b.l == nil || !b.l.Enabled(context.Background(), level) {
		return
	}
	b.l.Log(context.Background(), level, strings.TrimRight(fmt.Sprintf(format, args...), "\n"), "component", "badger")
}

func (b badgerLogger) Errorf(f string, a ...any)   { b.log(slog.LevelError, f, a) }
func (b badgerLogger) Warningf(f string, a ...any) { b.log(slog.LevelWarn, f, a) }
func (b badgerLogger) Infof(f string, a ...any)    { b.log(slog.LevelDebug, f, a) }
func (b badgerLogger) Debugf(f string, a ...any)   { b.log(slog.LevelDebug, f, a) }

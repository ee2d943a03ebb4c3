package cp

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
)

// raftLogger is hashicorp/raft's hclog.Logger written over a *slog.Logger:
// each call becomes one slog record whose level comes from raft's level and
// whose key-value arguments become attributes, with no text in between.
//
// Level policy: raft's INFO and WARN are routine in a cluster that loses
// and regains nodes (elections, pipelines, a peer unreachable while it
// restarts), so they are slog Debug; raft's ERROR is worth a slog Warn, not
// an alarm. Raft's DEBUG and TRACE are dropped unless SetLevel asks for them.
// The raft level is kept as the raft_level attribute.
//
// Rate limit: raft repeats a line for as long as its cause lasts (one down
// peer made 1,228 lines in two minutes), so a line with the same logger
// name, message and peer/id/address/target attributes is written at most
// once per raftLogWindow; the next one written says how many were held back
// (suppressed=N). Every group of a node shares one limiter (Host), so a down
// peer that every group's leader fails to reach makes one line per window,
// not one per group.
type raftLogger struct {
	out     *raftLogOutput // shared by every logger derived from one root
	name    string
	implied []any // With's key-value pairs, keys unique
}

var _ hclog.Logger = (*raftLogger)(nil)

const (
	raftLogWindow = 10 * time.Second
	// raftLogKeep: a key not seen for this long is forgotten when the
	// table is pruned, suppressed count and all.
	raftLogKeep = 60 * raftLogWindow
	// raftLogPruneAt: the table is pruned when it grows past this many keys.
	raftLogPruneAt = 1024
)

// rateKeys are the attributes that tell one peer's (or snapshot's) line
// from another's.
var rateKeys = []string{"peer", "id", "address", "target"}

// raftLogOutput is the state the loggers derived from one root share, as
// hclog's derived loggers share their level.
type raftLogOutput struct {
	l     *slog.Logger
	level atomic.Int32 // hclog.Level
	lim   *raftLogLimiter
}

// raftLogLimiter is the rate limit's state; a Host shares one between the
// loggers of all its groups.
type raftLogLimiter struct {
	now func() time.Time
	mu  struct {
		sync.Mutex
		lines map[string]*lineWindow
	}
}

func newRaftLogLimiter(now func() time.Time) *raftLogLimiter {
	lim := &raftLogLimiter{now: now}
	lim.mu.lines = map[string]*lineWindow{}
	return lim
}

// lineWindow is one rate-limit key's current window.
type lineWindow struct {
	start      time.Time // when the last line of the key was written
	last       time.Time // when the key was last seen
	suppressed int       // lines held back since start
}

// newRaftLogger returns raft's logger over l, named "raft", at level Info;
// now is the clock of the rate limit.
func newRaftLogger(l *slog.Logger, now func() time.Time) *raftLogger {
	return newSharedRaftLogger(l, newRaftLogLimiter(now))
}

// newSharedRaftLogger is newRaftLogger with a rate limit shared with other
// loggers.
func newSharedRaftLogger(l *slog.Logger, lim *raftLogLimiter) *raftLogger {
	if l == nil {
		l = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	out := &raftLogOutput{l: l, lim: lim}
	out.level.Store(int32(hclog.Info))
	return &raftLogger{out: out, name: "raft"}
}

// slogLevel maps raft's level to ours (see raftLogger).
func slogLevel(l hclog.Level) slog.Level {
	switch {
	case l >= hclog.Error:
		return slog.LevelWarn
	case l <= hclog.Trace:
		return slog.LevelDebug - 4
	default:
		return slog.LevelDebug
	}
}

// enabled reports whether a line at level l would be written.
func (r *raftLogger) enabled(l hclog.Level) bool {
	if l == hclog.Off || l < hclog.Level(r.out.level.Load()) {
		return false
	}
	return r.out.l.Enabled(context.Background(), slogLevel(l))
}

func (r *raftLogger) Log(level hclog.Level, msg string, args ...any) {
	if level == hclog.NoLevel {
		level = hclog.Info // hclog's default level
	}
	if !r.enabled(level) {
		return
	}
	attrs := make([]slog.Attr, 0, 2+(len(r.implied)+len(args))/2+1)
	attrs = append(attrs, slog.String("logger", r.name), slog.String("raft_level", level.String()))
	attrs = appendArgs(attrs, r.implied)
	attrs = appendArgs(attrs, args)
	suppressed, ok := r.out.lim.admit(rateKey(r.name, msg, attrs))
	if !ok {
		return
	}
	if suppressed > 0 {
		attrs = append(attrs, slog.Int("suppressed", suppressed))
	}
	r.out.l.LogAttrs(context.Background(), slogLevel(level), msg, attrs...)
}

// admit reports whether a line with key may be written now and, if so, how
// many of its lines were held back before it.
func (o *raftLogLimiter) admit(key string) (suppressed int, ok bool) {
	now := o.now()
	o.mu.Lock()
	defer o.mu.Unlock()
	w := o.mu.lines[key]
	if w != nil && now.Sub(w.start) < raftLogWindow {
		w.suppressed++
		w.last = now
		return 0, false
	}
	if w != nil {
		suppressed = w.suppressed
	}
	o.mu.lines[key] = &lineWindow{start: now, last: now}
	if len(o.mu.lines) > raftLogPruneAt {
		o.pruneLocked(now)
	}
	return suppressed, true
}

// pruneLocked forgets keys whose window has passed with nothing held back
// (their next line is written as if new anyway), and keys silent for
// raftLogKeep, whose held-back count is dropped with them.
func (o *raftLogLimiter) pruneLocked(now time.Time) {
	for k, w := range o.mu.lines {
		if (w.suppressed == 0 && now.Sub(w.start) >= raftLogWindow) || now.Sub(w.last) >= raftLogKeep {
			delete(o.mu.lines, k)
		}
	}
}

// rateKey is a line's rate-limit key: logger name, message and the rateKeys
// attributes it has.
func rateKey(name, msg string, attrs []slog.Attr) string {
	var b strings.Builder
	b.WriteString(name)
	b.WriteByte(0)
	b.WriteString(msg)
	for _, k := range rateKeys {
		for _, a := range attrs {
			if a.Key == k {
				b.WriteByte(0)
				b.WriteString(k)
				b.WriteByte('=')
				b.WriteString(a.Value.String())
				break
			}
		}
	}
	return b.String()
}

// appendArgs converts hclog's alternating keys and values to attributes.
// A value without a key gets hclog's EXTRA_VALUE_AT_END key; a trailing
// captured stack trace becomes the stacktrace attribute.
func appendArgs(attrs []slog.Attr, args []any) []slog.Attr {
	pairs := len(args) &^ 1
	for i := 0; i < pairs; i += 2 {
		attrs = append(attrs, slog.Any(keyString(args[i]), attrValue(args[i+1])))
	}
	if pairs < len(args) {
		last := args[pairs]
		if st, ok := last.(hclog.CapturedStacktrace); ok {
			attrs = append(attrs, slog.String("stacktrace", string(st)))
		} else {
			attrs = append(attrs, slog.Any(hclog.MissingKey, attrValue(last)))
		}
	}
	return attrs
}

func keyString(k any) string {
	if s, ok := k.(string); ok {
		return s
	}
	return fmt.Sprint(k)
}

// attrValue renders hclog's formatting types as hclog would; other values
// are left to the slog handler.
func attrValue(v any) any {
	switch x := v.(type) {
	case hclog.Format:
		if len(x) > 0 {
			if f, ok := x[0].(string); ok {
				return fmt.Sprintf(f, x[1:]...)
			}
		}
		return fmt.Sprint(x...)
	case hclog.Hex:
		return "0x" + strconv.FormatUint(uint64(x), 16)
	case hclog.Octal:
		return "0" + strconv.FormatUint(uint64(x), 8)
	case hclog.Binary:
		return "0b" + strconv.FormatUint(uint64(x), 2)
	case hclog.Quote:
		return strconv.Quote(string(x))
	}
	return v
}

func (r *raftLogger) Trace(msg string, args ...any) { r.Log(hclog.Trace, msg, args...) }
func (r *raftLogger) Debug(msg string, args ...any) { r.Log(hclog.Debug, msg, args...) }
func (r *raftLogger) Info(msg string, args ...any)  { r.Log(hclog.Info, msg, args...) }
func (r *raftLogger) Warn(msg string, args ...any)  { r.Log(hclog.Warn, msg, args...) }
func (r *raftLogger) Error(msg string, args ...any) { r.Log(hclog.Error, msg, args...) }

func (r *raftLogger) IsTrace() bool { return r.enabled(hclog.Trace) }
func (r *raftLogger) IsDebug() bool { return r.enabled(hclog.Debug) }
func (r *raftLogger) IsInfo() bool  { return r.enabled(hclog.Info) }
func (r *raftLogger) IsWarn() bool  { return r.enabled(hclog.Warn) }
func (r *raftLogger) IsError() bool { return r.enabled(hclog.Error) }

// ImpliedArgs returns the key-value pairs With added.
func (r *raftLogger) ImpliedArgs() []any { return append([]any(nil), r.implied...) }

// With returns a logger that adds args to every line; a key given again
// replaces its value, as in hclog.
func (r *raftLogger) With(args ...any) hclog.Logger {
	implied := append([]any(nil), r.implied...)
	pairs := len(args) &^ 1
next:
	for i := 0; i < pairs; i += 2 {
		key := keyString(args[i])
		for j := 0; j < len(implied); j += 2 {
			if implied[j] == key {
				implied[j+1] = args[i+1]
				continue next
			}
		}
		implied = append(implied, key, args[i+1])
	}
	if pairs < len(args) {
		implied = append(implied, hclog.MissingKey, args[pairs])
	}
	return &raftLogger{out: r.out, name: r.name, implied: implied}
}

func (r *raftLogger) Name() string { return r.name }

// Named returns a logger for a part of raft: its name joins this one's.
func (r *raftLogger) Named(name string) hclog.Logger {
	if r.name != "" {
		name = r.name + "." + name
	}
	return r.ResetNamed(name)
}

func (r *raftLogger) ResetNamed(name string) hclog.Logger {
	return &raftLogger{out: r.out, name: name, implied: r.implied}
}

// SetLevel sets the level of this logger and of every one derived from the
// same root, as hclog does.
func (r *raftLogger) SetLevel(level hclog.Level) {
	if level == hclog.NoLevel {
		level = hclog.Info
	}
	r.out.level.Store(int32(level))
}

func (r *raftLogger) GetLevel() hclog.Level { return hclog.Level(r.out.level.Load()) }

func (r *raftLogger) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(r.StandardWriter(opts), "", 0)
}

// StandardWriter is for code that can only write text lines (a *log.Logger):
// each line becomes a record at opts.ForceLevel or, when opts.InferLevels
// asks for it, at the level its [LEVEL] prefix names (hclog's contract for
// such text), else at Info.
func (r *raftLogger) StandardWriter(opts *hclog.StandardLoggerOptions) io.Writer {
	if opts == nil {
		opts = &hclog.StandardLoggerOptions{}
	}
	return &stdLogWriter{l: r, opts: *opts}
}

type stdLogWriter struct {
	l    *raftLogger
	opts hclog.StandardLoggerOptions
}

func (w *stdLogWriter) Write(p []byte) (int, error) {
	line := strings.TrimRight(string(p), " \t\n")
	switch {
	case w.opts.ForceLevel != hclog.NoLevel:
		_, line = linePrefixLevel(line)
		w.l.Log(w.opts.ForceLevel, line)
	case w.opts.InferLevels:
		if w.opts.InferLevelsWithTimestamp {
			line = strings.TrimLeft(line, "0123456789 :/.+-TZ")
		}
		level, rest := linePrefixLevel(line)
		w.l.Log(level, rest)
	default:
		w.l.Log(hclog.Info, line)
	}
	return len(p), nil
}

// linePrefixLevel splits a standard-log line's [LEVEL] prefix off; a line
// without one is Info.
func linePrefixLevel(line string) (hclog.Level, string) {
	for _, p := range []struct {
		prefix string
		level  hclog.Level
	}{
		{"[TRACE]", hclog.Trace}, {"[DEBUG]", hclog.Debug}, {"[INFO]", hclog.Info},
		{"[WARN]", hclog.Warn}, {"[ERROR]", hclog.Error}, {"[ERR]", hclog.Error},
	} {
		if rest, ok := strings.CutPrefix(line, p.prefix); ok {
			return p.level, strings.TrimSpace(rest)
		}
	}
	return hclog.Info, line
}

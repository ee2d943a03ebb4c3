package jepsen

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sort"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/internal/dial"
)

// Kind is an operation type of a workload.
type Kind string

const (
	Read  Kind = "read"
	Write Kind = "write"
	CAS   Kind = "cas"
)

// Outcome is how an operation ended.
type Outcome string

const (
	// OK: the operation took effect (or, for a read, returned a value).
	OK Outcome = "ok"
	// Fail: it definitely did not take effect (refused, unavailable, or a CAS
	// whose expectation did not hold).
	Fail Outcome = "fail"
	// Unknown: it may or may not have taken effect.
	Unknown Outcome = "unknown"
)

// Op is one recorded operation.
type Op struct {
	Process  int      `json:"process"` // client stream; a new one after every Unknown
	Kind     Kind     `json:"kind"`
	Key      string   `json:"key"`
	Value    string   `json:"value,omitempty"`    // write/cas: the value written
	Expected string   `json:"expected,omitempty"` // cas: the value expected
	Read     string   `json:"read,omitempty"`     // read: the value returned
	Found    bool     `json:"found,omitempty"`    // read: whether the key existed
	Siblings []string `json:"siblings,omitempty"` // ap read: the other concurrent values returned
	Outcome  Outcome  `json:"outcome"`
	Conflict bool     `json:"conflict,omitempty"` // cas: failed because the expectation did not hold
	Call     int64    `json:"call_ns"`            // since the start of the run, monotonic
	Return   int64    `json:"return_ns"`
	Node     string   `json:"node,omitempty"`  // node the client sent it to
	Level    string   `json:"level,omitempty"` // consistency level it asked for
	Error    string   `json:"error,omitempty"`
}

// SetRead records what a successful Get returned: the value, and for an
// ap key the other concurrent values (siblings) next to it.
func (o *Op) SetRead(resp *api.GetResponse) {
	o.Read, o.Found = string(resp.GetKv().GetValue()), true
	for _, s := range resp.GetSiblings() {
		if v := string(s.GetValue()); v != o.Read {
			o.Siblings = append(o.Siblings, v)
		}
	}
}

func (o Op) String() string {
	switch o.Kind {
	case Read:
		v := o.Read
		if !o.Found {
			v = "<absent>"
		}
		return fmt.Sprintf("p%d read %s -> %s (%s)", o.Process, o.Key, v, o.Outcome)
	case Write:
		return fmt.Sprintf("p%d write %s=%s (%s)", o.Process, o.Key, o.Value, o.Outcome)
	default:
		return fmt.Sprintf("p%d cas %s %s->%s (%s)", o.Process, o.Key, o.Expected, o.Value, o.Outcome)
	}
}

// History records operations from concurrent clients. Times come from one
// monotonic clock started with the history.
type History struct {
	start time.Time
	mu    sync.Mutex
	ops   []Op
}

// NewHistory starts the clock.
func NewHistory() *History { return &History{start: time.Now()} }

// Now is the monotonic time since the start, in nanoseconds.
func (h *History) Now() int64 { return int64(time.Since(h.start)) }

// Start is when the history began.
func (h *History) Start() time.Time { return h.start }

// Add records a completed operation.
func (h *History) Add(o Op) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ops = append(h.ops, o)
}

// Ops returns the operations sorted by invocation time.
func (h *History) Ops() []Op {
	h.mu.Lock()
	out := append([]Op(nil), h.ops...)
	h.mu.Unlock()
	sort.SliceStable(out, func(i, j int) bool { return out[i].Call < out[j].Call })
	return out
}

// WriteJSONL writes one operation per line.
func (h *History) WriteJSONL(w io.Writer) error {
	enc := json.NewEncoder(w)
	for _, o := range h.Ops() {
		if err := enc.Encode(o); err != nil {
			return err
		}
	}
	return nil
}

// kvPool hands each operation a node: one of the fixed endpoints or, with
// live set, of the nodes live returns at that moment (the membership nemesis
// adds joined nodes and drops retired ones during a run). Connections are
// dialed on first use and kept.
type kvPool struct {
	static []string
	live   func() []string
	opts   []grpc.DialOption

	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

func newKVPool(static []string, live func() []string, opts []grpc.DialOption) *kvPool {
	return &kvPool{static: static, live: live, opts: opts, conns: map[string]*grpc.ClientConn{}}
}

// pick chooses a node with rng and returns its address and client.
func (p *kvPool) pick(rng *rand.Rand) (string, api.KVClient, error) {
	addrs := p.static
	if p.live != nil {
		if l := p.live(); len(l) > 0 {
			addrs = l
		}
	}
	if len(addrs) == 0 {
		return "", nil, errors.New("no node to send to")
	}
	addr := addrs[rng.IntN(len(addrs))]
	p.mu.Lock()
	defer p.mu.Unlock()
	cc, ok := p.conns[addr]
	if !ok {
		var err error
		if cc, err = dial.Conn(addr, p.opts...); err != nil {
			return "", nil, err
		}
		p.conns[addr] = cc
	}
	return addr, api.NewKVClient(cc), nil
}

func (p *kvPool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, cc := range p.conns {
		cc.Close()
	}
}

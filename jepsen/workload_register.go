package jepsen

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/consistency"
	"github.com/capkv/capkv/internal/kverrors"
)

// RegisterWorkload drives concurrent read/write/CAS clients against a small
// set of keys. Each operation goes to a randomly chosen node (which forwards
// it), so every node's read path is exercised, not only the leader's.
type RegisterWorkload struct {
	Endpoints []string // node addresses
	// Live, when set, lists the nodes to send to at each operation (the
	// membership nemesis changes them); Endpoints is the fallback.
	Live      func() []string
	Keys      []string      // keys in a cp keyspace
	Clients   int           // concurrent client streams
	Duration  time.Duration // how long to generate load
	OpTimeout time.Duration // deadline of one operation
	Seed      uint64
	// DialOptions reach the nodes (the cluster's DialOptions).
	DialOptions []grpc.DialOption // log it: the run is replayable in its choices
	// Ops bounds the total number of operations (0: no bound besides Duration).
	Ops int
	// Level is the consistency level of every operation ("" = keyspace default);
	// with several (comma-separated) each operation picks one at random, so
	// one run measures every level under the same load and faults.
	Level string
	// NoCAS leaves compare-and-set out (ap keyspaces do not offer it).
	NoCAS bool
}

// Run generates load until the duration, the op bound or ctx ends, and
// records every operation in h.
func (w RegisterWorkload) Run(ctx context.Context, h *History) error {
	if len(w.Endpoints) == 0 || len(w.Keys) == 0 || w.Clients <= 0 {
		return errors.New("register workload needs endpoints, keys and clients")
	}
	if w.OpTimeout <= 0 {
		w.OpTimeout = time.Second
	}
	pool := newKVPool(w.Endpoints, w.Live, w.DialOptions)
	defer pool.close()
	ctx, cancel := context.WithTimeout(ctx, w.Duration)
	defer cancel()
	var nextProcess atomic.Int64
	nextProcess.Store(int64(w.Clients))
	var budget atomic.Int64
	budget.Store(int64(w.Ops))
	var wg sync.WaitGroup
	for c := range w.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(w.Seed, uint64(c)))
			process := c
			last := map[string]string{} // last value this client saw per key
			// ap: the causal context of this client's last read of each key,
			// sent with its next write so that the write replaces what the
			// client read (as a Riak client does) instead of piling up one
			// sibling per blind write until the keyspace's cap refuses them.
			seen := map[string][]byte{}
			for seq := 0; ctx.Err() == nil; seq++ {
				if w.Ops > 0 && budget.Add(-1) < 0 {
					return
				}
				addr, kv, err := pool.pick(rng)
				if err != nil {
					return
				}
				key := w.Keys[rng.IntN(len(w.Keys))]
				op := Op{Process: process, Key: key, Node: addr, Level: w.pickLevel(rng)}
				x := rng.IntN(10)
				if w.NoCAS && x >= 8 {
					x = 5 // a write instead
				}
				switch {
				case x < 5:
					op.Kind = Read
				case x < 8:
					op.Kind, op.Value = Write, fmt.Sprintf("%d-%d", c, seq)
				default:
					op.Kind, op.Value, op.Expected = CAS, fmt.Sprintf("%d-%d", c, seq), last[key]
				}
				cx := w.do(ctx, kv, h, &op, seen[key])
				switch {
				case op.Kind == Read && op.Outcome == OK:
					last[key], seen[key] = op.Read, cx
				case op.Kind == Write && cx != nil:
					seen[key] = cx
				case op.Kind == Write:
					delete(seen, key) // a second write with it would sit beside the first
				}
				h.Add(op)
				if op.Outcome == Unknown {
					// One operation in flight per stream: a new stream after
					// an operation whose effect is unknown.
					process = int(nextProcess.Add(1))
				}
			}
		}()
	}
	wg.Wait()
	return nil
}

// do runs op, a write with the causal context causal; it returns the
// context the client has after it (nil when unknown).
func (w RegisterWorkload) do(ctx context.Context, c api.KVClient, h *History, op *Op, causal []byte) (readContext []byte) {
	octx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.OpTimeout)
	defer cancel()
	op.Call = h.Now()
	var err error
	switch op.Kind {
	case Read:
		var resp *api.GetResponse
		resp, err = c.Get(octx, &api.GetRequest{Key: op.Key, Header: header(op.Level)})
		if err == nil {
			op.SetRead(resp)
			readContext = resp.GetContext()
		}
	case Write:
		var resp *api.PutResponse
		resp, err = c.Put(octx, &api.PutRequest{Key: op.Key, Value: []byte(op.Value), Header: header(op.Level), Context: causal})
		if rc := resp.GetReceipt(); err == nil && rc.GetMode() == string(consistency.AP) && rc.GetSiblings() == 1 {
			// The write replaced everything else: the context and its dot
			// are exactly what this client has seen (see ExtendContext).
			readContext, _ = consistency.ExtendContext(causal, rc.GetServedBy(), resp.GetVersion())
		}
	case CAS:
		req := &api.CASRequest{Key: op.Key, Value: []byte(op.Value), Header: header(op.Level)}
		if op.Expected == "" {
			zero := uint64(0)
			req.ExpectedVersion = &zero
		} else {
			req.ExpectedValue = []byte(op.Expected)
		}
		_, err = c.CAS(octx, req)
	}
	op.Return = h.Now()
	op.Outcome = Classify(op, kverrors.FromStatus(err))
	return readContext
}

func (w RegisterWorkload) pickLevel(rng *rand.Rand) string {
	levels := strings.Split(w.Level, ",")
	return strings.TrimSpace(levels[rng.IntN(len(levels))])
}

func header(level string) *api.RequestHeader {
	if level == "" {
		return nil
	}
	return &api.RequestHeader{Consistency: level}
}

// Classify turns an operation's error into its outcome (setting op.Error,
// and op.Found or op.Conflict where the error says so): only errors that prove
// the operation had no effect are failures.
func Classify(op *Op, err error) Outcome {
	switch {
	case err == nil:
		return OK
	case op.Kind == Read && errors.Is(err, kverrors.ErrNotFound):
		op.Found = false
		return OK
	case op.Kind == CAS && errors.Is(err, kverrors.ErrConflict):
		op.Conflict, op.Error = true, err.Error()
		return Fail
	case errors.Is(err, kverrors.ErrUnavailable), errors.Is(err, kverrors.ErrInvalidArgument):
		op.Error = err.Error()
		return Fail
	default:
		op.Error = err.Error()
		return Unknown
	}
}

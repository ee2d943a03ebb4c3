package jepsen

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/client"
	"github.com/capkv/capkv/internal/kverrors"
)

// Add is the set workload's operation: insert one unique element.
const Add Kind = "add"

// SetWorkload: clients add unique elements (one key each, spread over
// Accounts partitions); after the final heal every element is read back.
type SetWorkload struct {
	Endpoints []string
	Live      func() []string // as RegisterWorkload.Live
	Prefix    string          // e.g. "accounts/eu/"; elements are PREFIX<account>/set/<client>-<seq>
	Accounts  int
	Clients   int
	Duration  time.Duration
	OpTimeout time.Duration
	Seed      uint64
	Level     string // consistency level of the adds ("" = keyspace default)
	// DialOptions reach the nodes (the cluster's DialOptions).
	DialOptions []grpc.DialOption
}

// Run adds elements until the duration ends, recording each attempt.
func (w SetWorkload) Run(ctx context.Context, h *History) error {
	if w.Accounts <= 0 {
		w.Accounts = 8
	}
	if w.OpTimeout <= 0 {
		w.OpTimeout = time.Second
	}
	pool := newKVPool(w.Endpoints, w.Live, w.DialOptions)
	defer pool.close()
	ctx, cancel := context.WithTimeout(ctx, w.Duration)
	defer cancel()
	var wg sync.WaitGroup
	for c := range w.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(w.Seed, uint64(c)+1000))
			for seq := 0; ctx.Err() == nil; seq++ {
				addr, kv, err := pool.pick(rng)
				if err != nil {
					return
				}
				key := fmt.Sprintf("%s%d/set/%d-%d", w.Prefix, rng.IntN(w.Accounts), c, seq)
				op := Op{Process: c, Kind: Add, Key: key, Node: addr}
				octx, ocancel := context.WithTimeout(context.WithoutCancel(ctx), w.OpTimeout)
				op.Call = h.Now()
				var hdr *api.RequestHeader
				if w.Level != "" {
					hdr = &api.RequestHeader{Consistency: w.Level}
				}
				_, err = kv.Put(octx, &api.PutRequest{Key: key, Value: []byte("1"), Header: hdr})
				op.Return = h.Now()
				ocancel()
				op.Outcome = Classify(&op, kverrors.FromStatus(err))
				h.Add(op)
			}
		}()
	}
	wg.Wait()
	return nil
}

// ReadSet reads every element under prefix with linearizable scans,
// retrying until deadline (the cluster may still be recovering).
func ReadSet(ctx context.Context, endpoints []string, prefix string, deadline time.Duration, opts ...grpc.DialOption) (map[string]bool, error) {
	ctx, cancel := context.WithTimeout(ctx, deadline)
	defer cancel()
	var last error
	for ctx.Err() == nil {
		c, err := client.New(ctx, client.Config{Endpoints: endpoints, DialOptions: opts})
		if err == nil {
			items, serr := c.Scan(ctx, prefix)
			c.Close()
			if serr == nil {
				out := make(map[string]bool, len(items))
				for _, it := range items {
					if strings.Contains(it.Key, "/set/") {
						out[it.Key] = true
					}
				}
				return out, nil
			}
			err = serr
		}
		last = err
		sleepCtx(ctx, 500*time.Millisecond)
	}
	return nil, fmt.Errorf("final read did not succeed within %s: %w", deadline, last)
}

// SetResult is the set checker's verdict.
type SetResult struct {
	Attempted        int      `json:"attempted"`
	Acknowledged     int      `json:"acknowledged"`
	Lost             []string `json:"lost"`               // acknowledged, missing at the end
	Unexpected       []string `json:"unexpected"`         // present, never attempted
	FailedButPresent []string `json:"failed_but_present"` // a definite failure that took effect
	Recovered        int      `json:"recovered"`          // unknown outcome, present
	UnknownAbsent    int      `json:"unknown_absent"`     // unknown outcome, absent (allowed)
}

// Valid reports whether no acknowledged element was lost and no failure
// took effect.
func (r SetResult) Valid() bool {
	return len(r.Lost) == 0 && len(r.Unexpected) == 0 && len(r.FailedButPresent) == 0
}

// CheckSet compares the adds with the final read.
func CheckSet(ops []Op, final map[string]bool) SetResult {
	var r SetResult
	attempted := map[string]bool{}
	for _, o := range ops {
		if o.Kind != Add {
			continue
		}
		r.Attempted++
		attempted[o.Key] = true
		switch o.Outcome {
		case OK:
			r.Acknowledged++
			if !final[o.Key] {
				r.Lost = append(r.Lost, o.Key)
			}
		case Fail:
			if final[o.Key] {
				r.FailedButPresent = append(r.FailedButPresent, o.Key)
			}
		case Unknown:
			if final[o.Key] {
				r.Recovered++
			} else {
				r.UnknownAbsent++
			}
		}
	}
	for k := range final {
		if !attempted[k] {
			r.Unexpected = append(r.Unexpected, k)
		}
	}
	sort.Strings(r.Lost)
	sort.Strings(r.Unexpected)
	sort.Strings(r.FailedButPresent)
	return r
}

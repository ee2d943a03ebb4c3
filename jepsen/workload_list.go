package jepsen

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/internal/dial"
	"github.com/capkv/capkv/internal/kverrors"
)

// ListWorkload appends unique elements to a few keys of an ap keyspace by
// read-modify-write: read the key (all siblings), add an element to their
// union, write it back with the read's causal context. With siblings no
// acknowledged element can be lost; with last-writer-wins, concurrent
// appends overwrite each other, and the run counts how many were lost.
type ListWorkload struct {
	Endpoints   []string
	Live        func() []string // as RegisterWorkload.Live
	Keys        []string
	Clients     int
	Duration    time.Duration
	OpTimeout   time.Duration
	Seed        uint64
	Level       string
	DialOptions []grpc.DialOption
}

// elements parses the union of all siblings' comma-separated elements.
func elements(resp *api.GetResponse) map[string]bool {
	out := map[string]bool{}
	vals := [][]byte{resp.GetKv().GetValue()}
	for _, s := range resp.GetSiblings() {
		vals = append(vals, s.GetValue())
	}
	for _, v := range vals {
		for _, e := range strings.Split(string(v), ",") {
			if e != "" {
				out[e] = true
			}
		}
	}
	return out
}

func join(set map[string]bool) string {
	var es []string
	for e := range set {
		es = append(es, e)
	}
	sort.Strings(es)
	return strings.Join(es, ",")
}

// Run appends until the duration ends; each append is one recorded Add op
// whose Value is the element and Key the list key.
func (w ListWorkload) Run(ctx context.Context, h *History) error {
	if w.OpTimeout <= 0 {
		w.OpTimeout = time.Second
	}
	pool := newKVPool(w.Endpoints, w.Live, w.DialOptions)
	defer pool.close()
	hdr := &api.RequestHeader{Consistency: w.Level}
	ctx, cancel := context.WithTimeout(ctx, w.Duration)
	defer cancel()
	var wg sync.WaitGroup
	for c := range w.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(w.Seed, uint64(c)+2000))
			for seq := 0; ctx.Err() == nil; seq++ {
				_, kv, err := pool.pick(rng)
				if err != nil {
					return
				}
				key := w.Keys[rng.IntN(len(w.Keys))]
				elem := fmt.Sprintf("%d-%d", c, seq)
				op := Op{Process: c, Kind: Add, Key: key, Value: elem}
				octx, ocancel := context.WithTimeout(context.WithoutCancel(ctx), w.OpTimeout)
				op.Call = h.Now()
				cur := map[string]bool{}
				var causal []byte
				resp, err := kv.Get(octx, &api.GetRequest{Key: key, Header: hdr})
				err = kverrors.FromStatus(err)
				switch {
				case err == nil:
					cur, causal = elements(resp), resp.GetContext()
				case errors.Is(err, kverrors.ErrNotFound):
					err = nil
				}
				if err == nil {
					cur[elem] = true
					_, err = kv.Put(octx, &api.PutRequest{Key: key, Value: []byte(join(cur)), Context: causal, Header: hdr})
					err = kverrors.FromStatus(err)
				} else {
					err = fmt.Errorf("%w: the read before the append failed: %v", kverrors.ErrUnavailable, err)
				}
				op.Return = h.Now()
				ocancel()
				op.Outcome = Classify(&op, err)
				h.Add(op)
			}
		}()
	}
	wg.Wait()
	return nil
}

// ReadLists reads the final elements of every list key at level all.
func ReadLists(ctx context.Context, endpoints []string, keys []string, opts ...grpc.DialOption) (map[string]bool, error) {
	cc, err := dial.Conn(endpoints[0], opts...)
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	kv := api.NewKVClient(cc)
	out := map[string]bool{}
	for _, k := range keys {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err := kv.Get(rctx, &api.GetRequest{Key: k, Header: &api.RequestHeader{Consistency: "all"}})
		cancel()
		if err = kverrors.FromStatus(err); errors.Is(err, kverrors.ErrNotFound) {
			continue
		} else if err != nil {
			return nil, fmt.Errorf("final read of %s: %w", k, err)
		}
		for e := range elements(resp) {
			out[e] = true
		}
	}
	return out, nil
}

// CheckList is CheckSet for list appends: elements are the ops' values.
func CheckList(ops []Op, final map[string]bool) SetResult {
	renamed := make([]Op, 0, len(ops))
	for _, o := range ops {
		o.Key = o.Value
		renamed = append(renamed, o)
	}
	return CheckSet(renamed, final)
}

// Command loadgen is an etcd load generator shaped like `kvctl bench`, so that
// bench/compare.sh can put etcd and capkv figures side by side.
//
// --clients goroutines, one request in flight each, share --conns
// clientv3.Client instances (each one gRPC connection). As in etcd's own
// tools/benchmark, connection i is pinned to endpoint i mod len(endpoints)
// unless --pin-endpoints=false, which gives every client all endpoints and
// lets clientv3 balance round-robin.
//
// Keys are the key number formatted with --key-format (default %08d: 8-byte
// keys over a 100k key space), chosen uniformly at random. Get workloads write
// every key once first (unless --preload=false). A get of a missing key counts as an answer, not an
// error, like kvctl bench. The output has the same columns and the same JSON
// shape (results[] with op, ops, errors, ops_per_sec, p50_ms, p99_ms, p999_ms,
// max_ms) as kvctl bench.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

type config struct {
	endpoints []string
	workload  string
	clients   int
	conns     int
	duration  time.Duration
	keys      int
	valueSize int
	keyFmt    string
	timeout   time.Duration
	seed      uint64
	pin       bool
	preload   bool
	json      bool
}

type stats struct {
	lat     []time.Duration
	errs    int
	example string
}

func main() {
	var c config
	var eps string
	flag.StringVar(&eps, "endpoints", "127.0.0.1:2379", "comma-separated etcd client addresses")
	flag.StringVar(&c.workload, "workload", "put", "put, get (linearizable) or get-serializable")
	flag.IntVar(&c.clients, "clients", 1, "concurrent clients (one request in flight each)")
	flag.IntVar(&c.conns, "conns", 0, "clientv3.Client instances shared by the clients (default min(clients, 8))")
	flag.DurationVar(&c.duration, "duration", 10*time.Second, "how long to run")
	flag.IntVar(&c.keys, "keys", 100000, "size of the key space")
	flag.IntVar(&c.valueSize, "value-size", 256, "value size in bytes")
	flag.StringVar(&c.keyFmt, "key-format", "%08d", "key name with one %d for the key number")
	flag.DurationVar(&c.timeout, "timeout", 5*time.Second, "deadline of each request")
	flag.Uint64Var(&c.seed, "seed", 0, "random seed (0: time-based; printed)")
	flag.BoolVar(&c.pin, "pin-endpoints", true, "pin connection i to endpoint i mod n (as etcd's tools/benchmark); false: every connection gets all endpoints")
	flag.BoolVar(&c.preload, "preload", true, "write every key once before a get run")
	flag.BoolVar(&c.json, "json", false, "print JSON (same shape as kvctl bench --json)")
	flag.Parse()
	for _, e := range strings.Split(eps, ",") {
		if e = strings.TrimSpace(e); e != "" {
			c.endpoints = append(c.endpoints, e)
		}
	}
	if err := run(c); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

func run(c config) error {
	switch {
	case c.workload != "put" && c.workload != "get" && c.workload != "get-serializable":
		return fmt.Errorf("--workload %q: want put, get or get-serializable", c.workload)
	case c.clients < 1 || c.keys < 1 || c.valueSize < 0 || c.duration <= 0:
		return fmt.Errorf("--clients, --keys and --duration must be positive, --value-size non-negative")
	case strings.Count(c.keyFmt, "%") != 1:
		return fmt.Errorf("--key-format %q: want exactly one verb for the key number", c.keyFmt)
	case len(c.endpoints) == 0:
		return fmt.Errorf("--endpoints is empty")
	}
	if c.conns <= 0 {
		c.conns = min(c.clients, 8)
	}
	if c.seed == 0 {
		c.seed = uint64(time.Now().UnixNano())
	}

	var conns []*clientv3.Client
	defer func() {
		for _, cl := range conns {
			cl.Close()
		}
	}()
	for i := range c.conns {
		eps := c.endpoints
		if c.pin {
			eps = []string{c.endpoints[i%len(c.endpoints)]}
		}
		cl, err := clientv3.New(clientv3.Config{
			Endpoints:   eps,
			DialTimeout: c.timeout,
			Logger:      zap.NewNop(),
		})
		if err != nil {
			return fmt.Errorf("connect %v: %w", eps, err)
		}
		conns = append(conns, cl)
	}
	// Fail fast when the cluster is not there: one request per connection.
	for _, cl := range conns {
		ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
		_, err := cl.Get(ctx, "loadgen-probe", clientv3.WithSerializable())
		cancel()
		if err != nil {
			return fmt.Errorf("probe %v: %w", cl.Endpoints(), err)
		}
	}

	b := make([]byte, c.valueSize)
	for i := range b {
		b[i] = 'a' + byte(i%26)
	}
	val := string(b)
	key := func(i uint64) string { return fmt.Sprintf(c.keyFmt, i) }
	fmt.Fprintf(os.Stderr, "loadgen: workload=%s clients=%d conns=%d duration=%s value=%dB keys=%d key-format=%s pin-endpoints=%t seed=%d endpoints=%s\n",
		c.workload, c.clients, c.conns, c.duration, c.valueSize, c.keys, c.keyFmt, c.pin, c.seed, strings.Join(c.endpoints, ","))

	if c.workload != "put" && c.preload {
		start := time.Now()
		var next atomic.Int64
		var wg sync.WaitGroup
		var firstErr atomic.Value
		for i := range c.clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cl := conns[i%len(conns)]
				for k := next.Add(1) - 1; k < int64(c.keys); k = next.Add(1) - 1 {
					ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
					_, err := cl.Put(ctx, key(uint64(k)), val)
					cancel()
					if err != nil {
						firstErr.CompareAndSwap(nil, err)
						return
					}
				}
			}()
		}
		wg.Wait()
		if err, _ := firstErr.Load().(error); err != nil {
			return fmt.Errorf("preload: %w", err)
		}
		fmt.Fprintf(os.Stderr, "loadgen: preloaded %d keys in %s\n", c.keys, time.Since(start).Round(time.Millisecond))
	}

	var getOpts []clientv3.OpOption
	if c.workload == "get-serializable" {
		getOpts = append(getOpts, clientv3.WithSerializable())
	}
	op := "put"
	if c.workload != "put" {
		op = "get"
	}

	ctx, cancel := context.WithTimeout(context.Background(), c.duration)
	defer cancel()
	per := make([]stats, c.clients)
	var done atomic.Int64
	var wg sync.WaitGroup
	began := time.Now()
	for i := range c.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var st stats
			rng := rand.New(rand.NewPCG(c.seed, uint64(i)))
			cl := conns[i%len(conns)]
			for ctx.Err() == nil {
				k := key(rng.Uint64N(uint64(c.keys)))
				octx, ocancel := context.WithTimeout(context.Background(), c.timeout)
				t0 := time.Now()
				var err error
				if op == "put" {
					_, err = cl.Put(octx, k, val)
				} else {
					_, err = cl.Get(octx, k, getOpts...)
				}
				d := time.Since(t0)
				ocancel()
				if err != nil {
					if ctx.Err() != nil {
						break // cut off by the end of the run, not a failure
					}
					st.errs++
					st.example = err.Error()
					continue
				}
				st.lat = append(st.lat, d)
				done.Add(1)
			}
			per[i] = st
		}()
	}
	stopProgress := make(chan struct{})
	var pwg sync.WaitGroup
	if c.duration >= 3*time.Second {
		pwg.Add(1)
		go func() {
			defer pwg.Done()
			t := time.NewTicker(time.Second)
			defer t.Stop()
			prev := int64(0)
			for {
				select {
				case <-stopProgress:
					return
				case <-t.C:
					n := done.Load()
					fmt.Fprintf(os.Stderr, "loadgen: %3.0fs %8d ops  %7d ops/s\n", time.Since(began).Seconds(), n, n-prev)
					prev = n
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(began)
	close(stopProgress)
	pwg.Wait()
	return report(c, op, per, elapsed)
}

func pct(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[int(p/100*float64(len(sorted)-1))]
}

type row struct {
	Op        string  `json:"op"`
	Ops       int     `json:"ops"`
	Errors    int     `json:"errors"`
	OpsPerSec float64 `json:"ops_per_sec"`
	P50Ms     float64 `json:"p50_ms"`
	P99Ms     float64 `json:"p99_ms"`
	P999Ms    float64 `json:"p999_ms"`
	MaxMs     float64 `json:"max_ms"`
	Example   string  `json:"example_error,omitempty"`
}

func report(c config, op string, per []stats, elapsed time.Duration) error {
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	var all []time.Duration
	r := row{Op: op}
	for _, st := range per {
		all = append(all, st.lat...)
		r.Errors += st.errs
		if st.example != "" {
			r.Example = st.example
		}
	}
	slices.Sort(all)
	r.Ops = len(all)
	r.OpsPerSec = float64(len(all)) / elapsed.Seconds()
	if len(all) > 0 {
		r.P50Ms, r.P99Ms, r.P999Ms, r.MaxMs = ms(pct(all, 50)), ms(pct(all, 99)), ms(pct(all, 99.9)), ms(all[len(all)-1])
	}
	if c.json {
		consistency := "linearizable"
		if c.workload == "get-serializable" {
			consistency = "serializable"
		}
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{"system": "etcd", "workload": c.workload, "dist": "uniform",
			"clients": c.clients, "conns": c.conns, "duration_s": elapsed.Seconds(), "value_size": c.valueSize,
			"keys": c.keys, "key_format": c.keyFmt, "consistency": consistency, "seed": c.seed,
			"pin_endpoints": c.pin, "endpoints": c.endpoints, "results": []row{r}})
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "op\tops\terrors\tops/s\tp50 ms\tp99 ms\tp99.9 ms\tmax ms\t\n")
	fmt.Fprintf(w, "%s\t%d\t%d\t%.0f\t%.2f\t%.2f\t%.2f\t%.2f\t\n", r.Op, r.Ops, r.Errors, r.OpsPerSec, r.P50Ms, r.P99Ms, r.P999Ms, r.MaxMs)
	if err := w.Flush(); err != nil {
		return err
	}
	if r.Example != "" {
		fmt.Fprintf(os.Stderr, "loadgen: %d %s errors, e.g. %s\n", r.Errors, r.Op, r.Example)
	}
	return nil
}

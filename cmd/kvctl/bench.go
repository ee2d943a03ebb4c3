package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/capkv/capkv/client"
	"github.com/capkv/capkv/consistency"
)

type benchFlags struct {
	workload  string
	dist      string
	clients   int
	conns     int
	duration  time.Duration
	valueSize int
	keys      int
	keyFmt    string
	seed      uint64
	preload   bool
}

func benchCmd(g *globals) *cobra.Command {
	var f benchFlags
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "load-test the cluster and print ops/s and latency percentiles",
		Long: `bench runs --clients concurrent clients (over --conns client connections) for
--duration against --keys keys named by --key-format, and prints throughput and
p50/p99/p99.9 latency per operation type.

Workloads: write (puts only), read (gets only, keys preloaded), mixed (50/50).
Key choice: uniform, or zipfian (a few hot keys). Use --consistency to compare
levels, and --key-format 'sessions/%d' to load the ap keyspace. --timeout is the
deadline of each request here, not of the whole run.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error { return runBench(g, f) },
	}
	cmd.Flags().StringVar(&f.workload, "workload", "write", "write, read or mixed")
	cmd.Flags().StringVar(&f.dist, "dist", "uniform", "key distribution: uniform or zipfian")
	cmd.Flags().IntVar(&f.clients, "clients", 1, "concurrent clients (one request in flight each)")
	cmd.Flags().IntVar(&f.conns, "conns", 0, "client connections shared by the clients (default min(clients, 8))")
	cmd.Flags().DurationVar(&f.duration, "duration", 10*time.Second, "how long to run")
	cmd.Flags().IntVar(&f.valueSize, "value-size", 256, "value size in bytes")
	cmd.Flags().IntVar(&f.keys, "keys", 10000, "size of the key space")
	cmd.Flags().StringVar(&f.keyFmt, "key-format", "accounts/eu/%d/bench", "key name with one %d for the key number")
	cmd.Flags().Uint64Var(&f.seed, "seed", 0, "random seed (0: time-based; printed)")
	cmd.Flags().BoolVar(&f.preload, "preload", true, "write every key once before a read or mixed run")
	return cmd
}

type benchStats struct {
	lat  map[string][]time.Duration
	errs map[string]int
	last map[string]string // one example error per op
	// maxSiblings: the most values an ap put's receipt reported for its
	// key (1 when every write superseded the ones it followed).
	maxSiblings int
}

func runBench(g *globals, f benchFlags) error {
	switch {
	case f.workload != "write" && f.workload != "read" && f.workload != "mixed":
		return usageError{fmt.Errorf("--workload %q: want write, read or mixed", f.workload)}
	case f.dist != "uniform" && f.dist != "zipfian":
		return usageError{fmt.Errorf("--dist %q: want uniform or zipfian", f.dist)}
	case f.clients < 1 || f.keys < 1 || f.valueSize < 0 || f.duration <= 0:
		return usageError{fmt.Errorf("--clients, --keys and --duration must be positive, --value-size non-negative")}
	case strings.Count(f.keyFmt, "%d") != 1:
		return usageError{fmt.Errorf("--key-format %q: want exactly one %%d", f.keyFmt)}
	}
	if f.conns <= 0 {
		f.conns = min(f.clients, 8)
	}
	if f.seed == 0 {
		f.seed = uint64(time.Now().UnixNano())
	}
	lvl, err := consistency.ParseLevel(g.consistency)
	if err != nil {
		return usageError{fmt.Errorf("--consistency: %w", err)}
	}
	opts := []client.Option{client.WithConsistency(lvl)}
	eps, err := g.endpointList()
	if err != nil {
		return err
	}
	var clients []*client.Client
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	tc, err := g.tlsConfig()
	if err != nil {
		return err
	}
	for range f.conns {
		ctx, cancel := context.WithTimeout(context.Background(), g.timeout)
		c, err := client.New(ctx, client.Config{Endpoints: eps, TLS: tc})
		cancel()
		if err != nil {
			return fmt.Errorf("connect: %w", err)
		}
		clients = append(clients, c)
	}
	val := make([]byte, f.valueSize)
	for i := range val {
		val[i] = 'a' + byte(i%26)
	}
	key := func(i uint64) string { return fmt.Sprintf(f.keyFmt, i) }
	fmt.Fprintf(g.errOut, "bench: workload=%s dist=%s clients=%d conns=%d duration=%s value=%dB keys=%d key-format=%s consistency=%s seed=%d\n",
		f.workload, f.dist, f.clients, f.conns, f.duration, f.valueSize, f.keys, f.keyFmt, orDefault(string(lvl)), f.seed)

	if f.workload != "write" && f.preload {
		start := time.Now()
		var next atomic.Int64
		var wg sync.WaitGroup
		var firstErr atomic.Value
		for c := range f.clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cl := clients[c%len(clients)]
				for i := next.Add(1) - 1; i < int64(f.keys); i = next.Add(1) - 1 {
					// A leader change under load can fail a write; retry it a
					// few times (a preload write is idempotent) before giving up.
					var err error
					for attempt := 0; attempt < 5; attempt++ {
						ctx, cancel := context.WithTimeout(context.Background(), g.timeout)
						_, err = cl.Put(ctx, key(uint64(i)), val)
						cancel()
						if err == nil {
							break
						}
						time.Sleep(100 * time.Millisecond)
					}
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
		fmt.Fprintf(g.errOut, "bench: preloaded %d keys in %s\n", f.keys, time.Since(start).Round(time.Millisecond))
	}

	ctx, cancel := context.WithTimeout(context.Background(), f.duration)
	defer cancel()
	per := make([]benchStats, f.clients)
	var done atomic.Int64
	var wg sync.WaitGroup
	began := time.Now()
	for c := range f.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := benchStats{lat: map[string][]time.Duration{}, errs: map[string]int{}, last: map[string]string{}}
			rng := rand.New(rand.NewPCG(f.seed, uint64(c)))
			var zipf *rand.Zipf
			if f.dist == "zipfian" {
				zipf = rand.NewZipf(rng, 1.1, 1, uint64(f.keys-1))
			}
			cl := clients[c%len(clients)]
			for ctx.Err() == nil {
				var k uint64
				if zipf != nil {
					k = zipf.Uint64()
				} else {
					k = rng.Uint64N(uint64(f.keys))
				}
				op := "put"
				if f.workload == "read" || f.workload == "mixed" && rng.IntN(2) == 0 {
					op = "get"
				}
				octx, ocancel := context.WithTimeout(context.Background(), g.timeout)
				t0 := time.Now()
				var err error
				if op == "put" {
					// Without a context the client writes with what it has
					// seen of the key, so a put supersedes the ones before it.
					var res *client.WriteResult
					if res, err = cl.Put(octx, key(k), val, opts...); err == nil {
						st.maxSiblings = max(st.maxSiblings, res.Receipt.Siblings)
					}
				} else {
					_, err = cl.Get(octx, key(k), opts...)
					if errors.Is(err, client.ErrNotFound) {
						err = nil // a miss is an answer
					}
				}
				d := time.Since(t0)
				ocancel()
				if err != nil {
					if ctx.Err() != nil {
						break // cut off by the end of the run, not a failure
					}
					st.errs[op]++
					st.last[op] = err.Error()
					continue
				}
				st.lat[op] = append(st.lat[op], d)
				done.Add(1)
			}
			per[c] = st
		}()
	}
	// Progress once a second on long runs.
	stopProgress := make(chan struct{})
	var pwg sync.WaitGroup
	if f.duration >= 3*time.Second {
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
					fmt.Fprintf(g.errOut, "bench: %3.0fs %8d ops  %7d ops/s\n", time.Since(began).Seconds(), n, n-prev)
					prev = n
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(began)
	close(stopProgress)
	pwg.Wait()
	return printBench(g, f, lvl, per, elapsed)
}

func orDefault(s string) string {
	if s == "" {
		return "default"
	}
	return s
}

func splitEndpoints(s string) []string {
	var eps []string
	for _, e := range strings.Split(s, ",") {
		if e = strings.TrimSpace(e); e != "" {
			eps = append(eps, e)
		}
	}
	return eps
}

func pct(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p / 100 * float64(len(sorted)-1))
	return sorted[i]
}

func printBench(g *globals, f benchFlags, lvl consistency.Level, per []benchStats, elapsed time.Duration) error {
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
	var rows []row
	maxSib := 0
	for _, st := range per {
		maxSib = max(maxSib, st.maxSiblings)
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	for _, op := range []string{"put", "get"} {
		var all []time.Duration
		errs, example := 0, ""
		for _, st := range per {
			all = append(all, st.lat[op]...)
			errs += st.errs[op]
			if st.last[op] != "" {
				example = st.last[op]
			}
		}
		if len(all) == 0 && errs == 0 {
			continue
		}
		slices.Sort(all)
		r := row{Op: op, Ops: len(all), Errors: errs, OpsPerSec: float64(len(all)) / elapsed.Seconds(), Example: example}
		if len(all) > 0 {
			r.P50Ms, r.P99Ms, r.P999Ms, r.MaxMs = ms(pct(all, 50)), ms(pct(all, 99)), ms(pct(all, 99.9)), ms(all[len(all)-1])
		}
		rows = append(rows, r)
	}
	if g.json {
		return g.printJSON(map[string]any{"workload": f.workload, "dist": f.dist, "clients": f.clients, "conns": f.conns,
			"duration_s": elapsed.Seconds(), "value_size": f.valueSize, "keys": f.keys, "key_format": f.keyFmt,
			"consistency": orDefault(string(lvl)), "seed": f.seed, "results": rows, "max_siblings": maxSib})
	}
	w := tabwriter.NewWriter(g.out, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "op\tops\terrors\tops/s\tp50 ms\tp99 ms\tp99.9 ms\tmax ms\t\n")
	for _, r := range rows {
		fmt.Fprintf(w, "%s\t%d\t%d\t%.0f\t%.2f\t%.2f\t%.2f\t%.2f\t\n", r.Op, r.Ops, r.Errors, r.OpsPerSec, r.P50Ms, r.P99Ms, r.P999Ms, r.MaxMs)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if maxSib > 0 {
		fmt.Fprintf(g.errOut, "bench: at most %d value(s) on a key after a put (ap siblings: concurrent writes)\n", maxSib)
	}
	for _, r := range rows {
		if r.Example != "" {
			fmt.Fprintf(g.errOut, "bench: %d %s errors, e.g. %s\n", r.Errors, r.Op, r.Example)
		}
	}
	// A run in which no operation succeeded is not a measurement: it fails
	// the command, so that scripts see it.
	ok, failed := 0, 0
	for _, r := range rows {
		ok, failed = ok+r.Ops, failed+r.Errors
	}
	if ok == 0 {
		return fmt.Errorf("%w: every operation failed (%d errors, none succeeded)", errBenchFailed, failed)
	}
	return nil
}

var errBenchFailed = errors.New("bench failed")

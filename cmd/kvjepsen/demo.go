package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/spf13/cobra"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/client"
	"github.com/capkv/capkv/internal/dial"
	"github.com/capkv/capkv/internal/kverrors"
	"github.com/capkv/capkv/jepsen"
)

type demoFlags struct {
	backend, out, kvd     string
	before, split, after  time.Duration
	nodes, clientsPerNode int
}

func demoCmd(code *int) *cobra.Command {
	var f demoFlags
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "the CAP demonstration: one partition, a cp and an ap keyspace side by side",
		Long: `demo starts a 5-node cluster in two regions (eu: 3 nodes, us: 2) and runs the
same client load (read a key, then write it) against the cp keyspace (accounts,
linearizable) and the ap keyspace (sessions, level one) from clients on both
sides. It splits the cluster 3|2 along the regions and prints, every second,
how many requests each side served for each keyspace: cp serves on the
majority and refuses on the minority, ap serves on both. After the heal it
shows the ap conflicts (siblings) the split caused, how long the replicas took
to converge, and the verdicts: the cp history checked with porcupine, the
minority's refusals, ap availability and convergence, and the ap stale reads
counted. Into --out it writes demo.html (throughput and availability plots per
keyspace and side, the split shaded), demo.json, history.jsonl and
linearizability.html. Exit status: 0 when every promise held, 1 when one was
broken, 2 when the demo could not run.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			valid, err := runDemo(cmd.Context(), f)
			if err != nil {
				*code = 2
				return err
			}
			if !valid {
				*code = 1
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.backend, "backend", defaultBackend(), "netns or process")
	fl.StringVar(&f.out, "out", "", "output directory (default out/demo-<time>)")
	fl.StringVar(&f.kvd, "kvd", "", "kvd binary (default: next to kvjepsen, then PATH)")
	fl.DurationVar(&f.before, "before", 5*time.Second, "healthy time before the split")
	fl.DurationVar(&f.split, "split", 12*time.Second, "how long the cluster stays split 3|2")
	fl.DurationVar(&f.after, "after", 5*time.Second, "healed time after the split")
	fl.IntVar(&f.nodes, "nodes", 5, "cluster size (split into a majority and a minority)")
	fl.IntVar(&f.clientsPerNode, "clients", 2, "clients per node and keyspace")
	return cmd
}

// demoSecond counts one second of the demo.
type demoSecond struct {
	T            int
	Phase        string
	CPMaj, CPMin [2]int // ok, failed
	APMaj, APMin [2]int
}

func runDemo(ctx context.Context, f demoFlags) (bool, error) {
	kvd, err := findKVD(f.kvd)
	if err != nil {
		return false, err
	}
	if f.nodes < 3 {
		return false, errors.New("--nodes: at least 3")
	}
	if f.out == "" {
		f.out = filepath.Join("out", "demo-"+time.Now().Format("20060102-150405"))
	}
	if err := os.MkdirAll(f.out, 0o755); err != nil {
		return false, err
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Printf("capkv CAP demo: %d nodes (%s backend), output in %s\n", f.nodes, f.backend, f.out)
	os.RemoveAll(filepath.Join(f.out, "cluster"))
	// Two regions: the larger holds the accounts (cp, pinned to their region),
	// the split runs along the region boundary, sessions (ap) span both.
	regions := make([]string, f.nodes)
	for i := range regions {
		regions[i] = "eu"
		if i >= f.nodes-f.nodes/2 {
			regions[i] = "us"
		}
	}
	fmt.Printf("regions: %v\n", regions)
	cl, err := jepsen.StartProcessCluster(ctx, jepsen.ProcessConfig{KVD: kvd, Nodes: f.nodes, Dir: filepath.Join(f.out, "cluster"), Backend: f.backend, Regions: regions})
	if err != nil {
		return false, err
	}
	defer cl.Close()
	opts := cl.DialOptions()
	var eps []string
	for _, n := range cl.Nodes() {
		eps = append(eps, n.Addr)
	}
	if err := warmUp(ctx, eps, opts); err != nil {
		return false, err
	}
	nodes := cl.Nodes()
	minority := map[string]bool{}
	for _, n := range nodes[len(nodes)-len(nodes)/2:] {
		minority[n.ID] = true
	}
	var maj, min []string
	for _, n := range nodes {
		if minority[n.ID] {
			min = append(min, n.ID)
		} else {
			maj = append(maj, n.ID)
		}
	}

	// Keys the split makes interesting: cp keys whose replicas are mostly on
	// the majority side (so the majority serves them and the minority is cut
	// off), ap keys with replicas on both sides (so both sides write them).
	pc, err := client.New(ctx, client.Config{Endpoints: eps, DialOptions: opts})
	if err != nil {
		return false, err
	}
	defer pc.Close()
	count := func(reps []string, side map[string]bool) int {
		n := 0
		for _, r := range reps {
			if side[r] {
				n++
			}
		}
		return n
	}
	var cpKeys, apKeys []string
	for i := 0; i < 500 && (len(cpKeys) < 10 || len(apKeys) < 10); i++ {
		if k := fmt.Sprintf("accounts/eu/%d/demo", i); len(cpKeys) < 10 {
			if p, err := pc.Locate(k); err == nil && count(p.Replicas, minority) <= len(p.Replicas)/2 {
				cpKeys = append(cpKeys, k)
			}
		}
		if k := fmt.Sprintf("sessions/demo%d", i); len(apKeys) < 10 {
			if p, err := pc.Locate(k); err == nil && count(p.Replicas, minority) > 0 && count(p.Replicas, minority) < len(p.Replicas) {
				apKeys = append(apKeys, k)
			}
		}
	}
	if len(cpKeys) == 0 || len(apKeys) == 0 {
		return false, errors.New("no keys with the placement the demo needs; try another --nodes")
	}

	h := jepsen.NewHistory()
	total := f.before + f.split + f.after
	secs := make([]demoSecond, int(total/time.Second)+2)
	var mu sync.Mutex
	record := func(cp, minSide bool, o jepsen.Op) {
		h.Add(o)
		s := int(o.Return / int64(time.Second))
		mu.Lock()
		defer mu.Unlock()
		if s >= len(secs) {
			return
		}
		c := &secs[s].APMaj
		switch {
		case cp && minSide:
			c = &secs[s].CPMin
		case cp:
			c = &secs[s].CPMaj
		case minSide:
			c = &secs[s].APMin
		}
		if o.Outcome == jepsen.OK {
			c[0]++
		} else {
			c[1]++
		}
	}
	lctx, lcancel := context.WithTimeout(ctx, total)
	defer lcancel()
	var wg sync.WaitGroup
	var nextProcess atomic.Int64
	for i, n := range nodes {
		cc, err := dial.Conn(n.Addr, opts...)
		if err != nil {
			return false, err
		}
		defer cc.Close()
		kv := api.NewKVClient(cc)
		for c := range f.clientsPerNode {
			for _, cp := range []bool{true, false} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					demoClient(lctx, h, kv, n, cp, cpKeys, apKeys, i*7+c, &nextProcess,
						func(o jepsen.Op) { record(cp, minority[n.ID], o) })
				}()
			}
		}
	}
	phase := func(t time.Duration) string {
		switch {
		case t < f.before:
			return "healthy"
		case t < f.before+f.split:
			return "split"
		}
		return "healed"
	}
	fmt.Printf("\nrequests served per second (reads and writes; cp linearizable, ap at level one):\n")
	fmt.Printf("%4s  %-8s  %-29s  %-17s\n", "t", "phase", "cp (accounts) maj|min", "ap (sessions) maj|min")
	start := time.Now()
	split := false
	for t := time.Second; t <= total; t += time.Second {
		select {
		case <-ctx.Done():
			return false, errors.New("interrupted")
		case <-time.After(time.Until(start.Add(t))):
		}
		mu.Lock()
		s := secs[int(t/time.Second)-1]
		mu.Unlock()
		fmt.Printf("%3ds  %-8s  %5d ok|%5d ok %4d refused  %5d ok|%5d ok\n", int(t/time.Second), phase(t-time.Second),
			s.CPMaj[0], s.CPMin[0], s.CPMin[1], s.APMaj[0], s.APMin[0])
		// The row above is the second that just ended; the split covers
		// [before, before+split) exactly, as the report's shading does.
		if !split && t >= f.before && t < f.before+f.split {
			if err := cl.Cut(ctx, cutBetween(maj, min)); err != nil {
				return false, err
			}
			split = true
			fmt.Printf("---- split: %v | %v ----\n", maj, min)
		}
		if split && t >= f.before+f.split {
			if err := cl.Cut(ctx, nil); err != nil {
				return false, err
			}
			split = false
			fmt.Println("---- healed ----")
		}
	}
	wg.Wait()
	cl.Cut(context.Background(), nil)

	// After the heal: the ap conflicts the split created, and convergence.
	fmt.Println("\nafter the heal:")
	c, err := client.New(ctx, client.Config{Endpoints: eps, DialOptions: opts})
	if err != nil {
		return false, err
	}
	defer c.Close()
	v := demoVerdicts{Nodes: f.nodes, Majority: maj, Minority: min, SplitSeconds: f.split.Seconds()}
	example := ""
	for _, key := range apKeys {
		it, err := c.Get(ctx, key, client.WithConsistency("all"))
		if err == nil && len(it.Siblings) > 1 {
			v.APConflicts++
			if example == "" {
				var vals []string
				for _, s := range it.Siblings {
					vals = append(vals, string(s.Value))
				}
				sort.Strings(vals)
				if len(vals) > 4 {
					vals = append(vals[:4], "...")
				}
				example = fmt.Sprintf("%s has %d siblings %v", it.Key, len(it.Siblings), vals)
				// Resolve it as an application would: write with the context.
				if _, err := c.Put(ctx, it.Key, []byte("resolved"), client.WithContext(it.Context), client.WithConsistency("all")); err == nil {
					after, _ := c.Get(ctx, it.Key, client.WithConsistency("all"))
					if after != nil {
						example += fmt.Sprintf("; after a write with the read's context: %d value (%q)", len(after.Siblings), after.Value)
					}
				}
			}
		}
	}
	v.APKeys = len(apKeys)
	fmt.Printf("  ap conflicts: %d of %d session keys kept concurrent writes from both sides as siblings\n", v.APConflicts, len(apKeys))
	if example != "" {
		fmt.Printf("  e.g. %s\n", example)
	}
	cv, err := jepsen.Converge(ctx, eps, opts, "sessions", 60*time.Second)
	if err != nil {
		fmt.Printf("  ap convergence check failed: %v\n", err)
	} else {
		v.APConverged, v.ConvergeSeconds = cv.Converged, cv.Seconds
		fmt.Printf("  ap convergence: replicas of %d partitions identical after %.1fs (%d keys compared)\n", cv.Partitions, cv.Seconds, cv.KeysCompared)
	}

	// The split is in force from f.before; requests that were in flight when
	// it began may still complete, so the minority's count starts 2 s later.
	for i, s := range secs {
		if t := time.Duration(i) * time.Second; t >= f.before+2*time.Second && t < f.before+f.split {
			v.CPMinorityServed += s.CPMin[0]
			v.APMinorityServed += s.APMin[0]
		}
	}
	var cpOps, apOps []jepsen.Op
	for _, o := range h.Ops() {
		if strings.HasPrefix(o.Key, "accounts/") {
			cpOps = append(cpOps, o)
		} else {
			apOps = append(apOps, o)
		}
	}
	fmt.Printf("  checking the cp history (%d operations) with porcupine ...\n", len(cpOps))
	rr := jepsen.CheckRegister(cpOps, 2*time.Minute)
	v.CPChecked, v.CPPorcupine, v.CPLinearizable = rr.Checked, string(rr.Result), rr.Linearizable()
	all := jepsen.StaleReads(apOps)
	v.APReads, v.APStale = all.Reads, all.Stale
	var during []jepsen.Op
	for _, o := range apOps {
		if o.Kind != jepsen.Read || (o.Call >= int64(f.before) && o.Call < int64(f.before+f.split)) {
			during = append(during, o)
		}
	}
	ds := jepsen.StaleReads(during)
	v.APSplitReads, v.APSplitStale = ds.Reads, ds.Stale
	v.Valid = v.CPLinearizable && v.CPMinorityServed == 0 && v.APMinorityServed > 0 && v.APConverged
	v.print(os.Stdout)

	if err := writeDemoReports(f, h, rr, secs, v); err != nil {
		return v.Valid, err
	}
	fmt.Printf("\nreport: %s (cp history: linearizability.html, every operation: history.jsonl)\n", filepath.Join(f.out, "demo.html"))
	return v.Valid, nil
}

// demoClient runs one client's loop until ctx ends: read a key, then write a
// new unique value to it (ap writes carry the read's context, as an
// application updating what it read would, so siblings come only from writes
// the split kept apart).
func demoClient(ctx context.Context, h *jepsen.History, kv api.KVClient, n jepsen.NodeInfo, cp bool,
	cpKeys, apKeys []string, offset int, nextProcess *atomic.Int64, record func(jepsen.Op)) {
	keys, level := apKeys, "one"
	if cp {
		keys, level = cpKeys, ""
	}
	var hdr *api.RequestHeader
	if level != "" {
		hdr = &api.RequestHeader{Consistency: level}
	}
	process := int(nextProcess.Add(1))
	for seq := 0; ctx.Err() == nil; seq++ {
		key := keys[(offset+seq)%len(keys)]
		var causal []byte
		for _, kind := range []jepsen.Kind{jepsen.Read, jepsen.Write} {
			o := jepsen.Op{Process: process, Kind: kind, Key: key, Node: n.Addr, Level: level}
			octx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			o.Call = h.Now()
			var err error
			if kind == jepsen.Read {
				var r *api.GetResponse
				if r, err = kv.Get(octx, &api.GetRequest{Key: key, Header: hdr}); err == nil {
					o.SetRead(r)
					causal = r.GetContext()
				}
			} else {
				o.Value = fmt.Sprintf("%s-%d-%d", n.ID, offset, seq)
				_, err = kv.Put(octx, &api.PutRequest{Key: key, Value: []byte(o.Value), Header: hdr, Context: causal})
			}
			o.Return = h.Now()
			cancel()
			o.Outcome = jepsen.Classify(&o, kverrors.FromStatus(err))
			if ctx.Err() != nil && o.Outcome != jepsen.OK {
				return // cut short by the end of the run, not by the cluster
			}
			record(o)
			switch o.Outcome {
			case jepsen.Unknown:
				// One operation in flight per process: a new one after an
				// operation whose effect is unknown.
				process = int(nextProcess.Add(1))
			case jepsen.Fail:
				time.Sleep(20 * time.Millisecond) // a refusal is fast; do not spin
			}
			if o.Outcome != jepsen.OK {
				break
			}
		}
	}
}

// demoVerdicts is what the demo found; it is also written as demo.json.
type demoVerdicts struct {
	Nodes            int      `json:"nodes"`
	Majority         []string `json:"majority"`
	Minority         []string `json:"minority"`
	SplitSeconds     float64  `json:"split_seconds"`
	CPMinorityServed int      `json:"cp_minority_served_during_split"`
	APMinorityServed int      `json:"ap_minority_served_during_split"`
	CPChecked        int      `json:"cp_operations_checked"`
	CPPorcupine      string   `json:"cp_porcupine"`
	CPLinearizable   bool     `json:"cp_linearizable"`
	APKeys           int      `json:"ap_keys"`
	APConflicts      int      `json:"ap_keys_with_siblings"`
	APConverged      bool     `json:"ap_converged"`
	ConvergeSeconds  float64  `json:"ap_converge_seconds"`
	APReads          int      `json:"ap_reads"`
	APStale          int      `json:"ap_stale_reads"`
	APSplitReads     int      `json:"ap_reads_during_split"`
	APSplitStale     int      `json:"ap_stale_reads_during_split"`
	Valid            bool     `json:"valid"`
}

func pct(n, of int) float64 {
	if of == 0 {
		return 0
	}
	return 100 * float64(n) / float64(of)
}

func (v demoVerdicts) print(w io.Writer) {
	mark := func(ok bool) string {
		if ok {
			return "ok  "
		}
		return "FAIL"
	}
	fmt.Fprintln(w, "\nverdicts:")
	fmt.Fprintf(w, "  %s cp linearizable: porcupine says %s over %d operations\n", mark(v.CPLinearizable), v.CPPorcupine, v.CPChecked)
	fmt.Fprintf(w, "  %s cp minority refused: it served %d requests during the split (promise: none, it holds no majority of these keys' replicas)\n", mark(v.CPMinorityServed == 0), v.CPMinorityServed)
	fmt.Fprintf(w, "  %s ap minority available: it served %d requests during the split (promise: keeps serving)\n", mark(v.APMinorityServed > 0), v.APMinorityServed)
	fmt.Fprintf(w, "  %s ap converged: replicas identical %.1fs after the heal\n", mark(v.APConverged), v.ConvergeSeconds)
	fmt.Fprintf(w, "  info ap stale reads (the price of availability, counted, not a failure): %d of %d reads at level one (%.1f%%); during the split %d of %d (%.1f%%)\n",
		v.APStale, v.APReads, pct(v.APStale, v.APReads), v.APSplitStale, v.APSplitReads, pct(v.APSplitStale, v.APSplitReads))
}

func cutBetween(a, b []string) []jepsen.Link {
	var out []jepsen.Link
	for _, x := range a {
		for _, y := range b {
			out = append(out, jepsen.Link{From: x, To: y}, jepsen.Link{From: y, To: x})
		}
	}
	return out
}

var demoTmpl = template.Must(template.New("d").Parse(`<!doctype html><html><head><meta charset="utf-8"><title>capkv CAP demo</title>
<style>body{font-family:sans-serif;margin:2em;max-width:60em}td,th{padding:1px 8px;font-size:13px;text-align:right}
.split{background:#fde2e2}.ok{color:#282}.fail{color:#c22;font-weight:bold}</style></head><body>
<h1>capkv CAP demo: {{if .V.Valid}}every promise held{{else}}A PROMISE WAS BROKEN{{end}}</h1>
<p>{{.V.Nodes}} nodes split into majority {{.Maj}} and minority {{.Min}} for {{.Split}}. The same client load
(read a key, then write it) runs against <b>accounts</b> (cp, one Raft group per partition, linearizable reads) and
<b>sessions</b> (ap, leaderless, level one) from clients on both sides. The shaded band is the split.</p>
{{.Throughput}}
{{.Availability}}
<h2>Verdicts</h2><ul>
<li class="{{if .V.CPLinearizable}}ok{{else}}fail{{end}}">cp linearizable: porcupine {{.V.CPPorcupine}} over {{.V.CPChecked}} operations (see <a href="linearizability.html">linearizability.html</a>)</li>
<li class="{{if eq .V.CPMinorityServed 0}}ok{{else}}fail{{end}}">cp minority served {{.V.CPMinorityServed}} requests during the split (promise: none)</li>
<li class="{{if gt .V.APMinorityServed 0}}ok{{else}}fail{{end}}">ap minority served {{.V.APMinorityServed}} requests during the split (promise: keeps serving)</li>
<li class="{{if .V.APConverged}}ok{{else}}fail{{end}}">ap replicas converged {{printf "%.1f" .V.ConvergeSeconds}}s after the heal;
{{.V.APConflicts}} of {{.V.APKeys}} session keys held concurrent writes from both sides as siblings</li>
<li>ap stale reads (the trade-off, counted): {{.V.APStale}} of {{.V.APReads}} reads ({{printf "%.1f" .StalePct}}%);
during the split {{.V.APSplitStale}} of {{.V.APSplitReads}} ({{printf "%.1f" .SplitStalePct}}%)</li></ul>
<h2>Per second</h2>
<table><tr><th>s</th><th>phase</th><th>cp majority ok</th><th>cp minority ok</th><th>cp minority refused</th><th>ap majority ok</th><th>ap minority ok</th></tr>
{{range .Rows}}<tr{{if eq .Phase "split"}} class="split"{{end}}><td>{{.T}}</td><td>{{.Phase}}</td>
<td>{{index .CPMaj 0}}</td><td>{{index .CPMin 0}}</td><td>{{index .CPMin 1}}</td><td>{{index .APMaj 0}}</td><td>{{index .APMin 0}}</td></tr>
{{end}}</table></body></html>`))

// writeDemoReports writes demo.html (plots, verdicts, per-second table),
// demo.json, history.jsonl and porcupine's view of the cp history.
func writeDemoReports(f demoFlags, h *jepsen.History, rr jepsen.RegisterResult, secs []demoSecond, v demoVerdicts) error {
	var rows []demoSecond
	splitFrom, splitTo := f.before.Seconds(), (f.before + f.split).Seconds()
	for i, s := range secs {
		t := time.Duration(i) * time.Second
		if t >= f.before+f.split+f.after {
			break
		}
		s.T = i
		switch {
		case t < f.before:
			s.Phase = "healthy"
		case t < f.before+f.split:
			s.Phase = "split"
		default:
			s.Phase = "healed"
		}
		rows = append(rows, s)
	}
	// Lines: green for cp, blue for ap; solid for the majority side, dashed
	// for the minority.
	series := []jepsen.Series{
		{Name: "cp majority", Color: "#1a9850"}, {Name: "cp minority", Color: "#1a9850", Dashed: true},
		{Name: "ap majority", Color: "#2166ac"}, {Name: "ap minority", Color: "#2166ac", Dashed: true},
	}
	avail := make([]jepsen.Series, len(series))
	copy(avail, series)
	for i := range avail {
		avail[i].Values = nil
	}
	for _, s := range rows {
		for i, c := range [][2]int{s.CPMaj, s.CPMin, s.APMaj, s.APMin} {
			series[i].Values = append(series[i].Values, float64(c[0]))
			a := math.NaN() // no requests: no availability to show
			if c[0]+c[1] > 0 {
				a = 100 * float64(c[0]) / float64(c[0]+c[1])
			}
			avail[i].Values = append(avail[i].Values, a)
		}
	}
	shade := []jepsen.Span{{From: splitFrom, To: splitTo, Label: "split"}}
	tp := jepsen.Chart{Title: "throughput: requests served per second", YLabel: "ok/s", Series: series, Shade: shade}
	av := jepsen.Chart{Title: "availability: share of requests served", YLabel: "% ok", YMax: 100, Series: avail, Shade: shade}

	out, err := os.Create(filepath.Join(f.out, "demo.html"))
	if err != nil {
		return err
	}
	err = demoTmpl.Execute(out, map[string]any{"V": v, "Maj": strings.Join(v.Majority, ","), "Min": strings.Join(v.Minority, ","),
		"Split": f.split, "Rows": rows, "Throughput": tp.SVG(), "Availability": av.SVG(),
		"StalePct": pct(v.APStale, v.APReads), "SplitStalePct": pct(v.APSplitStale, v.APSplitReads)})
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(f.out, "demo.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	hf, err := os.Create(filepath.Join(f.out, "history.jsonl"))
	if err != nil {
		return err
	}
	err = h.WriteJSONL(hf)
	if cerr := hf.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return porcupine.VisualizePath(jepsen.RegisterModel(), rr.Info, filepath.Join(f.out, "linearizability.html"))
}

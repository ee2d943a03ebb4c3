package main

import (
	"context"
	"errors"
	"fmt"
	"html/template"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

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
same client load against the cp
keyspace (accounts) and the ap keyspace (sessions, level one). It splits the
cluster 3|2 along the regions and prints, every second, how many requests each side served for
each keyspace: cp serves on the majority and refuses on the minority, ap serves
on both. After the heal it shows the ap conflicts (siblings) the split caused,
how long the replicas took to converge, and the verdicts. It writes an HTML
report with the per-second availability into --out.`,
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
	record := func(cp, minSide, ok bool) {
		s := int(h.Now() / int64(time.Second))
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
		if ok {
			c[0]++
		} else {
			c[1]++
		}
	}
	lctx, lcancel := context.WithTimeout(ctx, total)
	defer lcancel()
	var wg sync.WaitGroup
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
					for seq := 0; lctx.Err() == nil; seq++ {
						key := apKeys[(i*7+c+seq)%len(apKeys)]
						hdr := &api.RequestHeader{Consistency: "one"}
						if cp {
							key, hdr = cpKeys[(i*7+c+seq)%len(cpKeys)], nil
						}
						octx, cancel := context.WithTimeout(context.WithoutCancel(lctx), time.Second)
						var causal []byte
						if !cp {
							// An application updates what it read: siblings then
							// come only from writes the split kept apart.
							if r, err := kv.Get(octx, &api.GetRequest{Key: key, Header: hdr}); err == nil {
								causal = r.GetContext()
							}
						}
						_, err := kv.Put(octx, &api.PutRequest{Key: key, Value: []byte(fmt.Sprintf("%s-%d-%d", n.ID, c, seq)), Header: hdr, Context: causal})
						cancel()
						if lctx.Err() != nil {
							return
						}
						record(cp, minority[n.ID], err == nil)
						if err != nil && !errors.Is(kverrors.FromStatus(err), kverrors.ErrIndeterminate) {
							time.Sleep(20 * time.Millisecond) // a refusal is fast; do not spin
						}
					}
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
	fmt.Printf("\n%4s  %-8s  %-22s  %-22s\n", "t", "phase", "cp (accounts) maj|min", "ap (sessions) maj|min")
	start := time.Now()
	split := false
	for t := time.Second; t <= total; t += time.Second {
		select {
		case <-ctx.Done():
			return false, errors.New("interrupted")
		case <-time.After(time.Until(start.Add(t))):
		}
		if !split && t > f.before && t <= f.before+f.split {
			if err := cl.Cut(ctx, cutBetween(maj, min)); err != nil {
				return false, err
			}
			split = true
			fmt.Printf("---- split: %v | %v ----\n", maj, min)
		}
		if split && t > f.before+f.split {
			if err := cl.Cut(ctx, nil); err != nil {
				return false, err
			}
			split = false
			fmt.Println("---- healed ----")
		}
		mu.Lock()
		s := secs[int(t/time.Second)-1]
		mu.Unlock()
		fmt.Printf("%3ds  %-8s  %5d ok|%5d ok %4d refused  %5d ok|%5d ok\n", int(t/time.Second), phase(t-time.Second),
			s.CPMaj[0], s.CPMin[0], s.CPMin[1], s.APMaj[0], s.APMin[0])
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
	conflicts, example := 0, ""
	for _, key := range apKeys {
		it, err := c.Get(ctx, key, client.WithConsistency("all"))
		if err == nil && len(it.Siblings) > 1 {
			conflicts++
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
	fmt.Printf("  ap conflicts: %d of %d session keys kept concurrent writes from both sides as siblings\n", conflicts, len(apKeys))
	if example != "" {
		fmt.Printf("  e.g. %s\n", example)
	}
	cv, err := jepsen.Converge(ctx, eps, opts, "sessions", 60*time.Second)
	valid := err == nil && cv.Converged
	if err == nil {
		fmt.Printf("  ap convergence: replicas of %d partitions identical after %.1fs (%d keys compared)\n", cv.Partitions, cv.Seconds, cv.KeysCompared)
	}
	cpMin, apMin := 0, 0
	for _, s := range secs {
		cpMin += s.CPMin[0]
		apMin += s.APMin[0]
	}
	_ = cpMin
	var splitCPMin, splitAPMin int
	for i, s := range secs {
		t := time.Duration(i) * time.Second
		if t >= f.before+2*time.Second && t < f.before+f.split {
			splitCPMin += s.CPMin[0]
			splitAPMin += s.APMin[0]
		}
	}
	fmt.Printf("\nverdicts:\n  cp minority served %d writes during the split (promise: none: it holds no majority of these keys' replicas)\n  ap minority served %d writes during the split (promise: keeps serving)\n  ap replicas converged: %t\n",
		splitCPMin, splitAPMin, valid)
	if splitCPMin > 0 || splitAPMin == 0 {
		valid = false
	}
	report := filepath.Join(f.out, "demo.html")
	if err := writeDemoHTML(report, secs, f, maj, min, conflicts, cv); err != nil {
		return valid, err
	}
	fmt.Printf("\nreport: %s\n", report)
	return valid, nil
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

var demoTmpl = template.Must(template.New("d").Funcs(template.FuncMap{
	"bar": func(n, max int) int {
		if max == 0 {
			return 0
		}
		return 300 * n / max
	},
}).Parse(`<!doctype html><html><head><meta charset="utf-8"><title>capkv CAP demo</title>
<style>body{font-family:sans-serif;margin:2em}td{padding:1px 6px;font-size:13px}.split{background:#fde2e2}
.b{display:inline-block;height:10px;background:#3a3}.r{display:inline-block;height:10px;background:#c33}</style></head><body>
<h1>capkv CAP demo</h1>
<p>{{.Nodes}} nodes split into majority {{.Maj}} and minority {{.Min}} for {{.Split}}. Same client load on both keyspaces:
writes to <b>accounts</b> (cp, Raft) and <b>sessions</b> (ap, level one). Shaded rows: the split.
Green: writes served per second; red: refused.</p>
<p>After the heal: {{.Conflicts}} ap keys had siblings (concurrent writes from both sides);
replicas converged: {{.Converged}} ({{printf "%.1f" .ConvergeSeconds}}s).</p>
<table><tr><th>s</th><th>phase</th><th>cp majority</th><th>cp minority</th><th>ap majority</th><th>ap minority</th></tr>
{{range .Rows}}<tr{{if eq .Phase "split"}} class="split"{{end}}><td>{{.T}}</td><td>{{.Phase}}</td>
<td><span class="b" style="width:{{bar (index .CPMaj 0) $.Max}}px"></span> {{index .CPMaj 0}}</td>
<td><span class="b" style="width:{{bar (index .CPMin 0) $.Max}}px"></span><span class="r" style="width:{{bar (index .CPMin 1) $.Max}}px"></span> {{index .CPMin 0}} / {{index .CPMin 1}} refused</td>
<td><span class="b" style="width:{{bar (index .APMaj 0) $.Max}}px"></span> {{index .APMaj 0}}</td>
<td><span class="b" style="width:{{bar (index .APMin 0) $.Max}}px"></span> {{index .APMin 0}}</td></tr>
{{end}}</table></body></html>`))

func writeDemoHTML(path string, secs []demoSecond, f demoFlags, maj, min []string, conflicts int, cv jepsen.Convergence) error {
	maxv := 1
	var rows []demoSecond
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
		for _, v := range []int{s.CPMaj[0], s.CPMin[0], s.CPMin[1], s.APMaj[0], s.APMin[0]} {
			maxv = max(maxv, v)
		}
		rows = append(rows, s)
	}
	out, err := os.Create(path)
	if err != nil {
		return err
	}
	defer out.Close()
	return demoTmpl.Execute(out, map[string]any{"Nodes": f.nodes, "Maj": strings.Join(maj, ","), "Min": strings.Join(min, ","),
		"Split": f.split, "Rows": rows, "Max": maxv, "Conflicts": conflicts, "Converged": cv.Converged, "ConvergeSeconds": cv.Seconds})
}

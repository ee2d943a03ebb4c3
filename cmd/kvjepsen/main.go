// Command kvjepsen is capkv's partition-test runner: it starts a real
// cluster, runs a workload while a nemesis injects partitions, kills and
// pauses, records the history, and checks the guarantees capkv promises.
//
//	kvjepsen run --mode cp --workload register --nemesis partition-halves,kill,pause --nodes 5 --time 30s --out out/run1
//
// It exits 0 only when every promised guarantee held, 1 when one was
// violated, and 2 when the run itself could not be set up.
package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/client"
	"github.com/capkv/capkv/internal/buildinfo"
	"github.com/capkv/capkv/jepsen"
)

func main() {
	code := 0
	root := rootCmd(&code)
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "kvjepsen:", err)
		if code == 0 {
			code = 2
		}
	}
	os.Exit(code)
}

// rootCmd is kvjepsen's command tree; the commands set *code to the exit
// status a run earned.
func rootCmd(code *int) *cobra.Command {
	root := &cobra.Command{Use: "kvjepsen", Short: "partition tests for capkv", SilenceUsage: true, SilenceErrors: true,
		Version: buildinfo.Version()}
	root.SetVersionTemplate("{{.Name}} {{.Version}}\n")
	root.AddCommand(runCmd(code), demoCmd(code))
	return root
}

type runFlags struct {
	mode, workload, nemesis, backend, out, kvd string
	level, resolve, image                      string
	nodes, clients                             int
	duration, faultFor, healFor, recovery      time.Duration
	opTimeout                                  time.Duration
	seed                                       uint64
	unsafeReads, tls                           bool
}

func runCmd(code *int) *cobra.Command {
	var f runFlags
	cmd := &cobra.Command{
		Use:   "run",
		Short: "run one partition test and check its history",
		Long: `run starts --nodes kvd processes, drives the --workload with --clients
concurrent clients for --time while the nemeses inject faults (--fault-for on,
--heal-for off, always ending healed), waits --recovery, reads back, and checks:

  register  read/write/CAS on a few keys; linearizability checked by porcupine
  set       unique adds; every acknowledged element must survive

It prints a summary and writes results.json, history.jsonl, timeline.html and
(register) linearizability.html into --out. Exit 0: every guarantee held;
1: a guarantee was violated; 2: the run could not be set up.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			valid, err := run(cmd.Context(), f)
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
	fl.StringVar(&f.mode, "mode", "cp", "keyspace mode under test: cp or ap")
	fl.StringVar(&f.level, "level", "", "consistency level of the operations (default: the keyspace's; ap: one, quorum, all; a comma-separated list picks one per operation, so one run compares them)")
	fl.StringVar(&f.workload, "workload", "register", "register, set, or list (ap: appends by read-modify-write to a few keys)")
	fl.StringVar(&f.resolve, "resolve", "siblings", "list workload (ap): the keyspace's conflict resolution, siblings or lww")
	fl.StringVar(&f.nemesis, "nemesis", "partition-halves,isolate-leader,kill,pause", "comma-separated: partition-halves, isolate-leader, majorities-ring, bridge, kill, pause, loss (netns), delay (process), clock-skew, membership (joins a node, drains another; process and netns), or all")
	fl.StringVar(&f.backend, "backend", defaultBackend(), "netns (each kvd in its own network namespace, nftables partitions; root), process (loopback, faults via kvd's test-only hook) or docker (containers of --image)")
	fl.StringVar(&f.image, "image", "capkv:dev", "docker backend: the kvd image (make docker-image)")
	fl.IntVar(&f.nodes, "nodes", 5, "cluster size")
	fl.IntVar(&f.clients, "clients", 10, "concurrent clients")
	fl.DurationVar(&f.duration, "time", 30*time.Second, "how long to run the workload")
	fl.DurationVar(&f.faultFor, "fault-for", 4*time.Second, "how long each fault lasts")
	fl.DurationVar(&f.healFor, "heal-for", 3*time.Second, "healthy time between faults")
	fl.DurationVar(&f.recovery, "recovery", 4*time.Second, "healed time before the final reads")
	fl.DurationVar(&f.opTimeout, "op-timeout", time.Second, "deadline of one client operation")
	fl.StringVar(&f.out, "out", "", "output directory (default out/jepsen-<time>)")
	fl.StringVar(&f.kvd, "kvd", "", "kvd binary (default: next to kvjepsen, then PATH)")
	fl.Uint64Var(&f.seed, "seed", 0, "random seed (0: time-based; always printed)")
	fl.BoolVar(&f.tls, "tls", false, "run the cluster with mutual TLS (a CA and certificates made in OUT/cluster/tls)")
	fl.BoolVar(&f.unsafeReads, "unsafe-local-reads", false, "TEST ONLY: run kvd with a deliberately unsafe read path; the checker must fail")
	fl.MarkHidden("unsafe-local-reads")
	return cmd
}

// defaultBackend is netns where it can work (root, iproute2, nftables).
func defaultBackend() string {
	if os.Geteuid() == 0 {
		_, ip := exec.LookPath("ip")
		_, nft := exec.LookPath("nft")
		if ip == nil && nft == nil {
			return "netns"
		}
	}
	return "process"
}

func findKVD(flag string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), "kvd")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath("kvd"); err == nil {
		return p, nil
	}
	return "", errors.New("kvd not found next to kvjepsen nor on PATH; build it (make build) or pass --kvd")
}

func run(ctx context.Context, f runFlags) (bool, error) {
	switch {
	case f.mode != "cp" && f.mode != "ap":
		return false, fmt.Errorf("--mode %q: want cp or ap", f.mode)
	case f.workload != "register" && f.workload != "set" && f.workload != "list":
		return false, fmt.Errorf("--workload %q: want register, set or list", f.workload)
	case f.workload == "list" && f.mode != "ap":
		return false, errors.New("--workload list needs --mode ap (cp keyspaces have no siblings to lose)")
	case f.resolve != "siblings" && f.resolve != "lww":
		return false, fmt.Errorf("--resolve %q: want siblings or lww", f.resolve)
	case f.backend != "process" && f.backend != "netns" && f.backend != "docker":
		return false, fmt.Errorf("--backend %q: want netns, process or docker", f.backend)
	case f.nodes < 3 || f.nodes > 9:
		return false, fmt.Errorf("--nodes %d: want 3..9", f.nodes)
	case f.clients < 1 || f.duration <= 0 || f.faultFor <= 0 || f.healFor <= 0:
		return false, errors.New("--clients, --time, --fault-for and --heal-for must be positive")
	}
	nemeses, err := jepsen.ParseNemeses(f.nemesis)
	if err != nil {
		return false, err
	}
	// Packet loss needs real packets (netns); delays need kvd's fault hook
	// (process), since this kernel has no netem.
	unsupported := map[string]string{"process": "loss", "netns": "delay", "docker": "delay"}[f.backend]
	kept := nemeses[:0]
	for _, n := range nemeses {
		if n.Name() == "membership" && f.backend == "docker" {
			// Joining needs a node the harness starts itself.
			if f.nemesis != "all" {
				return false, errors.New("--nemesis membership needs the process or netns backend (it starts the joining node itself)")
			}
			continue
		}
		if n.Name() != unsupported {
			kept = append(kept, n)
		} else if f.nemesis != "all" {
			return false, fmt.Errorf("--nemesis %s is not available on the %s backend", n.Name(), f.backend)
		}
	}
	nemeses = kept
	kvd, err := findKVD(f.kvd)
	if err != nil {
		return false, err
	}
	if f.seed == 0 {
		f.seed = uint64(time.Now().UnixNano())
	}
	if f.out == "" {
		f.out = filepath.Join("out", "jepsen-"+time.Now().Format("20060102-150405"))
	}
	if err := os.MkdirAll(f.out, 0o755); err != nil {
		return false, err
	}
	logf := func(s string) { fmt.Println("kvjepsen:", s) }
	logf(fmt.Sprintf("mode=%s workload=%s nemesis=%s nodes=%d clients=%d time=%s seed=%d tls=%t out=%s",
		f.mode, f.workload, f.nemesis, f.nodes, f.clients, f.duration, f.seed, f.tls, f.out))

	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	clusterDir := filepath.Join(f.out, "cluster")
	os.RemoveAll(clusterDir)
	var cl jepsen.Cluster
	if f.backend == "docker" {
		cl, err = jepsen.StartDockerCluster(ctx, jepsen.DockerConfig{Image: f.image, Nodes: f.nodes, Dir: clusterDir, TLS: f.tls})
	} else {
		cl, err = jepsen.StartProcessCluster(ctx, jepsen.ProcessConfig{KVD: kvd, Nodes: f.nodes, Dir: clusterDir, UnsafeReads: f.unsafeReads, Backend: f.backend, TLS: f.tls})
	}
	if err != nil {
		return false, fmt.Errorf("start cluster: %w", err)
	}
	defer cl.Close() // every process, by PID, also on error or Ctrl-C
	var eps []string
	for _, n := range cl.Nodes() {
		eps = append(eps, n.Addr)
	}
	logf(fmt.Sprintf("cluster up: %s (logs in %s)", strings.Join(eps, ","), clusterDir))
	opts := cl.DialOptions()
	if err := warmUp(ctx, eps, opts); err != nil {
		return false, err
	}

	var listKeys []string
	if f.workload == "list" {
		name := "lists_" + f.resolve
		if err := createKeyspace(ctx, eps, opts, name, f.resolve); err != nil {
			return false, err
		}
		for i := range 3 {
			listKeys = append(listKeys, fmt.Sprintf("%s/l%d", name, i))
		}
	}
	// The membership nemesis moves replicas: the side checks below judge a
	// partition window by the replica sets of the map at the start, which
	// this client keeps (it never refreshes unless asked).
	var startMap *client.Client
	if c, err := client.New(ctx, client.Config{Endpoints: eps, DialOptions: opts}); err == nil {
		startMap = c
		defer c.Close()
	}
	// The clients send to the nodes there are at each operation: a joined
	// node from the moment it serves, a drained one no more once retired.
	live := func() []string {
		var out []string
		for _, n := range cl.Nodes() {
			out = append(out, n.Addr)
		}
		return out
	}
	h := jepsen.NewHistory()
	rng := rand.New(rand.NewPCG(f.seed, 7))
	var windows []jepsen.Window
	var wg sync.WaitGroup
	nctx, ncancel := context.WithTimeout(ctx, f.duration)
	defer ncancel()
	wg.Add(2)
	go func() {
		defer wg.Done()
		windows = jepsen.Schedule(nctx, cl, nemeses, f.faultFor, f.healFor, rng, h, logf)
	}()
	go func() { // progress
		defer wg.Done()
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-nctx.Done():
				return
			case <-t.C:
				ops := h.Ops()
				okN := 0
				for _, o := range ops {
					if o.Outcome == jepsen.OK {
						okN++
					}
				}
				logf(fmt.Sprintf("%6.1fs %d ops, %d ok", float64(h.Now())/1e9, len(ops), okN))
			}
		}
	}()
	var werr error
	keys := []string{"accounts/eu/1/r", "accounts/eu/2/r", "accounts/eu/3/r", "accounts/eu/4/r"}
	setPrefix, keyspace := "accounts/eu/", "accounts"
	if f.mode == "ap" {
		keys = []string{"sessions/r1", "sessions/r2", "sessions/r3", "sessions/r4"}
		setPrefix, keyspace = "sessions/s", "sessions"
	}
	switch f.workload {
	case "register":
		werr = jepsen.RegisterWorkload{Endpoints: eps, Live: live, Keys: keys, Clients: f.clients, Duration: f.duration,
			OpTimeout: f.opTimeout, Seed: f.seed, DialOptions: opts, Level: f.level, NoCAS: f.mode == "ap"}.Run(ctx, h)
	case "set":
		werr = jepsen.SetWorkload{Endpoints: eps, Live: live, Prefix: setPrefix, Accounts: 8, Clients: f.clients,
			Duration: f.duration, OpTimeout: f.opTimeout, Seed: f.seed, DialOptions: opts, Level: f.level}.Run(ctx, h)
	case "list":
		werr = jepsen.ListWorkload{Endpoints: eps, Live: live, Keys: listKeys, Clients: f.clients, Duration: f.duration,
			OpTimeout: f.opTimeout, Seed: f.seed, DialOptions: opts, Level: f.level}.Run(ctx, h)
	}
	ncancel()
	wg.Wait()
	if werr != nil {
		return false, werr
	}
	if ctx.Err() != nil {
		return false, errors.New("interrupted; cluster stopped")
	}
	cl.Cut(context.Background(), nil) // the schedule ends healed; make sure
	eps = live()                      // the final reads go to the nodes there are now
	logf(fmt.Sprintf("healed; recovering for %s", f.recovery))
	jepsenSleep(ctx, f.recovery)

	res := &jepsen.Results{Mode: f.mode, Workload: f.workload, Backend: f.backend, Nodes: f.nodes, Clients: f.clients,
		Seconds: f.duration.Seconds(), Seed: f.seed, UnsafeReads: f.unsafeReads, Windows: windows, Level: f.level}
	if f.workload == "list" {
		keyspace = "lists_" + f.resolve
	}
	if f.mode == "ap" {
		// The ap promise after a heal: anti-entropy makes every replica identical.
		logf("waiting for ap replicas to converge (anti-entropy) ...")
		cv, err := jepsen.Converge(ctx, eps, opts, keyspace, 60*time.Second)
		if err != nil {
			res.Problems = append(res.Problems, "convergence check failed: "+err.Error())
		} else {
			res.Convergence = &cv
			if !cv.Converged {
				res.Problems = append(res.Problems, fmt.Sprintf("%d partitions did not converge within 60s", len(cv.Differing)))
			}
		}
	}
	for _, n := range nemeses {
		res.Nemeses = append(res.Nemeses, n.Name())
	}
	var info = (*porcupineInfo)(nil)
	switch f.workload {
	case "register":
		logf("checking linearizability with porcupine ...")
		rr := jepsen.CheckRegister(h.Ops(), 2*time.Minute)
		res.Register = &jepsen.RegisterReport{Result: string(rr.Result), Linearizable: rr.Linearizable(), Checked: rr.Checked, Unknown: rr.Unknown}
		if f.mode == "cp" && !rr.Linearizable() {
			res.Problems = append(res.Problems, fmt.Sprintf("history is not linearizable (porcupine: %s)", rr.Result))
		}
		if f.mode == "ap" {
			// ap does not promise linearizability: the anomalies are the
			// trade-off, counted and shown, not a failure.
			st := jepsen.StaleReads(h.Ops())
			res.Stale = &st
		}
		info = &porcupineInfo{rr.Info}
	case "set":
		final, err := jepsen.ReadSet(ctx, eps, keyspace+"/", 30*time.Second, opts...)
		if err != nil {
			res.Problems = append(res.Problems, "final read failed after heal: "+err.Error())
		} else {
			sr := jepsen.CheckSet(h.Ops(), final)
			res.Set = &sr
			if len(sr.Lost) > 0 {
				res.Problems = append(res.Problems, fmt.Sprintf("%d acknowledged elements lost (e.g. %s)", len(sr.Lost), sr.Lost[0]))
			}
			if len(sr.Unexpected) > 0 {
				res.Problems = append(res.Problems, fmt.Sprintf("%d elements present that were never added", len(sr.Unexpected)))
			}
			if len(sr.FailedButPresent) > 0 {
				res.Problems = append(res.Problems, fmt.Sprintf("%d adds reported as failed took effect (e.g. %s)", len(sr.FailedButPresent), sr.FailedButPresent[0]))
			}
		}
	}
	if f.workload == "list" {
		final, err := jepsen.ReadLists(ctx, eps, listKeys, opts...)
		if err != nil {
			res.Problems = append(res.Problems, "final read failed after heal: "+err.Error())
		} else {
			sr := jepsen.CheckList(h.Ops(), final)
			res.Set = &sr
			switch {
			case f.resolve == "lww":
				// The documented trade-off: counted and shown, not a failure.
				logf(fmt.Sprintf("last-writer-wins lost %d of %d acknowledged appends", len(sr.Lost), sr.Acknowledged))
			case len(sr.Lost) > 0:
				res.Problems = append(res.Problems, fmt.Sprintf("%d acknowledged appends lost with siblings (e.g. %s)", len(sr.Lost), sr.Lost[0]))
			}
			if len(sr.FailedButPresent) > 0 {
				res.Problems = append(res.Problems, fmt.Sprintf("%d appends reported as failed took effect", len(sr.FailedButPresent)))
			}
		}
	}
	ops := h.Ops()
	res.Count(ops)
	res.Availability = jepsen.Availability(ops)
	addrToID := map[string]string{}
	all := cl.Nodes()
	if m, ok := cl.(jepsen.Members); ok {
		all = m.AllNodes() // retired nodes too: the history names them
	}
	for _, n := range all {
		addrToID[n.Addr] = n.ID
	}
	res.Sides = jepsen.SideAvailability(ops, windows, addrToID)
	replicasOf := func(key string) []string { return nil }
	if startMap != nil {
		replicasOf = func(key string) []string {
			p, err := startMap.Locate(key)
			if err != nil {
				return nil
			}
			return p.Replicas
		}
	}
	// Replica sets hold still until the first membership change; windows
	// from then on are not judged by the side checks (the register and set
	// checkers judge every operation regardless).
	sideWindows := windows
	if first := firstMembership(windows); first >= 0 {
		sideWindows = nil
		for _, w := range windows {
			if !w.Membership && w.End < first {
				sideWindows = append(sideWindows, w)
			} else if !w.Membership && w.Sides != nil {
				res.SideWindowsSkipped++
			}
		}
		if res.SideWindowsSkipped > 0 {
			logf(fmt.Sprintf("side checks: %d partition windows during or after the first membership change not judged (replica sets moved)", res.SideWindowsSkipped))
		}
	}
	if f.mode == "cp" {
		// The cp promise: a side without a majority of a key's replicas
		// serves nothing for that key (sides of the cluster split alone do
		// not decide: a partition's replicas may be mostly on the smaller side).
		cc := jepsen.CheckCPCutOff(ops, sideWindows, addrToID, replicasOf)
		res.CPCutOff = &cc
		if cc.Served > 0 {
			res.Problems = append(res.Problems, fmt.Sprintf("cp served %d requests cut off from their replica majority (e.g. %s)", cc.Served, cc.Examples[0]))
		}
	}
	if f.mode == "ap" {
		// The ap promise (at level one): a request is answered while a replica
		// of its partition is on the client's side of the partition.
		a := jepsen.CheckAPAvailability(ops, sideWindows, addrToID, replicasOf)
		res.APAvail = &a
		if f.level == "one" && a.Refused > 0 {
			res.Problems = append(res.Problems, fmt.Sprintf("ap refused %d requests that had a replica on their side (e.g. %s)", a.Refused, a.Examples[0]))
		}
	}
	res.Latency = jepsen.Latencies(ops)
	if res.OK == 0 {
		res.Problems = append(res.Problems, "no operation succeeded")
	}
	res.Valid = len(res.Problems) == 0
	var werr2 error
	if info != nil {
		werr2 = res.Write(f.out, h, &info.LinearizationInfo)
	} else {
		werr2 = res.Write(f.out, h, nil)
	}
	fmt.Println()
	res.Summary(os.Stdout)
	fmt.Printf("\nresults: %s\n", filepath.Join(f.out, "results.json"))
	if werr2 != nil {
		return res.Valid, fmt.Errorf("writing results: %w", werr2)
	}
	return res.Valid, nil
}

// firstMembership is the start of the first membership window, -1 if none.
func firstMembership(ws []jepsen.Window) int64 {
	first := int64(-1)
	for _, w := range ws {
		if w.Membership && (first < 0 || w.Start < first) {
			first = w.Start
		}
	}
	return first
}

// createKeyspace creates the list workload's ap keyspace (idempotent).
func createKeyspace(ctx context.Context, eps []string, opts []grpc.DialOption, name, resolve string) error {
	c, err := client.New(ctx, client.Config{Endpoints: eps, DialOptions: opts})
	if err != nil {
		return err
	}
	defer c.Close()
	admin, err := c.Admin()
	if err != nil {
		return err
	}
	ks := &api.Keyspace{Name: name, Mode: "ap", Replicas: 3, Partitions: 4, Template: name + "/{list}/...", Resolve: resolve}
	deadline := time.Now().Add(20 * time.Second)
	for {
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		_, err := admin.CreateKeyspace(cctx, &api.CreateKeyspaceRequest{Keyspace: ks})
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("create keyspace %s: %w", name, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Every node learns the keyspace by epoch; wait until writes work.
	for time.Now().Before(deadline) {
		wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := c.Put(wctx, name+"/warmup", []byte("x"))
		cancel()
		if err == nil {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("keyspace %s not writable within 20s", name)
}

func jepsenSleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// warmUp waits until the register keys' partitions accept writes.
func warmUp(ctx context.Context, eps []string, opts []grpc.DialOption) error {
	c, err := client.New(ctx, client.Config{Endpoints: eps, DialOptions: opts})
	if err != nil {
		return err
	}
	defer c.Close()
	deadline := time.Now().Add(30 * time.Second)
	var last error
	for time.Now().Before(deadline) && ctx.Err() == nil {
		ok := true
		for i := range 5 {
			wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			_, last = c.Put(wctx, fmt.Sprintf("accounts/eu/%d/warmup", i), []byte("init")) // same partitions as the register keys, not the same keys
			cancel()
			ok = ok && last == nil
		}
		if ok {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("the cluster did not accept writes within 30s of starting: %v", last)
}

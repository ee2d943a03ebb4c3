// Command kvctl is capkv's command-line client and admin tool.
//
//	kvctl put accounts/eu/42/balance 100
//	kvctl get accounts/eu/42/balance
//	kvctl --json get accounts/eu/42/balance
//	kvctl locate accounts/eu/42/balance
//	kvctl cluster status
package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/client"
	"github.com/capkv/capkv/consistency"
	"github.com/capkv/capkv/internal/trace"
)

// defaultEndpoints is the cluster `make run` starts.
const defaultEndpoints = "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003"

type globals struct {
	endpoints   string
	consistency string
	json        bool
	verbose     bool
	timeout     time.Duration
	trace       bool
	// TLS: the CA bundle the nodes are verified with, and the client's
	// certificate and key (see tls.go).
	cacert, cert, key string
	out, errOut       io.Writer
	in                io.Reader
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run executes kvctl with args and returns the exit code.
func run(args []string, in io.Reader, out, errOut io.Writer) int {
	g := &globals{in: in, out: out, errOut: errOut}
	root := rootCmd(g)
	root.SetArgs(args)
	if err := root.Execute(); err != nil {
		fmt.Fprintln(errOut, "kvctl:", err)
		if isUsage(err) {
			return 2
		}
		return 1
	}
	return 0
}

type usageError struct{ error }

func rootCmd(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:           "kvctl",
		Short:         "capkv command-line client and admin tool",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	// Set before setupCLI: cobra's completion command keeps the writer it
	// sees when it is made.
	root.SetIn(g.in)
	root.SetOut(g.out)
	root.SetErr(g.errOut)
	pf := root.PersistentFlags()
	pf.StringVar(&g.endpoints, "endpoints", defaultEndpoints, "comma-separated node addresses, host:port or http://host:port")
	pf.StringVar(&g.consistency, "consistency", "", "consistency level: linearizable, stale (cp); one, quorum, all (ap); default: the keyspace's")
	pf.BoolVar(&g.json, "json", false, "print JSON, including the CAP receipt")
	pf.BoolVarP(&g.verbose, "verbose", "v", false, "print the CAP receipt as one line on stderr")
	pf.DurationVar(&g.timeout, "timeout", 5*time.Second, "deadline of the whole command")
	pf.BoolVar(&g.trace, "trace", false, "trace this request on every node it reaches and print the trace ID on stderr (then: kvctl trace ID)")
	pf.StringVar(&g.cacert, "cacert", "", "TLS: verify the nodes with this CA bundle (PEM); turns TLS on")
	pf.StringVar(&g.cert, "cert", "", "TLS: client certificate (PEM) for clusters that require one")
	pf.StringVar(&g.key, "key", "", "TLS: the key of --cert")

	root.AddCommand(putCmd(g), getCmd(g), delCmd(g), casCmd(g), scanCmd(g), locateCmd(g), ringCmd(g),
		clusterCmd(g), keyspaceCmd(g), benchCmd(g), traceCmd(g), repairCmd(g), watchCmd(g), certsCmd(g), rebalanceCmd(g), nodeCmd(g))
	setupCLI(root, g)
	return root
}

// connect builds a client and a context bounded by --timeout.
func (g *globals) connect() (context.Context, context.CancelFunc, *client.Client, []client.Option, error) {
	eps, err := g.endpointList()
	if err != nil {
		return nil, nil, nil, nil, err
	}
	lvl, err := consistency.ParseLevel(g.consistency)
	if err != nil {
		return nil, nil, nil, nil, usageError{fmt.Errorf("--consistency: %w", err)}
	}
	tc, err := g.tlsConfig()
	if err != nil {
		return nil, nil, nil, nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), g.timeout)
	if g.trace {
		var id string
		ctx, id = trace.Force(ctx)
		fmt.Fprintln(g.errOut, "trace:", id)
	}
	c, err := client.New(ctx, client.Config{Endpoints: eps, DialTimeout: g.timeout, TLS: tc})
	if err != nil {
		cancel()
		return nil, nil, nil, nil, fmt.Errorf("connect to %s: %w", strings.Join(eps, ","), err)
	}
	return ctx, cancel, c, []client.Option{client.WithConsistency(lvl)}, nil
}

// endpointList parses --endpoints: a malformed one is a usage error that
// says what is wanted, not a gRPC resolver error.
func (g *globals) endpointList() ([]string, error) {
	var eps []string
	for _, e := range splitEndpoints(g.endpoints) {
		parse := client.ParseEndpoint
		if g.tlsOn() {
			parse = client.ParseEndpointTLS
		}
		addr, err := parse(e)
		if err != nil {
			return nil, usageError{fmt.Errorf("--endpoints: %w", err)}
		}
		eps = append(eps, addr)
	}
	if len(eps) == 0 {
		return nil, usageError{fmt.Errorf("--endpoints is empty: give host:port of one or more nodes")}
	}
	return eps, nil
}

// withClient runs fn with a connected client, the command's deadline and the
// --consistency option, and releases them afterwards.
func (g *globals) withClient(fn func(ctx context.Context, c *client.Client, opts []client.Option) error) error {
	ctx, cancel, c, opts, err := g.connect()
	if err != nil {
		return err
	}
	defer cancel()
	defer c.Close()
	return fn(ctx, c, opts)
}

// withAdmin runs fn with an Admin client and the command's deadline.
func (g *globals) withAdmin(fn func(ctx context.Context, a api.AdminClient) error) error {
	done, a, err := g.admin()
	if err != nil {
		return err
	}
	defer done()
	ctx, cancel := g.ctx()
	defer cancel()
	return fn(ctx, a)
}

func (g *globals) printJSON(v any) error {
	enc := json.NewEncoder(g.out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func (g *globals) receipt(r client.Receipt) {
	if g.verbose {
		fmt.Fprintln(g.errOut, "receipt:", r.Summary())
	}
}

// jsonReceipt is the receipt as --json prints it.
type jsonReceipt struct {
	Keyspace          string   `json:"keyspace"`
	Mode              string   `json:"mode"`
	Level             string   `json:"level"`
	Partition         string   `json:"partition,omitempty"`
	Replicas          []string `json:"replicas,omitempty"`
	AckedBy           []string `json:"acked_by"`
	ServedBy          string   `json:"served_by"`
	Coordinator       string   `json:"coordinator"`
	Forwarded         bool     `json:"forwarded"`
	SloppyQuorum      bool     `json:"sloppy_quorum"`
	Hinted            bool     `json:"hinted"`
	Siblings          int      `json:"siblings"`
	AppliedIndex      uint64   `json:"applied_index"`
	StalenessMs       int64    `json:"staleness_ms"`
	MajorityReachable bool     `json:"majority_reachable"`
	Epoch             uint64   `json:"epoch"`
	TraceID           string   `json:"trace_id,omitempty"`
}

func toJSONReceipt(r client.Receipt) jsonReceipt {
	return jsonReceipt{Keyspace: r.Keyspace, Mode: string(r.Mode), Level: string(r.Level), Partition: r.Partition,
		Replicas: r.Replicas, AckedBy: r.AckedBy, ServedBy: r.ServedBy, Coordinator: r.Coordinator, Forwarded: r.Forwarded,
		SloppyQuorum: r.SloppyQuorum, Hinted: r.Hinted, Siblings: r.Siblings, AppliedIndex: r.AppliedIndex,
		StalenessMs: r.Staleness.Milliseconds(), MajorityReachable: r.MajorityReachable, Epoch: r.Epoch, TraceID: r.TraceID}
}

// jsonItem prints a value as text when it is UTF-8, else as base64.
type jsonItem struct {
	Key         string       `json:"key"`
	Value       *string      `json:"value,omitempty"`
	ValueBase64 *string      `json:"value_base64,omitempty"`
	Version     uint64       `json:"version"`
	Timestamp   string       `json:"timestamp"`
	Receipt     *jsonReceipt `json:"receipt,omitempty"`
	Siblings    []jsonSib    `json:"siblings,omitempty"`
	Context     string       `json:"context,omitempty"` // ap: pass to put/del --context
	Deleted     bool         `json:"deleted_concurrently,omitempty"`
}

type jsonSib struct {
	Value     string `json:"value"`
	Timestamp string `json:"timestamp"`
	Dot       string `json:"dot"`
}

func toJSONItem(it client.Item, withReceipt bool) jsonItem {
	j := jsonItem{Key: it.Key, Version: it.Version, Timestamp: it.Timestamp.String()}
	if utf8.Valid(it.Value) {
		s := string(it.Value)
		j.Value = &s
	} else {
		s := base64.StdEncoding.EncodeToString(it.Value)
		j.ValueBase64 = &s
	}
	if withReceipt {
		r := toJSONReceipt(it.Receipt)
		j.Receipt = &r
	}
	if len(it.Siblings) > 1 {
		for _, s := range it.Siblings {
			j.Siblings = append(j.Siblings, jsonSib{Value: printable(s.Value), Timestamp: s.Timestamp.String(), Dot: s.Dot})
		}
	}
	if len(it.Context) > 0 {
		j.Context = base64.StdEncoding.EncodeToString(it.Context)
	}
	j.Deleted = it.DeletedConcurrently
	return j
}

func (g *globals) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), g.timeout)
}

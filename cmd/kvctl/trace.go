package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/client"
	"github.com/capkv/capkv/internal/trace"
)

func traceCmd(g *globals) *cobra.Command {
	var html string
	cmd := &cobra.Command{
		Use:   "trace TRACE-ID",
		Short: "gather one trace's spans from every node and print its tree (get an ID with --trace on any command)",
		Long: `trace asks every node of the cluster map for the spans of one trace that it
still holds in its in-memory span buffer (the newest 10000 spans or 16 MiB per
node) and prints them as a tree: each span's start (from the trace's first
span), its duration, the node it ran on, its name and capkv's attributes.
--json prints the spans; --html FILE writes a self-contained waterfall page.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args[0]) != 32 || strings.Trim(strings.ToLower(args[0]), "0123456789abcdef") != "" {
				return usageError{fmt.Errorf("trace ID %q: want the 32 hex digits --trace printed", args[0])}
			}
			args[0] = strings.ToLower(args[0])
			return g.withClient(func(ctx context.Context, c *client.Client, _ []client.Option) error {
				spans, err := gatherTrace(ctx, c, args[0], g)
				if err != nil {
					return err
				}
				if len(spans) == 0 {
					return fmt.Errorf("trace %s: no node holds spans of it (not sampled, or evicted from the buffers)", args[0])
				}
				if html != "" {
					f, err := os.Create(html)
					if err != nil {
						return err
					}
					if err := trace.WriteHTML(f, args[0], spans); err != nil {
						f.Close()
						return err
					}
					if err := f.Close(); err != nil {
						return err
					}
				}
				if g.json {
					return g.printJSON(map[string]any{"trace_id": args[0], "spans": spans})
				}
				trace.PrintTree(g.out, spans)
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&html, "html", "", "also write the trace as a waterfall to this HTML file")
	return cmd
}

// gatherTrace asks every node of the map for its spans of id; a node that
// does not answer is named on stderr and left out.
func gatherTrace(ctx context.Context, c *client.Client, id string, g *globals) ([]trace.Span, error) {
	a, err := c.Admin()
	if err != nil {
		return nil, err
	}
	cm, err := a.GetClusterMap(ctx, &api.ClusterMapRequest{})
	if err != nil {
		return nil, fmt.Errorf("cluster map: %w", err)
	}
	var out []trace.Span
	for _, n := range cm.GetNodes() {
		na, err := c.AdminAt(n.GetAddr())
		var resp *api.TraceSpansResponse
		if err == nil {
			resp, err = na.TraceSpans(ctx, &api.TraceSpansRequest{TraceId: id})
		}
		if err != nil {
			fmt.Fprintf(g.errOut, "kvctl: node %s (%s): %v; its spans are missing\n", n.GetId(), n.GetAddr(), err)
			continue
		}
		for _, s := range resp.GetSpans() {
			out = append(out, trace.Span{TraceID: s.GetTraceId(), SpanID: s.GetSpanId(), ParentID: s.GetParentId(), Name: s.GetName(),
				Node: s.GetNode(), Kind: s.GetKind(), Start: time.Unix(0, s.GetStartUnixNano()), End: time.Unix(0, s.GetEndUnixNano()),
				Attrs: s.GetAttrs(), Error: s.GetError()})
		}
	}
	slices.SortFunc(out, func(a, b trace.Span) int { return a.Start.Compare(b.Start) })
	return out, nil
}

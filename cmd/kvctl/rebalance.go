package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/internal/kverrors"
)

// rebalanceCmd shows the partition moves a join planned.
func rebalanceCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "rebalance", Short: "partition moves after nodes join", Args: cobra.NoArgs}
	status := &cobra.Command{
		Use:   "status",
		Short: "show the moves of the current (or last) rebalancing: pending, running, done; keys and bytes moved",
		Args:  exactArgs(0),
		RunE: func(*cobra.Command, []string) error {
			return g.withAdmin(func(ctx context.Context, a api.AdminClient) error {
				r, err := a.RebalanceStatus(ctx, &api.RebalanceStatusRequest{})
				if err != nil {
					return kverrors.FromStatus(err)
				}
				if g.json {
					return g.printJSON(rebalanceJSON(r))
				}
				printRebalance(g, r)
				return nil
			})
		},
	}
	cmd.AddCommand(status)
	return cmd
}

func rebalanceCounts(r *api.RebalanceStatusResponse) map[string]int {
	c := map[string]int{}
	for _, m := range r.GetMoves() {
		c[m.GetState()]++
	}
	return c
}

func rebalanceJSON(r *api.RebalanceStatusResponse) map[string]any {
	moves := make([]map[string]any, 0, len(r.GetMoves()))
	var keys, bytes uint64
	for _, m := range r.GetMoves() {
		keys, bytes = keys+m.GetKeys(), bytes+m.GetBytes()
		mv := map[string]any{"partition": m.GetPartition(), "from": m.GetFrom(), "to": m.GetTo(), "state": m.GetState(),
			"attempts": m.GetAttempts(), "keys": m.GetKeys(), "bytes": m.GetBytes()}
		if m.GetError() != "" {
			mv["error"] = m.GetError()
		}
		if m.GetStartedUnixMs() > 0 && m.GetFinishedUnixMs() > 0 {
			mv["took_ms"] = m.GetFinishedUnixMs() - m.GetStartedUnixMs()
		}
		moves = append(moves, mv)
	}
	return map[string]any{"planned_at_epoch": r.GetPlannedAtEpoch(), "complete": r.GetComplete(), "limit_per_node": r.GetLimit(),
		"replicas": r.GetReplicas(), "moved_replicas": r.GetMoved(), "counts": rebalanceCounts(r), "keys": keys, "bytes": bytes, "moves": moves}
}

func printRebalance(g *globals, r *api.RebalanceStatusResponse) {
	if r.GetPlannedAtEpoch() == 0 {
		fmt.Fprintln(g.out, "no rebalancing has run: every partition is where it was first placed")
		return
	}
	c := rebalanceCounts(r)
	state := "complete"
	if !r.GetComplete() {
		state = "in progress"
	}
	frac := 0.0
	if r.GetReplicas() > 0 {
		frac = 100 * float64(r.GetMoved()) / float64(r.GetReplicas())
	}
	fmt.Fprintf(g.out, "rebalance planned at epoch %d, %s: %d/%d moves done, %d running, %d pending, %d failed (retrying); %d of %d replicas move (%.1f%%); at most %d moves per node at once\n",
		r.GetPlannedAtEpoch(), state, c["done"], len(r.GetMoves()), c["running"], c["pending"], c["failed"], r.GetMoved(), r.GetReplicas(), frac, r.GetLimit())
	w := tabwriter.NewWriter(g.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "PARTITION\tFROM\tTO\tSTATE\tATTEMPTS\tKEYS\tBYTES\tTOOK\tERROR")
	for _, m := range r.GetMoves() {
		took := "-"
		if m.GetStartedUnixMs() > 0 && m.GetFinishedUnixMs() > 0 {
			took = (time.Duration(m.GetFinishedUnixMs()-m.GetStartedUnixMs()) * time.Millisecond).String()
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\n", m.GetPartition(), strings.Join(m.GetFrom(), ","), strings.Join(m.GetTo(), ","),
			m.GetState(), m.GetAttempts(), m.GetKeys(), m.GetBytes(), took, m.GetError())
	}
	w.Flush()
}

package main

import (
	"context"
	"fmt"
	"slices"
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

// rebalanceProgress is the one-line state of a plan's moves, as status,
// node remove and cluster status print it; failures are named only when
// there are some (a failed move is retried).
func rebalanceProgress(r *api.RebalanceStatusResponse) string {
	c := rebalanceCounts(r)
	line := fmt.Sprintf("%d/%d moves done, %d running, %d pending", c["done"], len(r.GetMoves()), c["running"], c["pending"])
	if c["failed"] > 0 {
		line += fmt.Sprintf(", %d failed (retrying)", c["failed"])
	}
	return line
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
	return map[string]any{"leaving": r.GetLeaving(), "meta_seat": r.GetMetaSeat(), "planned_at_epoch": r.GetPlannedAtEpoch(), "complete": r.GetComplete(), "limit_per_node": r.GetLimit(),
		"replicas": r.GetReplicas(), "moved_replicas": r.GetMoved(), "counts": rebalanceCounts(r), "keys": keys, "bytes": bytes, "moves": moves}
}

func printRebalance(g *globals, r *api.RebalanceStatusResponse) {
	if r.GetPlannedAtEpoch() == 0 {
		fmt.Fprintln(g.out, "no rebalancing has run: every partition is where it was first placed")
		return
	}
	state := "complete"
	if !r.GetComplete() {
		state = "in progress"
	}
	frac := 0.0
	if r.GetReplicas() > 0 {
		frac = 100 * float64(r.GetMoved()) / float64(r.GetReplicas())
	}
	if len(r.GetLeaving()) > 0 {
		fmt.Fprintf(g.out, "draining %s: it leaves the map once every move below is done", strings.Join(r.GetLeaving(), ", "))
		if r.GetMetaSeat() != "" {
			fmt.Fprintf(g.out, " and its metadata seat has moved (%s)", r.GetMetaSeat())
		}
		fmt.Fprintln(g.out)
	}
	fmt.Fprintf(g.out, "rebalance planned at epoch %d, %s: %s; %d of %d replicas move (%.1f%%); at most %d moves per node at once\n",
		r.GetPlannedAtEpoch(), state, rebalanceProgress(r), r.GetMoved(), r.GetReplicas(), frac, r.GetLimit())
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

// nodeCmd administers nodes: remove drains one.
func nodeCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "node", Short: "node administration", Args: cobra.NoArgs}
	var wait bool
	var waitTimeout time.Duration
	remove := &cobra.Command{
		Use:   "remove ID",
		Short: "drain a node: move every replica it holds to the others, then take it out of the cluster map",
		Long: `remove drains a node: every replica it holds moves to the other nodes (refused
when they cannot hold every partition's replication factor), a metadata seat it
holds moves to another node, and then it leaves the cluster map. The node keeps
serving until then; stop it afterwards. With --wait (the default) remove prints
progress until the drain is done.`,
		Args: exactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			if waitTimeout <= 0 {
				return usageError{fmt.Errorf("--wait-timeout %s: must be positive", waitTimeout)}
			}
			id := args[0]
			err := g.withAdmin(func(ctx context.Context, a api.AdminClient) error {
				_, err := a.RemoveNode(ctx, &api.RemoveNodeRequest{Id: id})
				return kverrors.FromStatus(err)
			})
			if err != nil {
				return err
			}
			if !wait {
				fmt.Fprintf(g.out, "draining %s (kvctl rebalance status follows it)\n", id)
				return nil
			}
			return g.followDrain(id, waitTimeout)
		},
	}
	remove.Flags().BoolVar(&wait, "wait", true, "print progress until the node has left the map")
	remove.Flags().DurationVar(&waitTimeout, "wait-timeout", 10*time.Minute, "give up waiting after this long (the drain goes on)")
	cmd.AddCommand(remove)
	return cmd
}

// followDrain prints a progress line whenever the drain advances.
func (g *globals) followDrain(id string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	last := ""
	for {
		var r *api.RebalanceStatusResponse
		err := g.withAdmin(func(ctx context.Context, a api.AdminClient) error {
			var err error
			r, err = a.RebalanceStatus(ctx, &api.RebalanceStatusRequest{})
			return kverrors.FromStatus(err)
		})
		if err == nil {
			line := id + ": " + rebalanceProgress(r)
			if r.GetMetaSeat() != "" {
				line += "; metadata seat " + r.GetMetaSeat()
			}
			if line != last {
				fmt.Fprintf(g.out, "[%s] %s\n", time.Now().Format("15:04:05"), line)
				last = line
			}
			if !slices.Contains(r.GetLeaving(), id) && g.leftMap(id) {
				fmt.Fprintf(g.out, "%s is drained and has left the cluster map; it can be stopped\n", id)
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: %s is still draining after --wait-timeout %s (it goes on; kvctl rebalance status follows it)", kverrors.ErrUnavailable, id, limit)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// leftMap reports whether node id is gone from the metadata leader's map.
func (g *globals) leftMap(id string) bool {
	gone := false
	g.withAdmin(func(ctx context.Context, a api.AdminClient) error {
		m, err := a.GetClusterMap(ctx, &api.ClusterMapRequest{Fresh: true})
		if err != nil {
			return err
		}
		gone = !slices.ContainsFunc(m.GetNodes(), func(n *api.Node) bool { return n.GetId() == id })
		return nil
	})
	return gone
}

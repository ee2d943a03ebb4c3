package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/client"
	"github.com/capkv/capkv/consistency"
	"github.com/capkv/capkv/internal/kverrors"
	"github.com/capkv/capkv/internal/wire"
	"github.com/capkv/capkv/ring"
)

func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usageError{fmt.Errorf("%s: want %d argument(s), got %d (usage: kvctl %s)", cmd.Name(), n, len(args), cmd.Use)}
		}
		return nil
	}
}

// printable shows a value as text when it is UTF-8 without control characters.
func printable(v []byte) string {
	if utf8.Valid(v) && !strings.ContainsAny(string(v), "\x00\n\r\t") {
		return string(v)
	}
	return fmt.Sprintf("%q", v)
}

// isTerminalish reports whether w is a terminal, so that `get` ends the bare
// value with a newline for people but not for pipes.
func isTerminalish(w any) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func (g *globals) admin() (func(), api.AdminClient, error) {
	_, cancel, c, _, err := g.connect()
	if err != nil {
		return nil, nil, err
	}
	a, err := c.Admin()
	if err != nil {
		cancel()
		c.Close()
		return nil, nil, err
	}
	return func() { cancel(); c.Close() }, a, nil
}

func locateCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "locate KEY",
		Short: "show where a key lives: keyspace, partition, preference list, owner",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := client.CheckKey(args[0], 0); err != nil {
				return err
			}
			return g.withAdmin(func(ctx context.Context, a api.AdminClient) error {
				r, err := a.Locate(ctx, &api.LocateRequest{Key: args[0]})
				if err != nil {
					return kverrors.FromStatus(err)
				}
				if g.json {
					return g.printJSON(map[string]any{"key": args[0], "keyspace": r.Keyspace, "mode": r.Mode, "partition": r.Partition,
						"region": r.Region, "replicas": r.Replicas, "owner": r.Owner, "owner_addr": r.OwnerAddr, "leader": r.Leader, "epoch": r.Epoch})
				}
				w := tabwriter.NewWriter(g.out, 0, 4, 2, ' ', 0)
				fmt.Fprintf(w, "key\t%s\n", args[0])
				fmt.Fprintf(w, "keyspace\t%s (%s)\n", r.Keyspace, r.Mode)
				fmt.Fprintf(w, "partition\t%s\n", r.Partition)
				if r.Region != "" {
					fmt.Fprintf(w, "region\t%s\n", r.Region)
				}
				fmt.Fprintf(w, "replicas\t%s\n", strings.Join(r.Replicas, ", "))
				fmt.Fprintf(w, "owner\t%s (%s)\n", r.Owner, r.OwnerAddr)
				if r.Leader != "" {
					fmt.Fprintf(w, "leader\t%s\n", r.Leader)
				}
				fmt.Fprintf(w, "epoch\t%d\n", r.Epoch)
				return w.Flush()
			})
		},
	}
}

func ringCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "ring [KEYSPACE]",
		Short: "list partitions and their preference lists, and partitions per node",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withAdmin(func(ctx context.Context, a api.AdminClient) error {
				req := &api.RingRequest{}
				if len(args) == 1 {
					req.Keyspace = args[0]
				}
				r, err := a.Ring(ctx, req)
				if err != nil {
					return kverrors.FromStatus(err)
				}
				primaries, replicas := map[string]int{}, map[string]int{}
				for _, p := range r.Partitions {
					for i, id := range p.Replicas {
						if i == 0 {
							primaries[id]++
						}
						replicas[id]++
					}
				}
				if g.json {
					parts := make([]map[string]any, 0, len(r.Partitions))
					for _, p := range r.Partitions {
						m := map[string]any{"partition": p.Id, "replicas": p.Replicas}
						if p.Error != "" {
							m["error"] = p.Error
						}
						parts = append(parts, m)
					}
					return g.printJSON(map[string]any{"epoch": r.Epoch, "vnodes": r.Vnodes, "partitions": parts,
						"primaries_per_node": primaries, "replicas_per_node": replicas})
				}
				w := tabwriter.NewWriter(g.out, 0, 4, 2, ' ', 0)
				fmt.Fprintf(w, "PARTITION\tREPLICAS (owner first)\n")
				for _, p := range r.Partitions {
					if p.Error != "" {
						fmt.Fprintf(w, "%s\t(unplaced: %s)\n", p.Id, p.Error)
						continue
					}
					fmt.Fprintf(w, "%s\t%s\n", p.Id, strings.Join(p.Replicas, ", "))
				}
				fmt.Fprintf(w, "\nNODE\tPRIMARIES\tREPLICAS\n")
				var ids []string
				for id := range replicas {
					ids = append(ids, id)
				}
				sort.Strings(ids)
				for _, id := range ids {
					fmt.Fprintf(w, "%s\t%d\t%d\n", id, primaries[id], replicas[id])
				}
				fmt.Fprintf(w, "\nepoch %d, %d vnodes per node\n", r.Epoch, r.Vnodes)
				return w.Flush()
			})
		},
	}
}

func clusterCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "cluster", Short: "cluster administration"}
	var check bool
	status := &cobra.Command{
		Use:   "status",
		Short: "show every node (up or down), its region and load, and the keyspaces",
		Long: `status shows every node (up or down), its region and load, and the keyspaces.
With --check it also exits 1 when any node is not up, for scripts and probes.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withAdmin(func(ctx context.Context, a api.AdminClient) (err error) {
				r, err := a.ClusterStatus(ctx, &api.ClusterStatusRequest{})
				if err != nil {
					return kverrors.FromStatus(err)
				}
				if check { // after the status is printed, text or JSON
					defer func() {
						if err == nil {
							err = checkNodesUp(r.Nodes)
						}
					}()
				}
				if g.json {
					nodes := make([]map[string]any, 0, len(r.Nodes))
					for _, n := range r.Nodes {
						m := map[string]any{"id": n.Node.Id, "addr": n.Node.Addr, "region": n.Node.Region, "state": n.State,
							"primaries": n.Primaries, "replicas": n.Replicas}
						if n.Error != "" {
							m["error"] = n.Error
						}
						if n.Info != nil {
							m["uptime_ms"], m["partitions_with_data"], m["lsm_bytes"], m["vlog_bytes"], m["version"] =
								n.Info.UptimeMs, n.Info.Partitions, n.Info.LsmBytes, n.Info.VlogBytes, n.Info.Version
						}
						nodes = append(nodes, m)
					}
					out := map[string]any{"epoch": r.Epoch, "answered_by": r.AnsweredBy, "nodes": nodes, "keyspaces": keyspacesJSON(r.Keyspaces)}
					if rb, err := a.RebalanceStatus(ctx, &api.RebalanceStatusRequest{}); err == nil {
						out["rebalance"] = rebalanceJSON(rb)
					}
					return g.printJSON(out)
				}
				w := tabwriter.NewWriter(g.out, 0, 4, 2, ' ', 0)
				fmt.Fprintf(w, "NODE\tADDR\tREGION\tSTATE\tPRIMARIES\tREPLICAS\tUPTIME\tDATA\n")
				for _, n := range r.Nodes {
					uptime, data := "-", "-"
					if n.Info != nil {
						uptime = fmt.Sprintf("%ds", n.Info.UptimeMs/1000)
						data = fmt.Sprintf("%.1f MiB", float64(n.Info.LsmBytes+n.Info.VlogBytes)/(1<<20))
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\n", n.Node.Id, n.Node.Addr, n.Node.Region, n.State, n.Primaries, n.Replicas, uptime, data)
				}
				fmt.Fprintf(w, "\nepoch %d, answered by %s\n", r.Epoch, r.AnsweredBy)
				if err := w.Flush(); err != nil {
					return err
				}
				for _, n := range r.Nodes {
					if n.Error != "" {
						fmt.Fprintf(g.out, "%s is down: %s\n", n.Node.Id, n.Error)
					}
				}
				// A rebalancing in progress is part of the cluster's state.
				if rb, err := a.RebalanceStatus(ctx, &api.RebalanceStatusRequest{}); err == nil && (!rb.GetComplete() || len(rb.GetLeaving()) > 0) {
					fmt.Fprintf(g.out, "rebalancing: %s", rebalanceProgress(rb))
					if len(rb.GetLeaving()) > 0 {
						fmt.Fprintf(g.out, "; draining %s", strings.Join(rb.GetLeaving(), ", "))
					}
					fmt.Fprintln(g.out, " (kvctl rebalance status)")
				}
				return nil
			})
		},
	}
	status.Flags().BoolVar(&check, "check", false, "exit 1 when any node is not up")
	cmd.AddCommand(status)
	return cmd
}

// errNodesDown is cluster status --check's failure.
var errNodesDown = errors.New("cluster check failed")

// checkNodesUp fails when any node is not up, naming them.
func checkNodesUp(nodes []*api.NodeStatus) error {
	var down []string
	for _, n := range nodes {
		if n.State != "up" {
			down = append(down, fmt.Sprintf("%s (%s)", n.Node.Id, n.State))
		}
	}
	if len(down) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %d of %d nodes not up: %s", errNodesDown, len(down), len(nodes), strings.Join(down, ", "))
}

func keyspacesJSON(ks []*api.Keyspace) []map[string]any {
	out := make([]map[string]any, 0, len(ks))
	for _, k := range ks {
		m := map[string]any{"name": k.Name, "mode": k.Mode, "replicas": k.Replicas, "partitions": k.Partitions,
			"template": k.Template, "default_level": k.DefaultLevel}
		if k.Resolve != "" {
			m["resolve"] = k.Resolve
		}
		if k.Mode == string(consistency.AP) {
			m["max_siblings"] = wire.KeyspaceFromProto(k).SiblingCap()
		}
		if len(k.Ranges) > 0 {
			var rs []string
			for _, r := range k.Ranges {
				rs = append(rs, fmt.Sprintf("%d-%d:%d", r.Lo, r.Hi, r.Partition))
			}
			m["ranges"] = strings.Join(rs, ",")
		}
		if len(k.Grants) > 0 {
			var gs []string
			for _, gr := range k.Grants {
				gs = append(gs, wire.GrantFromProto(gr).String())
			}
			m["grants"] = strings.Join(gs, " ")
		}
		out = append(out, m)
	}
	return out
}

func keyspaceCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "keyspace", Aliases: []string{"keyspaces", "ks"}, Short: "keyspace administration"}
	fetch := func() (ks []*api.Keyspace, err error) {
		err = g.withAdmin(func(ctx context.Context, a api.AdminClient) error {
			r, err := a.Keyspaces(ctx, &api.KeyspacesRequest{})
			if err != nil {
				return kverrors.FromStatus(err)
			}
			ks = r.Keyspaces
			return nil
		})
		return ks, err
	}
	cmd.AddCommand(createKeyspaceCmd(g), dropKeyspaceCmd(g), grantKeyspaceCmd(g, false), grantKeyspaceCmd(g, true))
	cmd.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "list keyspaces with their mode",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			ks, err := fetch()
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(keyspacesJSON(ks))
			}
			w := tabwriter.NewWriter(g.out, 0, 4, 2, ' ', 0)
			fmt.Fprintf(w, "NAME\tMODE\tREPLICAS\tPARTITIONS\tDEFAULT LEVEL\tTEMPLATE\n")
			for _, k := range ks {
				fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%s\t%s\n", k.Name, k.Mode, k.Replicas, k.Partitions, k.DefaultLevel, k.Template)
			}
			return w.Flush()
		},
	}, &cobra.Command{
		Use:   "describe NAME",
		Short: "show one keyspace's configuration",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ks, err := fetch()
			if err != nil {
				return err
			}
			for _, k := range ks {
				if k.Name != args[0] {
					continue
				}
				m := keyspacesJSON([]*api.Keyspace{k})[0]
				if g.json {
					return g.printJSON(m)
				}
				w := tabwriter.NewWriter(g.out, 0, 4, 2, ' ', 0)
				for _, f := range []string{"name", "mode", "replicas", "partitions", "template", "default_level", "resolve", "max_siblings", "ranges", "grants"} {
					if v, ok := m[f]; ok {
						fmt.Fprintf(w, "%s\t%v\n", f, v)
					}
				}
				return w.Flush()
			}
			var names []string
			for _, k := range ks {
				names = append(names, k.Name)
			}
			return fmt.Errorf("%w: %q (keyspaces: %s)", kverrors.ErrUnknownKeyspace, args[0], strings.Join(names, ", "))
		},
	})
	return cmd
}

func createKeyspaceCmd(g *globals) *cobra.Command {
	var mode, template, ranges, level, resolve string
	var replicas, partitions, maxSiblings int
	cmd := &cobra.Command{
		Use:   "create NAME --mode cp|ap [--replicas N] [--partitions Q] [--template T]",
		Short: "create a keyspace at run time (every node and client learns it by epoch)",
		Long: `create adds a keyspace to the cluster map through the metadata group.

  --template 'orders/{region}/{customer}/...'   region pins replicas to nodes of
                                                that region; customer is hashed
  --ranges '0-999:0,1000-1999:1'                partition by numeric ID range instead

Creating a keyspace that exists with the same configuration succeeds. It
returns once the keyspace is usable through every node (cp: every partition
has a Raft leader). More replicas than any eligible set of nodes (the
cluster, or one region when the template names {region}) is refused.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := consistency.ParseMode(mode)
			if err != nil {
				return usageError{fmt.Errorf("--mode: %w", err)}
			}
			lvl, err := consistency.ParseLevel(level)
			if err != nil {
				return usageError{fmt.Errorf("--default-level: %w", err)}
			}
			// 0 would silently become the default: say so instead.
			if replicas < 1 {
				return usageError{fmt.Errorf("--replicas %d: must be at least 1 (default %d)", replicas, ring.DefaultReplicas)}
			}
			if partitions < 1 || partitions > ring.MaxPartitions {
				return usageError{fmt.Errorf("--partitions %d: must be in [1, %d] (default %d)", partitions, ring.MaxPartitions, ring.DefaultPartitions)}
			}
			ks := ring.KeyspaceConfig{Name: args[0], Mode: m, Replicas: replicas, Partitions: partitions,
				Template: template, DefaultLevel: lvl, Resolve: resolve, MaxSiblings: maxSiblings}
			if ranges != "" {
				if ks.Ranges, err = ring.ParseRanges(ranges); err != nil {
					return usageError{fmt.Errorf("--ranges: %w", err)}
				}
			}
			ks = ks.WithDefaults()
			if err := ks.Validate(); err != nil {
				return err
			}
			return g.withAdmin(func(ctx context.Context, a api.AdminClient) error {
				cm, err := a.CreateKeyspace(ctx, &api.CreateKeyspaceRequest{Keyspace: wire.KeyspaceToProto(&ks)})
				if err != nil {
					return kverrors.FromStatus(err)
				}
				if g.json {
					return g.printJSON(map[string]any{"keyspace": keyspacesJSON([]*api.Keyspace{wire.KeyspaceToProto(&ks)})[0], "epoch": cm.GetEpoch()})
				}
				fmt.Fprintf(g.out, "keyspace %s (%s, %d replicas, %d partitions, template %s) exists at epoch %d\n",
					ks.Name, ks.Mode, ks.Replicas, ks.Partitions, ks.Template, cm.GetEpoch())
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&mode, "mode", "", "cp (Raft, linearizable) or ap (leaderless, always writable)")
	cmd.Flags().IntVar(&replicas, "replicas", ring.DefaultReplicas, "replication factor")
	cmd.Flags().IntVar(&partitions, "partitions", ring.DefaultPartitions, "partitions per region")
	cmd.Flags().StringVar(&template, "template", "", "placement template (default NAME/...: hash the rest of the key)")
	cmd.Flags().StringVar(&ranges, "ranges", "", "ID ranges instead of hashing: lo-hi:partition,...")
	cmd.Flags().StringVar(&level, "default-level", "", "default consistency level (cp: linearizable|stale; ap: one|quorum|all)")
	cmd.Flags().StringVar(&resolve, "resolve", "", "ap conflict resolution: siblings (default) or lww")
	cmd.Flags().IntVar(&maxSiblings, "max-siblings", 0, fmt.Sprintf("ap: concurrent values a key may keep; a write that would add one more is refused (0: %d)", ring.DefaultMaxSiblings))
	return cmd
}

// grantKeyspaceCmd is keyspace grant, or with revoke keyspace revoke.
func grantKeyspaceCmd(g *globals, revoke bool) *cobra.Command {
	var who string
	var gr ring.Grant
	cmd := &cobra.Command{
		Use:   "grant NAME --to IDENTITY [--read] [--write] [--admin]",
		Short: "give a client identity permissions on a keyspace (added to those it has)",
		Long: `grant gives the client identity (the common name of its certificate) read
(get, scan, watch), write (put, delete, cas) and/or admin (grant, revoke, drop)
on a keyspace. Grants apply on nodes started with --client-cert-auth: a
keyspace without grants is open to every client with a valid certificate; once
it has one, only the identities granted (and kvd's --admin-identities) may use
it. It returns once every reachable node has the new grants.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			gr.Identity = who
			if gr.Identity == "" {
				return usageError{fmt.Errorf("keyspace %s %s: name the identity with %s", cmd.Name(), args[0], map[bool]string{false: "--to", true: "--from"}[revoke])}
			}
			if !revoke && !gr.Read && !gr.Write && !gr.Admin {
				return usageError{fmt.Errorf("keyspace grant %s --to %s: give at least one of --read, --write, --admin", args[0], who)}
			}
			return g.withAdmin(func(ctx context.Context, a api.AdminClient) error {
				cm, err := a.GrantKeyspace(ctx, &api.GrantKeyspaceRequest{Keyspace: args[0], Grant: wire.GrantToProto(gr), Revoke: revoke})
				if err != nil {
					return kverrors.FromStatus(err)
				}
				var grants []string
				for _, k := range cm.GetKeyspaces() {
					if k.GetName() == args[0] {
						for _, x := range k.GetGrants() {
							grants = append(grants, wire.GrantFromProto(x).String())
						}
					}
				}
				if g.json {
					return g.printJSON(map[string]any{"keyspace": args[0], "grants": grants, "epoch": cm.GetEpoch()})
				}
				if len(grants) == 0 {
					grants = []string{"none (open to every authenticated client)"}
				}
				fmt.Fprintf(g.out, "keyspace %s grants: %s (epoch %d)\n", args[0], strings.Join(grants, " "), cm.GetEpoch())
				return nil
			})
		},
	}
	if revoke {
		cmd.Use = "revoke NAME --from IDENTITY"
		cmd.Short = "remove every permission of a client identity on a keyspace"
		cmd.Long = "revoke removes the identity's grant on the keyspace; it returns once every reachable node has the new grants."
		cmd.Flags().StringVar(&who, "from", "", "the identity (client certificate common name)")
		return cmd
	}
	cmd.Flags().StringVar(&who, "to", "", "the identity (client certificate common name)")
	cmd.Flags().BoolVar(&gr.Read, "read", false, "get, scan, watch")
	cmd.Flags().BoolVar(&gr.Write, "write", false, "put, delete, cas")
	cmd.Flags().BoolVar(&gr.Admin, "admin", false, "grant, revoke, drop")
	return cmd
}

func dropKeyspaceCmd(g *globals) *cobra.Command {
	var yes bool
	cmd := &cobra.Command{
		Use:   "drop NAME --yes",
		Short: "delete a keyspace and all its data from every node",
		Long: `drop removes a keyspace from the cluster map; every node then deletes its
data: every key of every partition, the Raft logs and snapshots of cp
partitions, and the hints held for ap replicas. It returns once every
reachable node has done so (a node that is down does it when it next adopts
the map). There is no undo: --yes is required.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if !yes {
				return usageError{fmt.Errorf("keyspace drop %s: refusing without --yes: it deletes keyspace %q and every key in it from every node "+
					"(all partitions, cp Raft logs and snapshots, ap hints), and cannot be undone", name, name)}
			}
			return g.withAdmin(func(ctx context.Context, a api.AdminClient) error {
				cm, err := a.DropKeyspace(ctx, &api.DropKeyspaceRequest{Name: name})
				if err != nil {
					return kverrors.FromStatus(err)
				}
				if g.json {
					return g.printJSON(map[string]any{"dropped": name, "epoch": cm.GetEpoch(), "nodes": len(cm.GetNodes())})
				}
				fmt.Fprintf(g.out, "keyspace %s dropped at epoch %d; its data is deleted on all %d nodes\n", name, cm.GetEpoch(), len(cm.GetNodes()))
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&yes, "yes", false, "confirm: delete the keyspace and all its data")
	return cmd
}

func repairCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "repair KEYSPACE",
		Short: "run Merkle anti-entropy now between the replicas of every partition of an ap keyspace",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withAdmin(func(ctx context.Context, a api.AdminClient) error {
				r, err := a.Repair(ctx, &api.RepairRequest{Keyspace: args[0]})
				if err != nil {
					return kverrors.FromStatus(err)
				}
				if g.json {
					return g.printJSON(map[string]any{"keyspace": args[0], "partitions": r.Partitions, "leaves_differing": r.LeavesDiffering,
						"keys_pulled": r.KeysPulled, "keys_pushed": r.KeysPushed, "tombstones_purged": r.TombstonesPurged, "millis": r.Millis})
				}
				fmt.Fprintf(g.out, "repaired %d partitions of %s in %dms: %d differing leaves, %d keys pulled, %d pushed, %d tombstones purged\n",
					r.Partitions, args[0], r.Millis, r.LeavesDiffering, r.KeysPulled, r.KeysPushed, r.TombstonesPurged)
				return nil
			})
		},
	}
}

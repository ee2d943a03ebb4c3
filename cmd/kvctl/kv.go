package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/capkv/capkv/client"
)

// readValue returns the value argument, or stdin when it is "-".
func (g *globals) readValue(arg string, maxBytes int64) ([]byte, error) {
	if arg != "-" {
		return []byte(arg), nil
	}
	b, err := io.ReadAll(io.LimitReader(g.in, maxBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read value from stdin: %w", err)
	}
	if int64(len(b)) > maxBytes {
		return nil, fmt.Errorf("%w: value from stdin exceeds %d bytes", client.ErrTooLarge, maxBytes)
	}
	return b, nil
}

// stdinLimit guards kvctl's memory; the server enforces the real limit.
const stdinLimit = 64 << 20

func putCmd(g *globals) *cobra.Command {
	var causal string
	cmd := &cobra.Command{
		Use:   "put KEY VALUE",
		Short: "write a key (VALUE '-' reads it from stdin)",
		Args:  exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			v, err := g.readValue(args[1], stdinLimit)
			if err != nil {
				return err
			}
			return g.withClient(func(ctx context.Context, c *client.Client, opts []client.Option) error {
				cx, err := decodeContext(causal)
				if err != nil {
					return err
				}
				res, err := c.Put(ctx, args[0], v, append(opts, client.WithContext(cx))...)
				if err != nil {
					return err
				}
				g.receipt(res.Receipt)
				if g.json {
					return g.printJSON(writeJSON(args[0], res))
				}
				fmt.Fprintln(g.out, "OK")
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&causal, "context", "", "ap: the context from 'get --json', so this write replaces the siblings that get saw (default: the context of a read made first)")
	return cmd
}

func decodeContext(s string) ([]byte, error) {
	if s == "" {
		return nil, nil
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, usageError{fmt.Errorf("--context: not base64 as 'get --json' prints it: %v", err)}
	}
	return b, nil
}

func getCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "get KEY",
		Short: "read a key and print its bare value",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withClient(func(ctx context.Context, c *client.Client, opts []client.Option) error {
				it, err := c.Get(ctx, args[0], opts...)
				if err != nil {
					return err
				}
				g.receipt(it.Receipt)
				if g.json {
					return g.printJSON(toJSONItem(*it, true))
				}
				if len(it.Siblings) > 1 {
					fmt.Fprintf(g.errOut, "kvctl: %s has %d concurrent values (siblings); this is the last writer's. 'get --json' shows all and the context to resolve them with 'put --context'\n",
						it.Key, len(it.Siblings))
				}
				_, err = g.out.Write(it.Value)
				if err == nil && isTerminalish(g.out) {
					fmt.Fprintln(g.out)
				}
				return err
			})
		},
	}
}

func delCmd(g *globals) *cobra.Command {
	var causal string
	cmd := &cobra.Command{
		Use:     "del KEY",
		Aliases: []string{"delete", "rm"},
		Short:   "delete a key",
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withClient(func(ctx context.Context, c *client.Client, opts []client.Option) error {
				cx, err := decodeContext(causal)
				if err != nil {
					return err
				}
				res, err := c.Delete(ctx, args[0], append(opts, client.WithContext(cx))...)
				if err != nil {
					return err
				}
				g.receipt(res.Receipt)
				// An ap delete removes what it saw; a value written
				// concurrently survives it (the receipt counts the live
				// values left), and then the key is not gone.
				left := res.Receipt.Siblings
				if g.json {
					return g.printJSON(map[string]any{"key": args[0], "existed": res.Existed, "deleted": res.Existed && left == 0,
						"values_left": left, "receipt": toJSONReceipt(res.Receipt)})
				}
				switch {
				case left > 0:
					fmt.Fprintf(g.out, "not deleted: %d concurrent value(s) remain, written without seeing what this delete saw ('get --json' shows them; 'del --context' deletes them)\n", left)
				case res.Existed:
					fmt.Fprintln(g.out, "deleted")
				default:
					fmt.Fprintln(g.out, "not found (nothing deleted)")
				}
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&causal, "context", "", "ap: the context from 'get --json', so the delete covers the siblings that get saw (default: the context of a read made first)")
	return cmd
}

func casCmd(g *globals) *cobra.Command {
	var expect, value string
	var expectVersion uint64
	var expectAbsent bool
	cmd := &cobra.Command{
		Use:   "cas KEY --expect OLD --value NEW",
		Short: "compare-and-set (cp keyspaces): write NEW only if the key holds OLD",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var cond client.Condition
			n := 0
			if cmd.Flags().Changed("expect") {
				cond, n = client.IfValue([]byte(expect)), n+1
			}
			if cmd.Flags().Changed("expect-version") {
				cond, n = client.IfVersion(expectVersion), n+1
			}
			if expectAbsent {
				cond, n = client.IfAbsent(), n+1
			}
			if n != 1 {
				return usageError{fmt.Errorf("cas needs exactly one of --expect, --expect-version, --expect-absent")}
			}
			if !cmd.Flags().Changed("value") {
				return usageError{fmt.Errorf("cas needs --value")}
			}
			v, err := g.readValue(value, stdinLimit)
			if err != nil {
				return err
			}
			return g.withClient(func(ctx context.Context, c *client.Client, opts []client.Option) error {
				res, err := c.CAS(ctx, args[0], cond, v, opts...)
				if err != nil {
					return err
				}
				g.receipt(res.Receipt)
				if g.json {
					return g.printJSON(writeJSON(args[0], res))
				}
				fmt.Fprintln(g.out, "OK")
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&expect, "expect", "", "expected current value")
	cmd.Flags().Uint64Var(&expectVersion, "expect-version", 0, "expected current version (0: key absent)")
	cmd.Flags().BoolVar(&expectAbsent, "expect-absent", false, "expect the key not to exist")
	cmd.Flags().StringVar(&value, "value", "", "new value ('-' reads it from stdin)")
	return cmd
}

func scanCmd(g *globals) *cobra.Command {
	var limit int
	var keysOnly bool
	cmd := &cobra.Command{
		Use:   "scan PREFIX",
		Short: "list keys with a prefix (which starts with a keyspace name), in key order",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withClient(func(ctx context.Context, c *client.Client, opts []client.Option) error {
				items, err := c.Scan(ctx, args[0], append(opts, client.WithLimit(limit))...)
				if err != nil {
					return err
				}
				if g.json {
					out := make([]jsonItem, 0, len(items))
					for _, it := range items {
						out = append(out, toJSONItem(it, false))
					}
					res := map[string]any{"prefix": args[0], "count": len(items), "items": out}
					if len(items) > 0 {
						res["receipt"] = toJSONReceipt(items[0].Receipt)
					}
					return g.printJSON(res)
				}
				if len(items) > 0 {
					g.receipt(items[0].Receipt)
				}
				for _, it := range items {
					if keysOnly {
						fmt.Fprintln(g.out, it.Key)
					} else {
						fmt.Fprintf(g.out, "%s\t%s\n", it.Key, printable(it.Value))
					}
				}
				return nil
			})
		},
	}
	cmd.Flags().IntVar(&limit, "limit", 0, "at most this many keys (0: all)")
	cmd.Flags().BoolVar(&keysOnly, "keys-only", false, "print keys only")
	return cmd
}

// writeJSON is what --json prints for an acknowledged put or cas.
func writeJSON(key string, res *client.WriteResult) map[string]any {
	return map[string]any{"key": key, "version": res.Version, "timestamp": res.Timestamp.String(), "receipt": toJSONReceipt(res.Receipt)}
}

// watchSummaryEvery is how often kvctl watch sums up streams that keep
// failing to reopen, instead of a line per attempt.
const watchSummaryEvery = 10 * time.Second

func watchCmd(g *globals) *cobra.Command {
	var count int
	var dur, giveUp time.Duration
	cmd := &cobra.Command{
		Use:   "watch PREFIX",
		Short: "print changes to keys with a prefix as they are applied (Ctrl-C stops)",
		Long: `watch streams every change to keys with PREFIX (which starts with a keyspace
name) from a replica of each partition of the keyspace, one line per change:

  PUT accounts/eu/42/balance 150
  DELETE accounts/eu/42/note

With --json each change is one JSON object per line, with its revision (cp:
the Raft log index; ap: the HLC of the newest write), partition, serving
replica and, for ap keys, the number of siblings. Changes made before the
watch starts are not replayed. When a partition's stream breaks (its replica
went down, a partition), watch reopens it on another replica with backoff
and says on stderr that changes in between may be missing; attempts that keep
failing are summed up every 10s. When no partition's stream could be opened
for --give-up (the cluster is stopped), watch says so and exits 1.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, cancel, c, _, err := g.connect()
			if err != nil {
				return err
			}
			cancel() // --timeout bounds connecting, not the watch
			defer c.Close()
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if dur > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, dur)
				defer cancel()
			}
			events, err := c.Watch(ctx, args[0], client.WatchGiveUpAfter(giveUp))
			if err != nil {
				return err
			}
			fmt.Fprintf(g.errOut, "watching %s (Ctrl-C stops)\n", args[0])
			enc := json.NewEncoder(g.out)
			seen := 0
			retrying := map[string]bool{} // partitions failing to reopen since the last summary
			retries, lastSummary := 0, time.Now()
			var lastErr error
			for e := range events {
				if e.Kind == client.WatchGap {
					switch {
					case e.Partition == "": // the watch gave up
						return e.Err
					case e.Attempts <= 1:
						fmt.Fprintf(g.errOut, "watch: %v; reopening, changes in between may be missing\n", e.Err)
					default:
						retrying[e.Partition], retries, lastErr = true, retries+1, e.Err
					}
					if retries > 0 && time.Since(lastSummary) >= watchSummaryEvery {
						fmt.Fprintf(g.errOut, "watch: %d partition stream(s) still reopening: %d failed attempts in %s, retrying with backoff (--give-up %s with none open); last: %v\n",
							len(retrying), retries, time.Since(lastSummary).Round(time.Second), giveUp, lastErr)
						clear(retrying)
						retries, lastSummary = 0, time.Now()
					}
					continue
				}
				if g.json {
					j := map[string]any{"kind": e.Kind.String(), "key": e.Key, "revision": e.Revision,
						"timestamp": e.Timestamp.String(), "partition": e.Partition, "served_by": e.ServedBy}
					if e.Kind == client.WatchPut {
						j["value"] = printable(e.Value)
					}
					if e.Siblings > 1 {
						j["siblings"] = e.Siblings
					}
					if err := enc.Encode(j); err != nil {
						return err
					}
				} else if e.Kind == client.WatchPut {
					fmt.Fprintf(g.out, "PUT %s %s\n", e.Key, printable(e.Value))
				} else {
					fmt.Fprintf(g.out, "DELETE %s\n", e.Key)
				}
				if seen++; count > 0 && seen >= count {
					return nil
				}
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&count, "count", 0, "exit after this many changes (0: run until Ctrl-C)")
	cmd.Flags().DurationVar(&dur, "for", 0, "exit after this long (0: run until Ctrl-C)")
	cmd.Flags().DurationVar(&giveUp, "give-up", 30*time.Second, "exit 1 when no partition's stream could be opened for this long (0: retry forever)")
	return cmd
}

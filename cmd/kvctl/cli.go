package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/capkv/capkv/client"
	"github.com/capkv/capkv/internal/buildinfo"
)

// rootLong is the root help: what the environment and exit codes mean.
const rootLong = `kvctl reads and writes capkv keys and administers the cluster.

Every global flag can also be set in the environment, as CAPKV_ and the
flag's name in capitals: CAPKV_ENDPOINTS, CAPKV_CONSISTENCY, CAPKV_TIMEOUT,
CAPKV_JSON, CAPKV_VERBOSE, CAPKV_CACERT, CAPKV_CERT, CAPKV_KEY. A flag given
on the command line wins.

Exit status: 0 on success, 1 when the operation failed, 2 for a usage error
(unknown command or flag, bad flag value, wrong number of arguments).`

// envName is the environment variable of a global flag.
func envName(flag string) string {
	return "CAPKV_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// setupCLI finishes the command tree built by rootCmd: --version, global
// flags from the environment, usage errors (exit 2) for unknown commands
// and flags at every level, and shell completion.
func setupCLI(root *cobra.Command, g *globals) {
	root.Long = rootLong
	root.Version = buildinfo.Version()
	root.SetVersionTemplate("{{.Name}} {{.Version}}\n")
	// Parse the global flags given before the command at the root, so that
	// an unknown one is reported as such ("kvctl --bogus get x" would
	// otherwise take "get" as --bogus's value and "x" as the command).
	root.TraverseChildren = true
	root.PersistentFlags().VisitAll(func(f *pflag.Flag) {
		f.Usage += fmt.Sprintf(" (env %s)", envName(f.Name))
	})
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error { return g.prepare(cmd.Root()) }
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	walk(root, func(c *cobra.Command) {
		// A command that only groups others (cluster, keyspace, completion,
		// the root) runs to report a missing or unknown subcommand; cobra
		// would print its help and exit 0.
		if c.HasSubCommands() && !c.Runnable() {
			c.Args = cobra.ArbitraryArgs
			c.RunE = groupRun
		}
		// Wrong arguments are a usage error whichever check found them
		// (cobra.NoArgs and the like return plain errors).
		if check := c.Args; check != nil {
			c.Args = func(cmd *cobra.Command, args []string) error {
				err := check(cmd, args)
				if err != nil && !isUsage(err) {
					return usageError{err}
				}
				return err
			}
		}
	})
	registerCompletions(root, g)
}

func walk(c *cobra.Command, fn func(*cobra.Command)) {
	fn(c)
	for _, sub := range c.Commands() {
		walk(sub, fn)
	}
}

// isUsage reports whether err is a usage error: one of kvctl's, or a flag
// parsing error that cobra returned without its flag error hook (it skips
// the hook for global flags parsed before the command).
func isUsage(err error) bool {
	var (
		ue usageError
		ne *pflag.NotExistError
		re *pflag.ValueRequiredError
		ve *pflag.InvalidValueError
		se *pflag.InvalidSyntaxError
	)
	return errors.As(err, &ue) || errors.As(err, &ne) || errors.As(err, &re) || errors.As(err, &ve) || errors.As(err, &se)
}

// groupRun is the RunE of a command that only groups subcommands.
func groupRun(cmd *cobra.Command, args []string) error {
	var names []string
	for _, c := range cmd.Commands() {
		if c.IsAvailableCommand() {
			names = append(names, c.Name())
		}
	}
	sort.Strings(names)
	want := strings.Join(names, ", ")
	if len(args) == 0 {
		return usageError{fmt.Errorf("missing command for %q; want one of: %s (see '%s --help')", cmd.CommandPath(), want, cmd.CommandPath())}
	}
	msg := fmt.Sprintf("unknown command %q for %q; want one of: %s", args[0], cmd.CommandPath(), want)
	if cmd.SuggestionsMinimumDistance <= 0 {
		cmd.SuggestionsMinimumDistance = 2 // cobra's default, which it sets only on its own error path
	}
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		msg += fmt.Sprintf(" (did you mean %q?)", s[0])
	}
	return usageError{fmt.Errorf("%s", msg)}
}

// prepare runs before every command: global flags not given take their
// value from the environment, then the globals are checked.
func (g *globals) prepare(root *cobra.Command) error {
	if err := applyEnv(root); err != nil {
		return err
	}
	if g.timeout <= 0 {
		return usageError{fmt.Errorf("--timeout %s: must be positive, e.g. 5s", g.timeout)}
	}
	return nil
}

// applyEnv sets each global flag not given on the command line from its
// CAPKV_ variable, if set and not empty.
func applyEnv(root *cobra.Command) error {
	var err error
	root.PersistentFlags().VisitAll(func(f *pflag.Flag) {
		v, ok := os.LookupEnv(envName(f.Name))
		if !ok || v == "" || f.Changed || err != nil {
			return
		}
		if serr := f.Value.Set(v); serr != nil {
			err = usageError{fmt.Errorf("%s=%q (for --%s): %v", envName(f.Name), v, f.Name, serr)}
		}
	})
	return err
}

// Completion: keyspace names for the arguments that take one (and as the
// start of a key), fixed lists for the flags that take one of a few values.

var levelCompletions = []string{
	"linearizable\tcp: through the leader, never stale (cp default)",
	"stale\tcp: any replica, may be behind",
	"one\tap: one replica answers",
	"quorum\tap: a majority of replicas (ap default)",
	"all\tap: every replica",
}

func registerCompletions(root *cobra.Command, g *globals) {
	fixed := func(values ...string) cobra.CompletionFunc {
		return cobra.FixedCompletions(values, cobra.ShellCompDirectiveNoFileComp)
	}
	root.RegisterFlagCompletionFunc("consistency", fixed(levelCompletions...))
	keyspaces := func(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		names, err := g.keyspaceNames(cmd.Root())
		if err != nil {
			cobra.CompDebugln(err.Error(), false)
			return nil, cobra.ShellCompDirectiveError
		}
		return names, cobra.ShellCompDirectiveNoFileComp
	}
	// A key starts with its keyspace's name and a slash.
	keys := func(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		names, err := g.keyspaceNames(cmd.Root())
		if err != nil {
			cobra.CompDebugln(err.Error(), false)
			return nil, cobra.ShellCompDirectiveError
		}
		for i := range names {
			names[i] += "/"
		}
		return names, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveNoSpace
	}
	walk(root, func(c *cobra.Command) {
		switch c.CommandPath() {
		case "kvctl keyspace describe", "kvctl ring", "kvctl repair":
			c.ValidArgsFunction = keyspaces
		case "kvctl put", "kvctl get", "kvctl del", "kvctl cas", "kvctl scan", "kvctl locate", "kvctl watch":
			c.ValidArgsFunction = keys
		case "kvctl bench":
			c.RegisterFlagCompletionFunc("workload", fixed("write\tputs only", "read\tgets only, keys preloaded", "mixed\t50/50 puts and gets"))
			c.RegisterFlagCompletionFunc("dist", fixed("uniform\tevery key equally likely", "zipfian\ta few hot keys"))
			c.RegisterFlagCompletionFunc("key-format", fixed("accounts/eu/%d/bench", "sessions/%d"))
		case "kvctl keyspace create":
			if c.Flags().Lookup("mode") != nil {
				c.RegisterFlagCompletionFunc("mode", fixed("cp\tRaft, linearizable", "ap\tleaderless, always writable"))
			}
			if c.Flags().Lookup("default-level") != nil {
				c.RegisterFlagCompletionFunc("default-level", fixed(levelCompletions...))
			}
			if c.Flags().Lookup("resolve") != nil {
				c.RegisterFlagCompletionFunc("resolve", fixed("siblings\tkeep concurrent writes", "lww\tlast writer wins"))
			}
		}
	})
}

// keyspaceNames asks the cluster for its keyspaces, within a short bound
// so that a shell's completion never hangs on a cluster that is down.
func (g *globals) keyspaceNames(root *cobra.Command) ([]string, error) {
	if err := applyEnv(root); err != nil { // completion does not run prepare
		return nil, err
	}
	eps, err := g.endpointList()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), min(g.timeout, 2*time.Second))
	defer cancel()
	tc, err := g.tlsConfig()
	if err != nil {
		return nil, err
	}
	c, err := client.New(ctx, client.Config{Endpoints: eps, DialTimeout: 2 * time.Second, TLS: tc})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	var names []string
	for _, k := range c.Ring().Keyspaces() {
		names = append(names, k.Name)
	}
	sort.Strings(names)
	return names, nil
}

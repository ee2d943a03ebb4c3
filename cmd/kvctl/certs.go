package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/capkv/capkv/internal/certs"
)

// certsCmd makes a cluster's certificates: a CA, then one certificate per
// node and per client identity, all in one directory.
func certsCmd(g *globals) *cobra.Command {
	var dir string
	var lifetime time.Duration
	cmd := &cobra.Command{
		Use:   "certs",
		Short: "make a CA and the node and client certificates for mutual TLS",
		Long: `Make the certificates a cluster runs mutual TLS with (ECDSA P-256, PEM files; keys 0600).

  kvctl certs init --dir certs
  kvctl certs node --dir certs --id n1 --host 10.0.0.1,n1.example.com
  kvctl certs client --dir certs --name alice

Then start each node with --cert-file certs/n1.crt --key-file certs/n1.key
--trusted-ca-file certs/ca.crt --client-cert-auth, and use kvctl with
--cacert certs/ca.crt --cert certs/alice.crt --key certs/alice.key.
Existing files are never overwritten.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return usageError{fmt.Errorf("certs: name a subcommand: init, node or client")}
		},
	}
	cmd.PersistentFlags().StringVar(&dir, "dir", "certs", "directory of the CA and the certificates")
	cmd.PersistentFlags().DurationVar(&lifetime, "lifetime", 0, "validity of the certificate (default: 10 years for the CA, 1 year otherwise)")
	checkLifetime := func() error {
		if lifetime < 0 {
			return usageError{fmt.Errorf("--lifetime %s: want a positive duration", lifetime)}
		}
		return nil
	}
	wrote := func(what string, p certs.Paths) {
		fmt.Fprintf(g.out, "%s: %s\n%s key: %s\n", what, p.Cert, what, p.Key)
	}

	initCmd := &cobra.Command{
		Use:   "init",
		Short: "create the cluster's certificate authority (ca.crt, ca.key)",
		Args:  exactArgs(0),
		RunE: func(*cobra.Command, []string) error {
			if err := checkLifetime(); err != nil {
				return err
			}
			p, err := certs.InitCA(dir, "", lifetime)
			if err != nil {
				return err
			}
			wrote("CA certificate", p)
			fmt.Fprintf(g.out, "keep %s secret; next: kvctl certs node --dir %s --id ID --host ADDR\n", p.Key, dir)
			return nil
		},
	}

	var id, hosts string
	nodeCmd := &cobra.Command{
		Use:   "node --id ID --host HOST[,HOST...]",
		Short: "issue a node certificate (server and client use) with the given host names and addresses",
		Args:  exactArgs(0),
		RunE: func(*cobra.Command, []string) error {
			if err := checkLifetime(); err != nil {
				return err
			}
			if id == "" {
				return usageError{fmt.Errorf("certs node: --id is required (the node's --id)")}
			}
			p, err := certs.Issue(dir, certs.Request{Kind: certs.Node, Name: id, Hosts: splitList(hosts), Lifetime: lifetime})
			if err != nil {
				return err
			}
			wrote("node certificate", p)
			fmt.Fprintf(g.out, "kvd flags: --cert-file %s --key-file %s --trusted-ca-file %s --client-cert-auth\n",
				p.Cert, p.Key, filepath.Join(dir, certs.CACert))
			return nil
		},
	}
	nodeCmd.Flags().StringVar(&id, "id", "", "node ID (the certificate's common name)")
	nodeCmd.Flags().StringVar(&hosts, "host", "", "comma-separated DNS names and IP addresses the node is reached at")

	var name string
	clientCmd := &cobra.Command{
		Use:   "client --name NAME",
		Short: "issue a client certificate; its common name is the identity keyspace grants name",
		Args:  exactArgs(0),
		RunE: func(*cobra.Command, []string) error {
			if err := checkLifetime(); err != nil {
				return err
			}
			if name == "" {
				return usageError{fmt.Errorf("certs client: --name is required")}
			}
			p, err := certs.Issue(dir, certs.Request{Kind: certs.Client, Name: name, Lifetime: lifetime})
			if err != nil {
				return err
			}
			wrote("client certificate", p)
			fmt.Fprintf(g.out, "kvctl flags: --cacert %s --cert %s --key %s\n", filepath.Join(dir, certs.CACert), p.Cert, p.Key)
			return nil
		},
	}
	clientCmd.Flags().StringVar(&name, "name", "", "client identity (the certificate's common name)")

	cmd.AddCommand(initCmd, nodeCmd, clientCmd)
	return cmd
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

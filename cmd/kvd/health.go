package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/internal/kverrors"
)

// healthCmd is a readiness probe built into the server binary, so that a
// FROM-scratch image (no shell, no curl) can run it as its healthcheck.
func healthCmd() *cobra.Command {
	var addr string
	var timeout time.Duration
	var ts tlsSettings
	cmd := &cobra.Command{
		Use:   "health",
		Short: "exit 0 when the node at --addr serves and has the cluster map (a container healthcheck)",
		Long: `kvd health asks the node at --addr for its info, which it answers only once it
serves and follows the cluster map. It prints one line and exits 0 when the
node is ready, 1 (with the reason on stderr) when it is not or does not
answer within --timeout. A node with TLS is asked over TLS with the node's own
--cert-file, --key-file and --trusted-ca-file.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if timeout <= 0 {
				return fmt.Errorf("--timeout %s: want > 0", timeout)
			}
			ts.MinVersion = "1.2"
			sec, err := ts.security()
			if err != nil {
				return err
			}
			cc, err := sec.Conn(addr)
			if err != nil {
				return fmt.Errorf("health of %s: %w", addr, err)
			}
			defer cc.Close()
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			info, err := api.NewAdminClient(cc).GetNodeInfo(ctx, &api.NodeInfoRequest{})
			if err != nil {
				return fmt.Errorf("%s is not ready (within --timeout %s): %w", addr, timeout, kverrors.FromStatus(err))
			}
			fmt.Fprintf(cmd.OutOrStdout(), "ok: %s (%s, region %s) serves, cluster map epoch %d, up %s\n",
				info.GetId(), addr, info.GetRegion(), info.GetEpoch(), (time.Duration(info.GetUptimeMs()) * time.Millisecond).Round(time.Second))
			return nil
		},
	}
	cmd.Flags().StringVar(&addr, "addr", "127.0.0.1:7001", "the node's gRPC address")
	cmd.Flags().DurationVar(&timeout, "timeout", 2*time.Second, "how long to wait for the answer")
	cmd.Flags().StringVar(&ts.CertFile, "cert-file", "", "TLS: the node's certificate, presented to it (turns TLS on)")
	cmd.Flags().StringVar(&ts.KeyFile, "key-file", "", "TLS: the key of --cert-file")
	cmd.Flags().StringVar(&ts.TrustedCAFile, "trusted-ca-file", "", "TLS: CA bundle the node's certificate is verified with")
	return cmd
}

package e2e

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/internal/certs"
	"github.com/capkv/capkv/internal/kverrors"
)

// grpcAs is a raw connection to addr with name's certificate: it talks to
// that node only (the Go client and kvctl would route to the owner).
func grpcAs(t *testing.T, p testPKI, name, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(p.clientTLS(t, name))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// Per-keyspace grants on a mutual-TLS cluster: identities are certificate
// names, the check holds through forwarding (requests sent to a node that
// holds no replica), grant and revoke apply at once, a node certificate
// used as a client has no more rights than its name's grants, and with
// --test-faults the fault hook is still for nodes only.
func TestTLSKeyspaceGrants(t *testing.T) {
	p := newTestPKI(t)
	for _, name := range []string{"bob", "carol", "root"} {
		p.issue(t, certs.Request{Kind: certs.Client, Name: name})
	}
	cl := startTLSCluster(t, p, 3, "--admin-identities", "root", "--test-faults")
	eps := cl.endpoints()
	as := func(name string, args ...string) (string, string, int) {
		t.Helper()
		return kvctl(t, eps, "", append(append(p.kvctlFlags(name), "--timeout", "10s"), args...)...)
	}
	mustOK := func(name string, args ...string) string {
		t.Helper()
		out, errOut, code := as(name, args...)
		if code != 0 {
			t.Fatalf("kvctl %v as %s: exit %d, %q %q", args, name, code, out, errOut)
		}
		if args[0] == "keyspace" {
			t.Logf("kvctl %s as %s:\n%s", strings.Join(args, " "), name, out)
		}
		return out
	}
	mustDeny := func(name, want string, args ...string) {
		t.Helper()
		out, errOut, code := as(name, args...)
		if code != 1 || !strings.Contains(errOut, "permission denied: "+want) {
			t.Fatalf("kvctl %v as %s: exit %d, %q %q; want exit 1 saying %q", args, name, code, out, errOut, want)
		}
		t.Logf("as %s: %s", name, strings.TrimSpace(errOut))
	}

	// Only the cluster admin creates keyspaces. One replica each, so that
	// two of the three nodes hold none and must forward.
	mustDeny("bob", `identity "bob" may not create keyspace "ledger": only the cluster admin identities may (root)`,
		"keyspace", "create", "ledger", "--mode", "cp", "--replicas", "1", "--partitions", "1")
	for _, ks := range []string{"ledger:cp", "notes:ap"} {
		name, mode, _ := strings.Cut(ks, ":")
		mustOK("root", "keyspace", "create", name, "--mode", mode, "--replicas", "1", "--partitions", "1")
	}
	// A keyspace without grants is open to every authenticated client.
	mustOK("bob", "put", "ledger/open", "1")
	mustOK("root", "keyspace", "grant", "ledger", "--to", "alice", "--read", "--write")
	mustOK("root", "keyspace", "grant", "ledger", "--to", "carol", "--read")
	mustOK("root", "keyspace", "grant", "notes", "--to", "alice", "--read", "--write")
	if out := mustOK("root", "keyspace", "describe", "ledger"); !strings.Contains(out, "grants") || !strings.Contains(out, "alice=read,write carol=read") {
		t.Fatalf("describe ledger: %q", out)
	}
	if _, _, code := as("alice", "keyspace", "grant", "ledger", "--to", "alice", "--admin"); code != 1 {
		t.Fatal("alice (no admin grant) changed ledger's grants")
	}

	mustOK("alice", "put", "ledger/a", "1")
	if out := mustOK("alice", "get", "ledger/a"); strings.TrimSpace(out) != "1" {
		t.Fatalf("alice get ledger/a: %q", out)
	}
	mustDeny("bob", `identity "bob" has no write grant on keyspace "ledger" (grants: alice=read,write carol=read)`, "put", "ledger/a", "2")
	mustDeny("bob", `identity "bob" has no read grant on keyspace "ledger"`, "get", "ledger/a")
	mustDeny("bob", `identity "bob" has no read grant on keyspace "ledger"`, "scan", "ledger/")
	if out := mustOK("carol", "get", "ledger/a"); strings.TrimSpace(out) != "1" {
		t.Fatalf("carol get ledger/a: %q", out)
	}
	mustDeny("carol", `identity "carol" has no write grant on keyspace "ledger"`, "put", "ledger/a", "3")
	mustDeny("alice", `identity "alice" has no admin grant on keyspace "ledger"`, "keyspace", "drop", "ledger", "--yes")
	// kvctl watch reports the refusal and ends at once (retrying cannot
	// help): the default --give-up is 30 s, the kvctl timeout 10 s.
	if _, errOut, code := as("bob", "watch", "ledger/"); code != 1 || !strings.Contains(errOut, `kvctl: watch ledger/: permission denied: identity "bob" has no read grant on keyspace "ledger"`) {
		t.Fatalf("kvctl watch as bob: exit %d, %q", code, errOut)
	} else {
		t.Logf("kvctl watch as bob:\n%s", errOut)
	}
	// Keyspaces without grants stay open.
	mustOK("bob", "put", "accounts/eu/1/x", "1")

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// Send requests to a node that holds no replica: it forwards them, and
	// the owner checks the caller's identity, not the forwarding node's.
	for _, key := range []string{"ledger/fwd", "notes/fwd"} {
		loc, err := api.NewAdminClient(grpcAs(t, p, "root", eps[0])).Locate(ctx, &api.LocateRequest{Key: key})
		if err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(cl.procs, func(pr *proc) bool { return !slices.Contains(loc.GetReplicas(), pr.id) })
		other := cl.procs[i]
		kv := func(name string) api.KVClient { return api.NewKVClient(grpcAs(t, p, name, other.addr)) }
		put, err := kv("alice").Put(ctx, &api.PutRequest{Key: key, Value: []byte("v")})
		if err != nil || !put.GetReceipt().GetForwarded() {
			t.Fatalf("alice put %s via %s (replicas %v): %v, receipt %v", key, other.id, loc.GetReplicas(), err, put.GetReceipt())
		}
		get, err := kv("alice").Get(ctx, &api.GetRequest{Key: key})
		if err != nil || string(get.GetKv().GetValue()) != "v" || !get.GetReceipt().GetForwarded() {
			t.Fatalf("alice get %s via %s: %v, %v", key, other.id, get, err)
		}
		// An identity in a client's header is not believed: bob stays bob.
		_, err = kv("bob").Put(ctx, &api.PutRequest{Header: &api.RequestHeader{Identity: "alice"}, Key: key, Value: []byte("x")})
		if err = kverrors.FromStatus(err); !errors.Is(err, kverrors.ErrPermissionDenied) || !strings.Contains(err.Error(), `identity "bob" has no write grant`) {
			t.Fatalf("bob claiming alice, put %s via %s: %v", key, other.id, err)
		}
		// A node certificate used as a client is its name's identity.
		_, err = kv("node").Put(ctx, &api.PutRequest{Key: key, Value: []byte("x")})
		if err = kverrors.FromStatus(err); !errors.Is(err, kverrors.ErrPermissionDenied) || !strings.Contains(err.Error(), `identity "node" has no write grant`) {
			t.Fatalf("node certificate as a client, put %s via %s: %v", key, other.id, err)
		}
		t.Logf("node certificate as a client via %s: %v", other.id, err)
		// Watch is checked on the replica that serves it.
		ws, err := api.NewKVClient(grpcAs(t, p, "bob", loc.GetOwnerAddr())).Watch(ctx, &api.WatchRequest{Prefix: key, Partition: loc.GetPartition()})
		if err == nil {
			_, err = ws.Recv()
		}
		if err = kverrors.FromStatus(err); !errors.Is(err, kverrors.ErrPermissionDenied) || !strings.Contains(err.Error(), `identity "bob" has no read grant`) {
			t.Fatalf("bob watch %s: %v", key, err)
		}
	}

	// Grant and revoke apply without a restart.
	mustOK("root", "keyspace", "revoke", "ledger", "--from", "alice")
	mustDeny("alice", `identity "alice" has no write grant on keyspace "ledger" (grants: carol=read)`, "put", "ledger/a", "4")
	mustOK("root", "keyspace", "grant", "ledger", "--to", "bob", "--write")
	mustOK("bob", "put", "ledger/a", "5")
	if out := mustOK("carol", "get", "ledger/a"); strings.TrimSpace(out) != "5" {
		t.Fatalf("carol get ledger/a after bob's put: %q", out)
	}

	// --test-faults is on, and the fault hook still refuses a client.
	_, err := api.NewAdminClient(grpcAs(t, p, "root", eps[0])).SetFaults(ctx, &api.SetFaultsRequest{})
	if err = kverrors.FromStatus(err); !errors.Is(err, kverrors.ErrPermissionDenied) || !strings.Contains(err.Error(), "is for nodes only") {
		t.Fatalf("SetFaults as the cluster admin client: %v", err)
	}
	if _, err := api.NewAdminClient(grpcAs(t, p, "node", eps[0])).SetFaults(ctx, &api.SetFaultsRequest{}); err != nil {
		t.Fatalf("SetFaults as a node: %v", err)
	}
}

// Without --admin-identities anyone may create a keyspace, and grants may
// not lock a keyspace so that nobody could change them again.
func TestTLSGrantsWithoutClusterAdmins(t *testing.T) {
	p := newTestPKI(t)
	for _, name := range []string{"bob", "ops"} {
		p.issue(t, certs.Request{Kind: certs.Client, Name: name})
	}
	cl := startTLSCluster(t, p, 3)
	eps := cl.endpoints()
	as := func(name string, args ...string) (string, string, int) {
		t.Helper()
		return kvctl(t, eps, "", append(append(p.kvctlFlags(name), "--timeout", "10s"), args...)...)
	}
	if out, errOut, code := as("bob", "keyspace", "create", "ledger", "--mode", "cp"); code != 0 {
		t.Fatalf("bob creates ledger with no cluster admins: exit %d, %q %q", code, out, errOut)
	}
	for _, c := range []struct {
		who  string
		args []string
		want string // "" succeeds
	}{
		{"bob", []string{"grant", "ledger", "--to", "alice", "--read"}, `invalid argument: keyspace "ledger" would have grants (alice=read) but no identity with admin on it`},
		{"bob", []string{"grant", "ledger", "--to", "ops", "--admin"}, ""}, // an open keyspace: anyone may
		{"bob", []string{"grant", "ledger", "--to", "alice", "--read", "--write"}, `permission denied: identity "bob" has no admin grant on keyspace "ledger" (grants: ops=admin)`},
		{"ops", []string{"grant", "ledger", "--to", "alice", "--read", "--write"}, ""},
		{"ops", []string{"revoke", "ledger", "--from", "ops"}, `would have grants (alice=read,write) but no identity with admin on it`},
	} {
		out, errOut, code := as(c.who, append([]string{"keyspace"}, c.args...)...)
		switch {
		case c.want == "" && code != 0:
			t.Fatalf("%s: keyspace %v: exit %d, %q %q", c.who, c.args, code, out, errOut)
		case c.want != "" && (code != 1 || !strings.Contains(errOut, c.want)):
			t.Fatalf("%s: keyspace %v: exit %d, %q %q; want exit 1 saying %q", c.who, c.args, code, out, errOut, c.want)
		case c.want != "":
			t.Logf("%s: keyspace %s: %s", c.who, strings.Join(c.args, " "), strings.TrimSpace(errOut))
		}
	}
	if out, errOut, code := as("alice", "put", "ledger/a", "1"); code != 0 {
		t.Fatalf("alice put: exit %d, %q %q", code, out, errOut)
	}
}

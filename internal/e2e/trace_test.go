package e2e

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/internal/dial"
	"github.com/capkv/capkv/internal/trace"
)

// fetchTrace gathers a trace with kvctl trace --json.
func fetchTrace(t *testing.T, eps []string, id string) []trace.Span {
	t.Helper()
	out, errOut, code := kvctl(t, eps, "", "trace", "--json", id)
	if code != 0 {
		t.Logf("kvctl trace %s: exit %d: %s", id, code, errOut)
		return nil
	}
	var r struct {
		Spans []trace.Span `json:"spans"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("kvctl trace --json: %v\n%s", err, out)
	}
	return r.Spans
}

// under reports whether span d descends from span a.
func under(spans []trace.Span, d, a trace.Span) bool {
	byID := map[string]trace.Span{}
	for _, s := range spans {
		byID[s.SpanID] = s
	}
	for p, ok := byID[d.ParentID]; ok; p, ok = byID[p.ParentID] {
		if p.SpanID == a.SpanID {
			return true
		}
	}
	return false
}

func find(spans []trace.Span, f func(trace.Span) bool) []trace.Span {
	var out []trace.Span
	for _, s := range spans {
		if f(s) {
			out = append(out, s)
		}
	}
	return out
}

// An ap put at quorum sent to a node that is not a replica is one trace:
// the entry node's request span, under it the coordinator's (a replica),
// under that the other replicas' stores; a cp put's trace shows propose,
// replication to both followers and the apply; kvctl trace prints both.
func TestTraceFollowsRequestAcrossNodes(t *testing.T) {
	cl := startCluster(t, 4)
	eps := cl.endpoints()
	c := newClient(t, eps...)
	ctx := ctxT(t)

	const key = "sessions/traced-1"
	p, err := c.Locate(key)
	if err != nil {
		t.Fatal(err)
	}
	var entry *proc
	for _, pr := range cl.procs {
		if !slices.Contains(p.Replicas, pr.id) {
			entry = pr
		}
	}
	if entry == nil {
		t.Fatalf("every node replicates %s: %v", key, p.Replicas)
	}
	cc, err := dial.Conn(entry.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	tctx, id := trace.Force(ctx)
	resp, err := api.NewKVClient(cc).Put(tctx, &api.PutRequest{Key: key, Value: []byte("v"), Header: &api.RequestHeader{Consistency: "quorum"}})
	if err != nil {
		t.Fatalf("put via %s: %v", entry.id, err)
	}
	if resp.GetReceipt().GetTraceId() != id {
		t.Errorf("receipt trace ID %q, want %s", resp.GetReceipt().GetTraceId(), id)
	}
	coord := resp.GetReceipt().GetServedBy()
	var spans []trace.Span
	waitFor(t, 10*time.Second, "the ap trace with both other replicas' stores", func() bool {
		spans = fetchTrace(t, eps, id)
		return len(find(spans, func(s trace.Span) bool { return s.Name == "capkv.v1.Replica/Store" && s.Kind == "server" })) >= 2
	})
	nodes := map[string]bool{}
	for _, s := range spans {
		nodes[s.Node] = true
	}
	if len(nodes) < 3 {
		t.Fatalf("trace on %d nodes (%v), want at least 3", len(nodes), nodes)
	}
	top := find(spans, func(s trace.Span) bool {
		return s.Name == "capkv.v1.KV/Put" && s.Kind == "server" && s.Node == entry.id
	})
	mid := find(spans, func(s trace.Span) bool { return s.Name == "capkv.v1.KV/Put" && s.Kind == "server" && s.Node == coord })
	if len(top) != 1 || len(mid) != 1 || !under(spans, mid[0], top[0]) {
		t.Fatalf("entry %s -> coordinator %s not nested:\n%s", entry.id, coord, treeText(spans))
	}
	for _, s := range find(spans, func(s trace.Span) bool { return s.Name == "capkv.v1.Replica/Store" && s.Kind == "server" }) {
		if !slices.Contains(p.Replicas, s.Node) || s.Node == coord || !under(spans, s, mid[0]) {
			t.Fatalf("replica store on %s not under the coordinator %s:\n%s", s.Node, coord, treeText(spans))
		}
	}
	t.Logf("ap put via %s:\n%s", entry.id, treeText(spans))

	// cp: the client routes to the leader; the trace shows the rest.
	tctx, id = trace.Force(ctx)
	res, err := c.Put(tctx, "accounts/eu/9/balance", []byte("1"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Receipt.TraceID != id {
		t.Errorf("client receipt trace ID %q, want %s", res.Receipt.TraceID, id)
	}
	leader := res.Receipt.ServedBy
	waitFor(t, 10*time.Second, "the cp trace with every replica's apply", func() bool {
		spans = fetchTrace(t, eps, id)
		return len(find(spans, func(s trace.Span) bool { return s.Name == "cp.apply" })) >= 3
	})
	prop := find(spans, func(s trace.Span) bool { return s.Name == "cp.propose" && s.Node == leader })
	if len(prop) != 1 {
		t.Fatalf("no propose on the leader %s:\n%s", leader, treeText(spans))
	}
	to := map[string]bool{}
	for _, s := range find(spans, func(s trace.Span) bool { return s.Name == "cp.replicate" }) {
		if under(spans, s, prop[0]) {
			to[s.Attrs["capkv.node"]] = true
		}
	}
	appended := find(spans, func(s trace.Span) bool { return s.Name == "cp.append" && s.Node != leader && under(spans, s, prop[0]) })
	applied := find(spans, func(s trace.Span) bool { return s.Name == "cp.apply" && s.Node == leader && under(spans, s, prop[0]) })
	if len(to) != 2 || len(appended) != 2 || len(applied) != 1 {
		t.Fatalf("cp trace: replicated to %v, appended on %d followers, applied on the leader %d times; want 2, 2, 1:\n%s", to, len(appended), len(applied), treeText(spans))
	}
	out, _, code := kvctl(t, eps, "", "trace", id)
	if code != 0 || !strings.Contains(out, "cp.propose") || !strings.Contains(out, "└─ cp.apply") {
		t.Fatalf("kvctl trace: exit %d:\n%s", code, out)
	}
	t.Logf("kvctl trace %s:\n%s", id, out)
}

func treeText(spans []trace.Span) string {
	var b strings.Builder
	trace.PrintTree(&b, spans)
	return b.String()
}

package node_test

import (
	"context"
	"errors"
	"io"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/capkv/capkv/client"
	"github.com/capkv/capkv/internal/nodetest"
)

// scrape returns one node's metrics in Prometheus' text format.
func scrape(t *testing.T, cl *nodetest.Cluster, i int) string {
	t.Helper()
	srv := httptest.NewServer(cl.Nodes[i].MetricsHandler())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// sumOf adds the values of every sample of a series that has all of labels.
func sumOf(text, name string, labels ...string) (float64, int) {
	var sum float64
	n := 0
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, name+"{") {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(line, l)
		}
		if !ok {
			continue
		}
		fields := strings.Fields(line)
		if v, err := strconv.ParseFloat(fields[len(fields)-1], 64); err == nil {
			sum += v
			n++
		}
	}
	return sum, n
}

func TestMetrics(t *testing.T) {
	cl, err := nodetest.Start(nodetest.Options{Nodes: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.New(ctx, client.Config{Endpoints: cl.Endpoints()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for range 3 {
		if _, err := c.Put(ctx, "accounts/eu/1/balance", []byte("1")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Get(ctx, "accounts/eu/1/missing"); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("get missing: %v", err)
	}
	if _, err := c.Put(ctx, "sessions/m1", []byte("x"), client.WithConsistency("all")); err != nil {
		t.Fatal(err)
	}

	var all strings.Builder
	for i := range cl.Nodes {
		all.WriteString(scrape(t, cl, i))
	}
	text := all.String()
	check := func(name string, want float64, labels ...string) {
		t.Helper()
		got, n := sumOf(text, name, labels...)
		if n == 0 || got != want {
			t.Errorf("%s%v = %v over %d series, want %v", name, labels, got, n, want)
		}
	}
	// Requests by operation, keyspace, mode, level and outcome, summed over
	// the nodes (the client sends each request to one node; forwards are
	// counted where they arrive too, so count only the entry points).
	check("capkv_requests_total", 3, `op="Put"`, `keyspace="accounts"`, `mode="cp"`, `level="linearizable"`, `code="OK"`)
	check("capkv_requests_total", 1, `op="Get"`, `keyspace="accounts"`, `mode="cp"`, `code="NotFound"`)
	check("capkv_requests_total", 1, `op="Put"`, `keyspace="sessions"`, `mode="ap"`, `level="all"`, `code="OK"`)
	check("capkv_request_duration_seconds_count", 3, `op="Put"`, `mode="cp"`)
	// The keyspaces' modes, and each cp group's leader, on every node.
	check("capkv_keyspace_info", 3, `keyspace="accounts"`, `mode="cp"`)
	check("capkv_keyspace_info", 3, `keyspace="sessions"`, `mode="ap"`)
	p, err := c.Locate("accounts/eu/1/balance")
	if err != nil {
		t.Fatal(err)
	}
	check("capkv_cp_leader", 1, `partition="`+p.Partition.String()+`"`)
	check("capkv_peer_up", 6) // 3 nodes, each sees 2 peers up
	for _, id := range cl.IDs() {
		if !strings.Contains(text, `node="`+id+`"`) {
			t.Errorf("no series labelled node=%q", id)
		}
	}
}

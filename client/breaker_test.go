package client

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/capkv/capkv/internal/kverrors"
	"github.com/capkv/capkv/internal/nodetest"
)

func TestBreakerStates(t *testing.T) {
	now := time.Unix(0, 0)
	bs := newBreakers(3, time.Second, 4*time.Second)
	bs.now = func() time.Time { return now }
	down := status.Error(codes.Unavailable, "connection error: desc = \"transport: Error while dialing\"")
	const a = "10.0.0.1:7001"

	for i := range 3 {
		if !bs.allow(a) {
			t.Fatalf("call %d refused while closed", i)
		}
		bs.done(a, down, false)
	}
	if bs.state(a) != breakerOpen || bs.allow(a) {
		t.Fatalf("after 3 failures: %s, allow %t; want open and refusing", bs.state(a), bs.allow(a))
	}
	now = now.Add(time.Second)
	if !bs.allow(a) || bs.state(a) != breakerHalfOpen {
		t.Fatalf("after the cooldown: %s; want one trial (half-open)", bs.state(a))
	}
	if bs.allow(a) {
		t.Fatal("a second call went through while the trial is in flight")
	}
	bs.done(a, down, false) // trial failed: open for twice as long
	now = now.Add(1500 * time.Millisecond)
	if bs.allow(a) {
		t.Fatal("allowed before the doubled cooldown (2s) passed")
	}
	now = now.Add(time.Second)
	if !bs.allow(a) {
		t.Fatal("no trial after the doubled cooldown")
	}
	bs.done(a, down, false)
	now = now.Add(4 * time.Second) // capped at 4s, not 8s
	if !bs.allow(a) {
		t.Fatal("cooldown not capped at its maximum")
	}
	bs.done(a, nil, false) // the node answered: closed, cooldown reset
	if bs.state(a) != breakerClosed || !bs.allow(a) {
		t.Fatalf("after an answer: %s", bs.state(a))
	}
	for range 3 {
		bs.done(a, down, false)
	}
	now = now.Add(time.Second)
	if !bs.allow(a) {
		t.Fatal("cooldown was not reset to its base after the breaker closed")
	}
}

func TestBreakerCountsOnlyMissingAnswers(t *testing.T) {
	for _, c := range []struct {
		err     error
		expired bool
		want    int
	}{
		{nil, false, answered},
		{status.Error(codes.Unavailable, "connection error: desc = \"transport: Error while dialing: dial tcp: connect: connection refused\""), false, noAnswer},
		{status.Error(codes.Unavailable, "error reading from server: EOF"), false, noAnswer},
		// The node answered, with its own errors: not a node failure.
		{kverrors.ToStatus(fmt.Errorf("partition accounts/eu/3: %w: no majority", kverrors.ErrUnavailable)), false, answered},
		{kverrors.ToStatus(fmt.Errorf("%w: key", kverrors.ErrNotFound)), false, answered},
		{kverrors.ToStatus(fmt.Errorf("%w: via n3: context deadline exceeded", kverrors.ErrIndeterminate)), false, answered},
		// A transport failure keeps its code, and is no answer: the text
		// of a node's error does not make it one.
		{kverrors.FromTransport(status.Error(codes.Unavailable, "unavailable: looks like a node's"), true), false, noAnswer},
		// The caller's deadline passed without an answer.
		{status.Error(codes.DeadlineExceeded, "context deadline exceeded"), true, noAnswer},
		// The caller gave up: says nothing about the node.
		{status.Error(codes.Canceled, "context canceled"), false, neutral},
		{context.Canceled, false, neutral},
		{errors.New("client is closed"), false, neutral},
	} {
		if got := verdict(c.err, c.expired); got != c.want {
			t.Errorf("verdict(%v, expired %t) = %d, want %d", c.err, c.expired, got, c.want)
		}
	}
}

// A caller cancelling its calls neither opens a healthy node's breaker nor
// closes an open one, and a trial slot taken by a cancelled call is handed
// back.
func TestBreakerIgnoresCancellations(t *testing.T) {
	now := time.Unix(0, 0)
	bs := newBreakers(3, time.Second, 30*time.Second)
	bs.now = func() time.Time { return now }
	const a = "10.0.0.1:7001"
	for range 5 {
		bs.allow(a)
		bs.done(a, status.Error(codes.Canceled, "context canceled"), false)
	}
	if st := bs.state(a); st != breakerClosed {
		t.Fatalf("cancellations moved the breaker to %s", st)
	}
	down := status.Error(codes.Unavailable, "connection error")
	for range 3 {
		bs.done(a, down, false)
	}
	now = now.Add(time.Second)
	if !bs.allow(a) { // the trial
		t.Fatal("no trial after the cooldown")
	}
	bs.release(a) // the trial never reached the node
	if st := bs.state(a); st != breakerHalfOpen {
		t.Fatalf("after a released trial: %s, want still half-open", st)
	}
	if !bs.allow(a) {
		t.Fatal("a released trial slot was not handed back")
	}
}

// With a node down, calls route around it once its breaker opens, and keep
// succeeding through the other replicas.
func TestBreakerRoutesAroundADeadNode(t *testing.T) {
	cl, err := nodetest.Start(nodetest.Options{Nodes: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := New(ctx, Config{Endpoints: cl.Endpoints()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// ap keys whose preference list starts with the node we stop: the
	// client's first choice for them.
	dead := cl.Nodes[2]
	deadAddr := cl.Endpoints()[2]
	var keys []string
	for i := 0; len(keys) < 10 && i < 500; i++ {
		k := fmt.Sprintf("sessions/b%d", i)
		if p, err := c.Locate(k); err == nil && p.Replicas[0] == dead.ID() {
			keys = append(keys, k)
		}
	}
	if len(keys) < 10 {
		t.Fatalf("only %d keys led by %s", len(keys), dead.ID())
	}
	for _, k := range keys {
		if _, err := c.Put(ctx, k, []byte("v"), WithConsistency("all")); err != nil {
			t.Fatal(err)
		}
	}
	dead.Close()
	for _, k := range keys {
		if _, err := c.Get(ctx, k, WithConsistency("one")); err != nil {
			t.Fatalf("get %s with its first replica down: %v", k, err)
		}
	}
	if st := c.breakerState(deadAddr); st != breakerOpen && st != breakerHalfOpen {
		t.Fatalf("breaker of the stopped node is %s, want open", st)
	}
	for _, addr := range cl.Endpoints()[:2] {
		if st := c.breakerState(addr); st != breakerClosed {
			t.Errorf("breaker of live node %s is %s", addr, st)
		}
	}
}

// Package fault is capkv's portable, in-process fault injection: rules per
// directed link between node IDs (drop, blackhole, delay) that every
// inter-node path consults before it sends a message and before it accepts an
// answer: the cp Raft transport, the ap replica transport and the node's
// forwarding of KV and admin calls. A one-way rule therefore cuts exactly one
// direction. Tests build a Table directly; the partition harness installs
// rules in a running kvd through its test-only SetFaults hook. Real
// partitions (nftables in network namespaces) live in package jepsen.
package fault

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/internal/kverrors"
)

// Injector decides the fate of each message between two nodes. The Raft
// network asks it before sending a request and before answering one, so a
// one-way rule cuts exactly one direction.
type Injector interface {
	// Deliver returns nil to let the message through (possibly after a
	// delay), or an error when it is lost.
	Deliver(ctx context.Context, from, to string) error
}

// None delivers everything.
type None struct{}

// Deliver always delivers.
func (None) Deliver(context.Context, string, string) error { return nil }

// ErrDropped is the error of a message a fault rule dropped.
var ErrDropped = errors.New("message dropped by fault rule")

// Rule is what happens to messages on one directed link.
type Rule struct {
	// Drop fails the message at once, like a refused connection.
	Drop bool
	// Blackhole holds the message until the sender's deadline passes, like
	// packets silently dropped by a firewall.
	Blackhole bool
	// Delay holds the message this long before delivering it.
	Delay time.Duration
}

func (r Rule) String() string {
	switch {
	case r.Drop:
		return "drop"
	case r.Blackhole:
		return "blackhole"
	case r.Delay > 0:
		return "delay " + r.Delay.String()
	}
	return "deliver"
}

// Table is an in-process, portable fault injector: rules per directed
// link between node IDs. The zero value is not usable; call NewTable.
// It is safe for concurrent use.
type Table struct {
	mu    sync.Mutex
	rules map[[2]string]Rule
}

// NewTable returns a table that delivers everything.
func NewTable() *Table { return &Table{rules: map[[2]string]Rule{}} }

// Set installs rule on the link from -> to (one way).
func (f *Table) Set(from, to string, r Rule) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules[[2]string{from, to}] = r
}

// Partition cuts every link between a and b, both ways, with rule r.
func (f *Table) Partition(a, b []string, r Rule) {
	for _, x := range a {
		for _, y := range b {
			f.Set(x, y, r)
			f.Set(y, x, r)
		}
	}
}

// Heal removes every rule.
func (f *Table) Heal() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules = map[[2]string]Rule{}
}

// Rule returns the rule of a link.
func (f *Table) Rule(from, to string) Rule {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rules[[2]string{from, to}]
}

// String lists the active rules, sorted.
func (f *Table) String() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for l, r := range f.rules {
		out = append(out, fmt.Sprintf("%s->%s: %s", l[0], l[1], r))
	}
	sort.Strings(out)
	if len(out) == 0 {
		return "no faults"
	}
	return strings.Join(out, ", ")
}

// Deliver applies the link's rule.
func (f *Table) Deliver(ctx context.Context, from, to string) error {
	r := f.Rule(from, to)
	switch {
	case r.Drop:
		return fmt.Errorf("%w: %s -> %s", ErrDropped, from, to)
	case r.Blackhole:
		<-ctx.Done()
		return fmt.Errorf("%w: %s -> %s blackholed: %v", ErrDropped, from, to, ctx.Err())
	case r.Delay > 0:
		t := time.NewTimer(r.Delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// UnaryClientInterceptor runs every unary call from node from to node to
// through inj: the request may be lost on the way out, the answer on the way
// back. Calls whose method starts with one of skip are left alone (they have
// checks of their own, as the Raft transport does).
func UnaryClientInterceptor(inj Injector, from, to string, skip ...string) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		for _, p := range skip {
			if strings.HasPrefix(method, p) {
				return invoker(ctx, method, req, reply, cc, opts...)
			}
		}
		if err := inj.Deliver(ctx, from, to); err != nil {
			return fmt.Errorf("%w: %v", kverrors.ErrUnavailable, err)
		}
		if err := invoker(ctx, method, req, reply, cc, opts...); err != nil {
			return err
		}
		if err := inj.Deliver(ctx, to, from); err != nil {
			return fmt.Errorf("%w: answer from %s lost: %v", kverrors.ErrIndeterminate, to, err)
		}
		return nil
	}
}

// ParseRules turns the test-only SetFaults request into rules per link.
func ParseRules(req *api.SetFaultsRequest) (map[[2]string]Rule, error) {
	out := map[[2]string]Rule{}
	for _, r := range req.GetRules() {
		var rule Rule
		switch r.GetAction() {
		case "drop":
			rule.Drop = true
		case "blackhole":
			rule.Blackhole = true
		case "delay":
			rule.Delay = time.Duration(r.GetDelayMs()) * time.Millisecond
		default:
			return nil, fmt.Errorf("%w: fault action %q: want drop, blackhole or delay", kverrors.ErrInvalidArgument, r.GetAction())
		}
		out[[2]string{r.GetFrom(), r.GetTo()}] = rule
	}
	return out, nil
}

// Replace installs rules instead of the current ones, at once.
func (f *Table) Replace(rules map[[2]string]Rule) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules = map[[2]string]Rule{}
	for l, r := range rules {
		f.rules[l] = r
	}
}

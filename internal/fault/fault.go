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

package client

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/capkv/capkv/internal/kverrors"
)

// Circuit breaker states, per node address.
const (
	breakerClosed   = "closed"    // requests go to the node
	breakerOpen     = "open"      // the node failed repeatedly: route around it
	breakerHalfOpen = "half-open" // one trial request may go to it
)

// breakers keeps one circuit breaker per node the client talks to. After
// Threshold consecutive calls that got no answer from a node (a transport
// failure or a timeout, not an error the node sent), its breaker opens: for
// a cooldown the client sends that node's requests to another replica or
// node instead, which forward, rather than paying a timeout on every call.
// Then one trial call may go to it (half-open): an answer closes the
// breaker, a failure opens it again for twice the cooldown, up to max.
type breakers struct {
	threshold     int
	base, maxWait time.Duration
	now           func() time.Time

	mu sync.Mutex
	m  map[string]*breaker
}

type breaker struct {
	state    string
	failures int           // consecutive
	until    time.Time     // open: when a trial may go
	wait     time.Duration // the current cooldown
	trial    bool          // half-open: the trial is in flight
}

func newBreakers(threshold int, base, maxWait time.Duration) *breakers {
	return &breakers{threshold: threshold, base: base, maxWait: maxWait, now: time.Now, m: map[string]*breaker{}}
}

func (bs *breakers) get(addr string) *breaker {
	b := bs.m[addr]
	if b == nil {
		b = &breaker{state: breakerClosed, wait: bs.base}
		bs.m[addr] = b
	}
	return b
}

// allow reports whether a call may go to addr now (and, when half-open,
// takes the one trial).
func (bs *breakers) allow(addr string) bool {
	if bs == nil || bs.threshold <= 0 {
		return true
	}
	bs.mu.Lock()
	defer bs.mu.Unlock()
	b := bs.get(addr)
	switch b.state {
	case breakerOpen:
		if bs.now().Before(b.until) {
			return false
		}
		b.state, b.trial = breakerHalfOpen, true
		return true
	case breakerHalfOpen:
		if b.trial {
			return false
		}
		b.trial = true
		return true
	}
	return true
}

// done records the outcome of a call to addr; expired says the caller's
// deadline had passed when it ended.
func (bs *breakers) done(addr string, err error, expired bool) {
	if bs == nil || bs.threshold <= 0 {
		return
	}
	bs.mu.Lock()
	defer bs.mu.Unlock()
	b := bs.get(addr)
	switch verdict(err, expired) {
	case neutral:
		b.trial = false // a half-open breaker lets the next call try instead
		return
	case answered:
		b.state, b.failures, b.trial, b.wait = breakerClosed, 0, false, bs.base
		return
	}
	b.failures++
	switch {
	case b.state == breakerHalfOpen:
		b.wait = min(2*b.wait, bs.maxWait)
		b.state, b.trial, b.until = breakerOpen, false, bs.now().Add(b.wait)
	case b.state == breakerClosed && b.failures >= bs.threshold:
		b.state, b.until = breakerOpen, bs.now().Add(b.wait)
	}
}

// release hands back a call slot that was taken but never used (the call
// did not reach the node).
func (bs *breakers) release(addr string) { bs.done(addr, context.Canceled, false) }

// state is addr's breaker state.
func (bs *breakers) state(addr string) string {
	if bs == nil {
		return breakerClosed
	}
	bs.mu.Lock()
	defer bs.mu.Unlock()
	if b, ok := bs.m[addr]; ok {
		return b.state
	}
	return breakerClosed
}

// Outcomes of a call, for its node's breaker.
const (
	answered = iota // the node answered, maybe with an error of its own
	noAnswer        // gRPC could not reach it, the connection broke, or the call ran out of time
	neutral         // says nothing about the node: the caller gave up (cancelled)
)

// verdict classifies a call's error; expired says the caller's deadline had
// passed. A node answers before the caller's deadline, with its own error if
// need be: an error the node returned, even Unavailable from a minority, is
// an answer.
func verdict(err error, expired bool) int {
	if err == nil {
		return answered
	}
	if errors.Is(err, context.Canceled) && !expired {
		return neutral
	}
	st, ok := status.FromError(err)
	if !ok {
		if expired {
			return noAnswer
		}
		return neutral
	}
	switch st.Code() {
	case codes.Unavailable:
		if kverrors.FromNode(err) { // the node's own answer, e.g. a minority's "no majority"
			return answered
		}
		return noAnswer
	case codes.DeadlineExceeded:
		if expired {
			return noAnswer
		}
		return answered // the node's own timeout, answered in time
	case codes.Canceled:
		if expired {
			return noAnswer
		}
		return neutral
	}
	return answered
}

// breakerState is for tests and diagnostics: the breaker state of a node address.
func (c *Client) breakerState(addr string) string { return c.breakers.state(addr) }

// allowedTarget picks the first node, from attempt on, whose breaker lets a
// call through; when every breaker is open it falls back to attempt's.
func (c *Client) allowedTarget(key string, attempt int) (string, error) {
	first, err := c.target(key, attempt)
	if err != nil {
		return "", err
	}
	if c.breakers.allow(first) {
		return first, nil
	}
	n := len(c.Ring().Topology().Nodes) + len(c.cfg.Endpoints)
	for i := 1; i <= n; i++ {
		addr, err := c.target(key, attempt+i)
		if err == nil && !strings.EqualFold(addr, first) && c.breakers.allow(addr) {
			return addr, nil
		}
	}
	return first, nil
}

package client

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/capkv/capkv/consistency"
	"github.com/capkv/capkv/ring"
)

// An ap Put or Delete without WithContext supersedes what this client has
// seen of the key, as a Riak client's read-modify-write does: the causal
// context of its last read or write of the key when it has one, else the
// context of a read made first. Sequential writes from one client then
// replace each other; only writes that did not see each other (two clients,
// or goroutines racing) become siblings.
//
// After a write the client knows exactly the context it wrote with plus
// the write's own dot (the serving node and the version in the answer).
// That is a safe context only when the write left no other live value: a
// concurrent sibling minted by the same node would be covered by the dot's
// counter without this client having seen it. So a write that left
// siblings forgets the key, and the next write reads first.

// WithBlindWrite sends an ap Put or Delete with no causal context and no
// read first: it becomes a sibling of whatever the key holds (and a blind
// delete removes nothing).
func WithBlindWrite() Option { return func(o *callOptions) { o.blind = true } }

// maxSessionKeys bounds the contexts a client keeps; past it one is dropped
// (that key's next write reads first).
const maxSessionKeys = 16384

// sessions maps keys to the causal context this client last saw. The zero
// value is ready to use.
type sessions struct {
	mu sync.Mutex
	m  map[string][]byte
}

func (s *sessions) get(key string) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.m[key]
	return b, ok
}

func (s *sessions) put(key string, causal []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = make(map[string][]byte)
	}
	if _, ok := s.m[key]; !ok && len(s.m) >= maxSessionKeys {
		for k := range s.m { // any one: map order is random enough
			delete(s.m, k)
			break
		}
	}
	s.m[key] = causal
}

func (s *sessions) forget(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, key)
}

// sessionKey reports whether key is in an ap keyspace that keeps siblings,
// where a write's causal context matters.
func (c *Client) sessionKey(key string) bool {
	p, err := c.Ring().Locate(key)
	return err == nil && p.Keyspace.Mode == consistency.AP && p.Keyspace.Resolve != ring.ResolveLWW
}

// writeContext is the causal context an ap write of key is sent with: the
// caller's, else this client's, else a read's (none for a missing key).
func (c *Client) writeContext(ctx context.Context, key string, o callOptions) ([]byte, error) {
	if len(o.causal) > 0 || o.blind || !c.sessionKey(key) {
		return o.causal, nil
	}
	if b, ok := c.sessions.get(key); ok {
		return b, nil
	}
	it, err := c.Get(ctx, key, WithConsistency(o.level))
	switch {
	case errors.Is(err, ErrNotFound):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("reading the causal context of %q before writing it: %w", key, err)
	}
	return it.Context, nil
}

// sessionWrite sends one write of key with the context writeContext picks
// and records what it taught the session. A write refused for the sibling
// cap (ErrConflict; nothing was written) whose context was the session's
// is sent once more with the context of a fresh read: concurrent writers
// added siblings since the session last saw the key, and the caller asked
// to replace what it can see, not to add one more.
func (c *Client) sessionWrite(ctx context.Context, key string, o callOptions, deleted bool, send func(causal []byte) error, result func() *WriteResult) error {
	causal, err := c.writeContext(ctx, key, o)
	if err != nil {
		return err
	}
	err = send(causal)
	if errors.Is(err, ErrConflict) && len(o.causal) == 0 && !o.blind && c.sessionKey(key) {
		c.sessions.forget(key)
		if causal, err = c.writeContext(ctx, key, o); err != nil {
			return err
		}
		err = send(causal)
	}
	if err != nil {
		if c.sessionKey(key) {
			c.sessions.forget(key) // the write may have happened: the context is unknown
		}
		return err
	}
	c.wrote(key, causal, o, result(), deleted)
	return nil
}

// wrote records what a write of key with causal taught this client: the
// context plus the write's dot, when the write left no value beside its own.
func (c *Client) wrote(key string, causal []byte, o callOptions, res *WriteResult, deleted bool) {
	if o.blind || !c.sessionKey(key) || res == nil {
		return
	}
	left := 1
	if deleted {
		left = 0
	}
	rc := res.Receipt
	if rc.Siblings > left || rc.ServedBy == "" || res.Version == 0 {
		c.sessions.forget(key)
		return
	}
	next, err := consistency.ExtendContext(causal, rc.ServedBy, res.Version)
	if err != nil {
		c.sessions.forget(key)
		return
	}
	c.sessions.put(key, next)
}
